"""The one error type users see.

Everything a user can get wrong (a name, a value, a path, a flag) raises ``UserError`` with a
one-line message that says what is wrong and how to fix it. The CLI prints it and exits 2; the
library never prints.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Iterable


class UserError(ValueError):
    """Bad input: the message is one line, and says how to fix it."""


def closest(name: str, choices: Iterable[str], n: int = 3) -> str:
    """' (did you mean: a, b?)' for the closest choices, or '' when none are close."""
    matches = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
    return f" (did you mean: {', '.join(matches)}?)" if matches else ""


def first_error_line(trial_dir: Path) -> str:
    """The exception's own message: the last line of the traceback Ray stored in error.txt."""
    try:
        text = (trial_dir / "error.txt").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "errored (no error text was stored)"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for line in reversed(lines):
        if not line.startswith(("File ", "^", "~", "Traceback", "During handling", "The above")):
            return line[:300]
    return "errored (no error text was stored)"
