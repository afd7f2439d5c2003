"""The project's one way to write a file: to a temporary name beside it, then an atomic rename,
so a reader (or a crash) never sees half a file. Temporary names carry the process and thread,
so concurrent writers (a study's export thread, a second process) never share one. And its one
way to read a JSON object that may be missing or damaged (study.json, results JSON)."""

from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path
from typing import Any, Callable

STUDY_FILE = "study.json"  # a study run's own record beside Ray's files (slm_tune/study_file.py)


def temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")


def atomic_write(path: str | Path, writer: Callable[[Path], Any]) -> Path:
    """Call `writer(tmp)` to write a temporary file, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        writer(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_json(path: str | Path, data: Any) -> Path:
    return write_text(path, json.dumps(clean_json(data), indent=2))


def read_json(path: str | Path) -> dict[str, Any]:
    """A JSON object from a file; {} when it is missing, damaged or not an object."""
    try:
        return json_object(Path(path).read_bytes())
    except OSError:
        return {}


def json_object(raw: bytes | str | None) -> dict[str, Any]:
    """A JSON object from a file's contents; {} when there are none, or they are damaged or not an object."""
    try:
        doc = json.loads(raw) if raw is not None else None
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def clean_json(x: Any) -> Any:
    """JSON without NaN: non-finite numbers become null, numpy scalars plain numbers."""
    import numpy as np

    if isinstance(x, dict):
        return {str(k): clean_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean_json(v) for v in x]
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if type(x).__name__ in ("NAType", "NaTType"):
        return None
    return x
