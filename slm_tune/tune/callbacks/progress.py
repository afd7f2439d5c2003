"""Study progress: one line per trial (iterations done of its total, losses, speed, its ETA), a
header with the study's ETA, at a calm rate.

A Ray Tune Callback that hands its lines to `emit`. `emit` must be picklable (a module-level
function), because Ray stores callbacks with the study and brings them back on resume. A trial's
total and speed come from its own reports, and the study's plan (how many trials, the training
FLOPs of those not started) from the run's stored study.json, so a resumed study counts what it
really runs, whatever the flags said.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

from ray import tune

from slm_tune.errors import first_error_line
from slm_tune.study_file import trial_study_file


def to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _fmt(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) and math.isfinite(value) else "  -  "


def duration(seconds: float | None) -> str:
    """90 -> '1m30s', 4000 -> '1h07m'."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _rate(result: dict[str, Any]) -> tuple[float, float] | None:
    """(tokens per iteration, tokens per second) from a report, when it has them."""
    it, seen, speed = result.get("iteration"), result.get("tokens_seen"), result.get("tokens_per_s")
    if not it or not seen or not speed or not math.isfinite(speed) or speed <= 0:
        return None
    return seen / it, speed


def trial_eta(result: dict[str, Any], max_iters: int | None) -> float | None:
    rate = _rate(result)
    if rate is None or not max_iters:
        return None
    return max(0, max_iters - result["iteration"]) * rate[0] / rate[1]


def trial_line(label: str, status: str, result: dict[str, Any], max_iters: int | None,
               running_s: float | None = None) -> str:
    it = result.get("iteration", 0)
    total = f"/{max_iters}" if max_iters else ""
    line = (
        f"  {label:<22} {status:<10} iter {it:>5}{total:<6} "
        f"train {_fmt(result.get('train_loss'), '.3f')}  val {_fmt(result.get('val_loss'), '.3f')}  "
        f"bpb {_fmt(result.get('val_bpb'), '.3f')}  {_fmt(result.get('tokens_per_s'), ',.0f')} tok/s"
    )
    if status == "RUNNING" and result:
        line += f"  ETA {duration(trial_eta(result, max_iters))}"
    elif status in ("STARTED", "RUNNING") and running_s is not None:
        line += f"  running {duration(running_s)}, " + ("restored, no report since" if result else "no report yet")
    return line


class StudyProgress(tune.Callback):
    def __init__(self, emit: Callable[[str], None] = to_stderr, every_s: float = 15.0,
                 max_iters: dict[str, int] | None = None):
        self.emit = emit
        self.every_s = every_s
        self.max_iters = max_iters or {}
        self._reset()

    def _reset(self) -> None:
        self._latest: dict[str, tuple[str, dict[str, Any]]] = {}
        self._started_at: dict[str, float] = {}
        self._last_emit = 0.0
        self._started = time.time()
        self._plan: dict[str, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"emit": self.emit, "every_s": self.every_s, "max_iters": self.max_iters}

    def __setstate__(self, state: dict[str, Any]) -> None:  # a resumed study starts its own clock
        self.__dict__.update(state)
        self._reset()

    # ------------------------------------------------------------------ the study's plan

    def _load_plan(self, trial) -> None:
        """How many trials the study runs and the training FLOPs of each named experiment, from
        the run's study.json (stored settings, so right on --resume too)."""
        if self._plan is not None:
            return
        self._plan = {}
        doc = trial_study_file(trial)
        if not doc:  # a trial with no storage yet
            return
        from slm_tune.config import ExperimentConfig
        from slm_tune.model.counts import training_flops

        flops = {}
        for name, d in doc.get("configs", {}).items():
            try:
                flops[name] = training_flops(ExperimentConfig(**d))
            except (TypeError, ValueError):
                pass
        self._plan = {"n_trials": int(doc.get("n_trials") or 0), "flops": flops,
                      "repeats": int(doc.get("repeats") or 1), "flops_budget": float(doc.get("flops_budget") or 0)}

    def _total(self, name: str, result: dict[str, Any]) -> int | None:
        experiment = result.get("experiment", name.split("_seed")[0])
        return result.get("max_iters") or self.max_iters.get(experiment)

    def study_eta(self) -> float | None:
        """Remaining training FLOPs (running trials' rest, and trials not started: their configs'
        FLOPs, or in a search the mean of those seen; at most what is left of a FLOPs budget) over
        the running trials' FLOP rate."""
        plan = self._plan or {}
        rate, remaining, seen_flops, started = 0.0, 0.0, [], set()
        for name, (status, result) in self._latest.items():
            started.add(result.get("experiment", name.split("_seed")[0]))
            r, fpt, total = _rate(result), result.get("flops_per_token"), self._total(name, result)
            if r is None or not fpt or not total:
                continue
            seen_flops.append(total * r[0] * fpt)
            if status == "RUNNING":
                rate += r[1] * fpt
            if status in ("RUNNING", "STARTED", "PENDING"):  # the last two: restored, to run again
                remaining += max(0, total - result["iteration"]) * r[0] * fpt
        if rate <= 0:
            return None
        left = plan["flops_budget"] - self.spent_flops() if plan.get("flops_budget") else math.inf
        pending = max(0, plan.get("n_trials", 0) - len(self._latest))
        if pending:
            not_started = [f for n, f in plan.get("flops", {}).items() if n not in started]
            if not_started:
                remaining += sum(not_started) * plan.get("repeats", 1)
            elif seen_flops:
                remaining += pending * sum(seen_flops) / len(seen_flops)
            elif not math.isfinite(left):
                return None
            else:
                remaining = math.inf
        return max(0.0, min(remaining, left)) / rate

    def spent_flops(self) -> float:
        """The training FLOPs the study's trials have reported (what --budget counts)."""
        return sum(float(r.get("train_flops") or 0) for _, r in self._latest.values())

    # ------------------------------------------------------------------ lines

    def _update(self, trial, status: str, result: dict[str, Any] | None = None) -> None:
        name = str(trial)
        previous = self._latest.get(name, ("", {}))[1]
        self._latest[name] = (status, result if result is not None else previous)

    def _line(self, name: str) -> str:
        status, result = self._latest[name]
        started = self._started_at.get(name)
        return trial_line(name, status, result, self._total(name, result),
                          time.time() - started if started else None)

    def header(self, now: float) -> str:
        done = sum(1 for s, _ in self._latest.values() if s not in ("STARTED", "RUNNING", "PENDING", "ENDED"))
        running = sum(1 for s, _ in self._latest.values() if s in ("STARTED", "RUNNING"))
        ended = sum(1 for s, _ in self._latest.values() if s == "ENDED")
        total = (self._plan or {}).get("n_trials") or len(self._latest)
        eta = self.study_eta() if running else None
        budget = (self._plan or {}).get("flops_budget")
        spent = f"; {self.spent_flops() / budget:.0%} of its {budget:.3g} FLOPs budget spent" if budget else ""
        return (f"[{now - self._started:6.0f}s] {done}/{total} trial(s) done, {running} running"
                + (f", {ended} stopped with the study" if ended else "") + spent
                + (f"; study ETA {duration(eta)}" if eta is not None else ""))

    def _flush(self, force: bool = False) -> None:
        now = time.time()
        if not self._latest or (not force and now - self._last_emit < self.every_s):
            return
        self._last_emit = now
        self.emit(self.header(now))
        for name in sorted(self._latest):
            self.emit(self._line(name))

    def _adopt(self, trials) -> None:
        """What Ray knows and this process has not seen: trials restored with reports (a resumed
        study: PENDING until they run again, their FLOPs counted as spent, as the budget's own
        account has them; those that had ended, done) and trials Ray ended with no completion call
        ("ENDED": stopped with the study, by a stopper's stop_all or an interruption; which of the
        two, this callback cannot tell)."""
        for trial in trials:
            result = getattr(trial, "last_result", None) or {}
            seen, previous = self._latest.get(str(trial), ("", {}))
            ended = trial.status in ("TERMINATED", "ERROR")
            if seen in ("STARTED", "RUNNING", "PENDING") and ended:
                self._latest[str(trial)] = ("ERRORED" if trial.status == "ERROR" else "ENDED", result or previous)
            elif not seen and "iteration" in result:
                self._load_plan(trial)  # before the first line, which adoption can bring forward
                status = str(result.get("status", "finished")).upper() if ended else "PENDING"
                self._latest[str(trial)] = ("ERRORED" if trial.status == "ERROR" else
                                            "STOPPED" if status == "RUNNING" else status, result)

    def on_step_begin(self, iteration, trials, **info):
        self._adopt(trials)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._load_plan(trial)
        self._update(trial, "STARTED")
        self._started_at[str(trial)] = time.time()
        self.emit(self._line(str(trial)))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        # Each trial's first report is shown at once (it can be minutes after the start).
        first = not self._latest.get(str(trial), ("", {}))[1]
        self._update(trial, "RUNNING", result)
        self._flush(force=first)

    def on_step_end(self, iteration, trials, **info):
        self._flush()  # trials that have not reported yet still show how long they have run

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
        # the reason in one line (Ray's own log of the traceback is held back unless --verbose)
        where = getattr(trial, "local_path", None)
        self.emit(f"  {trial}: {first_error_line(Path(where)) if where else 'errored'}")

    def on_experiment_end(self, trials, **info):
        self._adopt(trials)
        self._flush(force=True)
