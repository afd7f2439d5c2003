"""What a checkpoint directory holds: the full training state (torch), and its loss history as
JSON, which a driver can rank checkpoints by without importing torch or loading the state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


def write_owner(directory: Path, trial: str, config: dict[str, Any]) -> None:
    (Path(directory) / OWNER_FILE).write_text(json.dumps({"trial": trial, "config": config}), encoding="utf-8")


def read_owner(directory: Path) -> dict[str, Any] | None:
    """{"trial", "config"} of the trial that wrote the checkpoint; None for one written before
    slm-tune recorded it."""
    try:
        owner = json.loads((Path(directory) / OWNER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None
