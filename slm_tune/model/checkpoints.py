"""The one loader of model and checkpoint files (torch), and the iteration a checkpoint holds.

Model and checkpoint files are data, never code. slm-tune has only ever written tensors and plain
containers (dicts, lists, numbers, strings) into them, which torch's weights-only unpickler reads
without allow-listing a single global; so every file is loaded that way, and a file that names
any other Python object (a pickled `os.system`, say) is refused before anything in it runs.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from slm_tune.checkpoint_files import CHECKPOINT_FILE, UnsafeFileError, read_history


def load_state(path: Path) -> dict[str, Any]:
    """A state.pt or best_model file as a dict of tensors and plain values. Raises UnsafeFileError
    for a file that would need other Python objects (nothing in it has run), and OSError or
    RuntimeError-like errors, as torch raises them, for a missing or damaged one."""
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
