"""Study progress: one line per trial (experiment, iteration, losses, status), at a calm rate.

A Ray Tune Callback that hands its lines to `emit`. `emit` must be picklable (a module-level
function), because Ray stores callbacks with the study and brings them back on resume.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Callable

from ray import tune


def to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _fmt(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) and math.isfinite(value) else "  -  "


def trial_line(label: str, status: str, result: dict[str, Any], max_iters: int | None) -> str:
    it = result.get("iteration", 0)
    total = f"/{max_iters}" if max_iters else ""
    return (
        f"  {label:<22} {status:<10} iter {it:>5}{total:<6} "
        f"train {_fmt(result.get('train_loss'), '.3f')}  val {_fmt(result.get('val_loss'), '.3f')}  "
        f"bpb {_fmt(result.get('val_bpb'), '.3f')}  {_fmt(result.get('tokens_per_s'), ',.0f')} tok/s"
    )


class StudyProgress(tune.Callback):
    def __init__(self, emit: Callable[[str], None] = to_stderr, every_s: float = 15.0,
                 max_iters: dict[str, int] | None = None):
        self.emit = emit
        self.every_s = every_s
        self.max_iters = max_iters or {}
        self._latest: dict[str, tuple[str, dict[str, Any]]] = {}
        self._last_emit = 0.0
        self._started = time.time()

    def __setstate__(self, state: dict[str, Any]) -> None:  # a resumed study starts its own clock
        self.__dict__.update(state)
        self._started, self._last_emit, self._latest = time.time(), 0.0, {}

    def _update(self, trial, status: str, result: dict[str, Any] | None = None) -> None:
        name = str(trial)
        previous = self._latest.get(name, ("", {}))[1]
        self._latest[name] = (status, result if result is not None else previous)

    def _line(self, name: str) -> str:
        status, result = self._latest[name]
        experiment = result.get("experiment", name.split("_seed")[0])
        return trial_line(name, status, result, self.max_iters.get(experiment) or result.get("max_iters"))

    def _flush(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._last_emit < self.every_s:
            return
        self._last_emit = now
        self.emit(f"[{now - self._started:6.0f}s] {len(self._latest)} trial(s)")
        for name in sorted(self._latest):
            self.emit(self._line(name))

    def on_trial_start(self, iteration, trials, trial, **info):
        self._update(trial, "STARTED")
        self.emit(self._line(str(trial)))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        # Each trial's first report is shown at once (it can be minutes after the start).
        first = not self._latest.get(str(trial), ("", {}))[1]
        self._update(trial, "RUNNING", result)
        self._flush(force=first)

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        status = str(result.get("status", "finished")).upper()
        if status == "RUNNING":
            status = "STOPPED"  # ended before max_iters: a scheduler stopped it early
        self._update(trial, status, result)
        self.emit(self._line(str(trial)))

    def on_trial_error(self, iteration, trials, trial, **info):
        self._update(trial, "ERRORED")
        self.emit(self._line(str(trial)))

    def on_experiment_end(self, trials, **info):
        self._flush(force=True)
