"""The seed's interactive runner: a menu over the same commands the CLI has.

Typed choices are validated; an empty line repeats the menu; `q` or end of input exits cleanly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

MENU = """
slm-tune
  1) list experiments and studies
  2) show an experiment's details
  3) run an experiment
  4) run a study
  5) compare stored results
  q) quit"""


@dataclass
class Menu:
    output_dir: Path
    read: Callable[[str], str]
    write: Callable[[str], None]
    dispatch: Callable[[Sequence[str]], int]  # studies.main

    def _ask(self, prompt: str) -> str | None:
        try:
            return self.read(prompt).strip()
        except EOFError:
            return None

    def _choose(self, what: str, options: Sequence[str]) -> str | None:
        """A name from `options`, asked until valid; None on q or end of input."""
        while True:
            answer = self._ask(f"{what} ({', '.join(options)}; q to go back): ")
            if answer is None or answer == "q":
                return None
            if answer in options:
                return answer
            self.write(f"'{answer}' is not one of: {', '.join(options)}")

    def loop(self) -> int:
        from search_spaces import STUDIES
        from slm_tune.config import EXPERIMENT_CONFIGS

        out = ["--output-dir", str(self.output_dir)]
        while True:
            self.write(MENU)
            choice = self._ask("choice: ")
            if choice is None or choice.lower() in ("q", "quit", "exit"):
                self.write("bye")
                return 0
            if choice == "":
                continue
            if choice == "1":
                self.dispatch(["list"])
            elif choice == "2":
                name = self._choose("experiment", list(EXPERIMENT_CONFIGS))
                if name:
                    self.dispatch(["details", name])
            elif choice == "3":
                name = self._choose("experiment", list(EXPERIMENT_CONFIGS))
                if name:
                    self.dispatch(["run", name, *out])
            elif choice == "4":
                name = self._choose("study", list(STUDIES))
                if name:
                    self.dispatch([name, *out])
            elif choice == "5":
                self.dispatch(["compare", *out])
            else:
                self.write(f"'{choice}' is not a choice: type 1 to 5, or q to quit")
