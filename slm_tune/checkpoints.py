"""What a checkpoint directory holds: the full training state (torch), and its loss history as
JSON, which a driver can rank checkpoints by without importing torch or loading the state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CHECKPOINT_FILE = "state.pt"
HISTORY_FILE = "history.json"


def read_history(directory: Path) -> list[dict[str, Any]] | None:
    """The checkpoint's loss history (one entry per report), or None if it has none readable."""
    try:
        history = json.loads((Path(directory) / HISTORY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return history if isinstance(history, list) else None
