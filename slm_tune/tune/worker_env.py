"""The environment of the processes that run trials (Ray workers, benchmark rows).

glibc hands every freed block larger than 32 MB back to the kernel and takes it again, page fault
by page fault, on the next allocation. A trial allocates blocks of that size many times per
iteration (the fused loss's ~100 MB logits chunks, activations, gradients), so a baseline
iteration spent a tenth of its time in page faults. Raising glibc's mmap and trim thresholds keeps
those blocks in the heap for reuse: about 13% more tokens/s for baseline for 85 MB more resident
memory (bench/README.md). The setting must be in the environment when the process starts, hence
an environment for workers rather than a call inside the trial.

A local Ray inherits it from the driver's environment while it starts (`scoped_environ`), so its
prestarted workers have it; a job runtime_env would make Ray start a fresh worker for the first
trial instead (0.7 s) and cost ray.init another second. A cluster Ray gets it as runtime_env.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator, Mapping

MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=268435456:glibc.malloc.trim_threshold=4294967296"


def trial_env(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Environment variables to start trial processes with; a user's own GLIBC_TUNABLES wins,
    and other systems (their allocators keep big blocks already) get none."""
    if not sys.platform.startswith("linux") or "GLIBC_TUNABLES" in environ:
        return {}
    return {"GLIBC_TUNABLES": MALLOC_TUNABLES}


@contextlib.contextmanager
def scoped_environ(env: Mapping[str, str]) -> Iterator[None]:
    """`env` in this process's environment for the duration (starting a local Ray, whose
    processes inherit it; a Tune run, which reads its settings there); restored afterwards."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
