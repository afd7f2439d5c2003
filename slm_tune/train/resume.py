"""Which checkpoint a trial continues from (trial side: it loads states to check them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from slm_tune.checkpoint_files import CHECKPOINT_FILE, DAMAGED_FILE_ERRORS, UnsafeFileError, read_history, read_owner
from slm_tune.config import ExperimentConfig
from slm_tune.model.checkpoints import checkpoint_iteration, load_state


def _continues(candidate: Path, known: Path) -> bool:
    """True if `candidate`'s loss history extends `known`'s: the same run, further on."""
    mine, theirs = read_history(candidate), read_history(known)
    if mine is None or theirs is None:
        return True  # checkpoints from before history.json: as before, newest wins
    return mine[:len(theirs)] == theirs


def newest_checkpoint(trial_dir: Path | None, known: Path | None, config: ExperimentConfig | None = None,
                      fetch: Callable[[Path], Any] | None = None) -> Path | None:
    """The checkpoint to start from: Ray's, or a newer one of the same run in the trial's directory.

    After the driver is killed, Ray restores from the checkpoint in its last experiment-state
    snapshot, which can lag several reports behind what is stored (see ray-tune-notes); a newer
    one of the same run (same trial and config, its history extending Ray's) is taken instead,
    if its state loads: a copy cut short is passed over. `fetch(d)` first brings a candidate's
    state where it is kept elsewhere (object storage). A checkpoint of another trial is PBT
    handing over its weights: it is used as given.
    """
    name = config.name if config is not None else None
    if known is not None:
        owner = read_owner(known)
        if owner and name and owner.get("trial") != name:
            return known  # an exploit: continue from the donor's weights, whatever is on our disk
    known_it = -1
    if known is not None:
        try:
            known_it = checkpoint_iteration(known)
        except UnsafeFileError:
            raise
        except DAMAGED_FILE_ERRORS:  # Ray's copy is unreadable: start from our newest, or afresh
            known = None
    newer = []
    if trial_dir is not None and trial_dir.is_dir():
        for d in trial_dir.glob("checkpoint_*"):
            owner = read_owner(d)
            if owner and config is not None and owner.get("config") != config.to_dict():
                continue  # another run's weights (another config, or from before a PBT exploit)
            if known is not None and not _continues(d, known):
                continue
            try:
                it = checkpoint_iteration(d)
            except UnsafeFileError:
                raise
            except DAMAGED_FILE_ERRORS:  # a copy cut short: passed over
                continue
            if it > known_it:
                newer.append((it, d))
    for _, d in sorted(newer, reverse=True):
        try:
            if fetch is not None:
                fetch(d)
            load_state(d / CHECKPOINT_FILE)
        except UnsafeFileError:
            raise  # refused, not passed over: nothing in it runs, and the user hears of it
        except DAMAGED_FILE_ERRORS:  # a copy cut short: the next newest is tried
            continue
        return d
    return known


def own_iterations(trial_dir: Path | None, name: str) -> int | None:
    """The steps trial `name` trained itself, by its newest checkpoint in `trial_dir` (the count
    its owner file records): what it had spent when PBT handed it another trial's weights. A
    checkpoint from before owner files recorded the count counts its history's last iteration
    (as if the trial had taken no weights before it)."""
    counts = []
    for d in (trial_dir.glob("checkpoint_*") if trial_dir and trial_dir.is_dir() else []):
        owner = read_owner(d)
        if not owner or owner.get("trial") != name:
            continue
        if "trained_iterations" in owner:
            counts.append(int(owner["trained_iterations"]))
        elif history := read_history(d):
            counts.append(int(history[-1].get("iteration", 0)))
    return max(counts, default=None)
