"""Studies stored by earlier versions of slm-tune resume here.

Ray pickles a study's callbacks and schedulers with it (tuner.pkl), by the name of the module
that defined them. Modules that have moved since are found under their old names while such a
study is restored; nothing else is changed.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from typing import Iterator

MOVED = {  # old module -> where it lives now
    "slm_tune.progress": "slm_tune.tune.callbacks.progress",
    "slm_tune.tune_loggers": "slm_tune.tune.callbacks.loggers",
    "slm_tune.tracking": "slm_tune.tune.callbacks.mlflow",
    "slm_tune.search": "slm_tune.space",
    "slm_tune.study": "slm_tune.tune.run",
    "slm_tune.trainable": "slm_tune.tune.trainable",
}


@contextlib.contextmanager
def old_module_names() -> Iterator[None]:
    """The moved modules under their old names too, for the duration (a restore's unpickling)."""
    added = [old for old in MOVED if old not in sys.modules]
    for old in added:
        sys.modules[old] = importlib.import_module(MOVED[old])
    try:
        yield
    finally:
        for old in added:
            sys.modules.pop(old, None)
