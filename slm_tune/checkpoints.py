"""What a checkpoint directory holds: the full training state (torch), and its loss history as
JSON, which a driver can rank checkpoints by without importing torch or loading the state.

Model and checkpoint files are data, never code. slm-tune has only ever written tensors and plain
containers (dicts, lists, numbers, strings) into them, which torch's weights-only unpickler reads
without allow-listing a single global; so every file is loaded that way, and a file that names
any other Python object (a pickled `os.system`, say) is refused before anything in it runs.
"""

from __future__ import annotations

import json
import re
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


class UnsafeFileError(UserError):
    """A model or checkpoint file that holds more than tensors and plain values: refused unread."""


def load_state(path: Path) -> dict[str, Any]:
    """A state.pt or best_model file as a dict of tensors and plain values. Raises UnsafeFileError
    for a file that would need other Python objects (nothing in it has run), and OSError or
    RuntimeError-like errors, as torch raises them, for a missing or damaged one."""
    import pickle

    import torch

    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))  # torch's wording: "... unsupported GLOBAL posix.system ..."
        what = f" (it names {found.group(1)})" if found else ""
        raise UnsafeFileError(
            f"{path} was refused: it holds Python objects other than tensors and plain values{what}, so loading "
            "it could run code; use only model and checkpoint files slm-tune wrote") from None
    if not isinstance(saved, dict):
        raise ValueError(f"{path} holds a {type(saved).__name__}, not a dict")
    return saved


def checkpoint_iteration(directory: Path) -> int:
    """The iteration a checkpoint was taken at: from its history.json, else from its state."""
    history = read_history(directory)
    if history:
        return int(history[-1]["iteration"])
    return int(load_state(Path(directory) / CHECKPOINT_FILE)["state"]["iteration"])
