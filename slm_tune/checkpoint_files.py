"""What a checkpoint directory holds, readable without torch: the names of its files, its loss
history and its owner as JSON, so that the driver and analysis can rank and match checkpoints
without loading a state. The state itself (torch) is read by slm_tune/model/checkpoints.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from slm_tune.errors import UserError

CHECKPOINT_FILE = "state.pt"
HISTORY_FILE = "history.json"
OWNER_FILE = "trial.json"  # which trial wrote it, with which config: PBT hands checkpoints between trials


def read_history(directory: Path) -> list[dict[str, Any]] | None:
    """The checkpoint's loss history (one entry per report), or None if it has none readable."""
    try:
        history = json.loads((Path(directory) / HISTORY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return history if isinstance(history, list) else None


def write_owner(directory: Path, trial: str, config: dict[str, Any], trained_iterations: int | None = None) -> None:
    owner = {"trial": trial, "config": config}
    if trained_iterations is not None:
        owner["trained_iterations"] = trained_iterations
    (Path(directory) / OWNER_FILE).write_text(json.dumps(owner), encoding="utf-8")


def read_owner(directory: Path) -> dict[str, Any] | None:
    """{"trial", "config", "trained_iterations"} of the trial that wrote the checkpoint (the steps
    that trial had trained itself: after a PBT exploit, not its donor's); None for one written
    before slm-tune recorded it (and no trained_iterations before it recorded that)."""
    try:
        owner = json.loads((Path(directory) / OWNER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


# What loading a damaged checkpoint raises: a missing or unreadable file (OSError), a copy cut short
# (torch's RuntimeError, EOFError), or a state of another shape (KeyError, TypeError, ValueError).
DAMAGED_FILE_ERRORS = (OSError, RuntimeError, EOFError, KeyError, TypeError, ValueError)


class UnsafeFileError(UserError):
    """A model or checkpoint file that holds more than tensors and plain values: refused unread."""
