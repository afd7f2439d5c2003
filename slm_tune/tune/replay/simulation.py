"""A search replayed against a table by ask-and-tell, on a simulated clock.

The searcher is the Optuna sampler a live search builds (slm_tune.tune.schedulers.make_sampler),
asked with the distributions Ray's OptunaSearch gives it and told what OptunaSearch tells (the
trial's last report's objectives, also for a trial the scheduler stopped). The scheduler is the
Ray scheduler object a live search builds (make_scheduler), given each eval's report in the order
a study of `workers` concurrent trials would deliver them (each run's recorded seconds decide the
order) and obeyed as Tune obeys it. What a replay does not have is Tune's own per-trial overhead
(a second or more here): that is why it is fast enough for twenty seeds of every pairing.

Random search replays through Optuna's RandomSampler: the live default (Ray's random search)
draws from the same distributions (tests/test_replay.py compares 400 draws of each, and runs the
default pairing through Tune at two workers against this replay).
"""

from __future__ import annotations

import heapq
import itertools
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from ray.tune.schedulers import TrialScheduler

from slm_tune.objectives import directions, report_keys
from slm_tune.tune.replay.table import Curve, ReplayTable
from slm_tune.tune.schedulers import make_sampler, make_scheduler
from slm_tune.tune.study_run import StudyRun


@dataclass(eq=False)
class _Trial:
    """What Ray's schedulers read of a trial: its id, identity and status (a live search's
    ConcurrencyLimiter makes no trial before a worker is free: every live trial runs)."""

    trial_id: str
    asked: object  # the Optuna trial
    curve: Curve
    started: float = 0.0
    status: str = "RUNNING"


@dataclass
class _Controller:
    """What Ray's schedulers read of Tune's controller: the live trials (the median rule)."""

    live: list = field(default_factory=list)

    def get_live_trials(self) -> list:
        return list(self.live)


@contextmanager
def _numpy_seed(seed: int | None):
    """Ray's HyperBand picks a trial's bracket with numpy's global generator: seeded for the
    replay, and given back as it was."""
    state = np.random.get_state()
    np.random.seed(seed if seed is not None else None)
    try:
        yield
    finally:
        np.random.set_state(state)


def replay_search(table: ReplayTable, run: StudyRun, workers: int = 2) -> pd.DataFrame:
    """Every eval the replayed search saw, in the order it saw them: the trial, its table run, the
    simulated time, the training FLOPs spent by then over all trials, the report's objectives,
    and whether the trial ended there (finished, or stopped by the scheduler)."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    goals = ["minimize" if d == "min" else "maximize" for d in directions(run.goals)]
    study = optuna.create_study(sampler=make_sampler(run), directions=goals)
    dists = OptunaSearch.convert_search_space(run.search.param_space())
    keys = report_keys(run.goals)
    with _numpy_seed(run.sampler_seed):
        scheduler, metric, mode = make_scheduler(run)
        if metric is not None:
            scheduler.set_search_properties(metric, mode)
        return pd.DataFrame(_events(table, run, study, dists, keys, scheduler, workers))


def _events(table, run, study, dists, keys, scheduler, workers) -> list[dict]:
    controller, heap, rows, counter, spent = _Controller(), [], [], itertools.count(), 0.0

    def start(now: float) -> None:
        asked = study.ask(fixed_distributions=dists)
        trial = _Trial(f"{asked.number:05d}", asked, table.nearest(asked.params, run.search), now)
        scheduler.on_trial_add(controller, trial)
        controller.live.append(trial)
        heapq.heappush(heap, (now + trial.curve.elapsed_s[0], next(counter), trial, 0))

    for _ in range(min(workers, run.num_samples)):
        start(0.0)
    while heap:
        now, _, trial, k = heapq.heappop(heap)
        curve, result = trial.curve, trial.curve.report(k)
        spent += curve.train_flops[k] - (curve.train_flops[k - 1] if k else 0.0)
        decision = scheduler.on_trial_result(controller, trial, result)
        ended = k == len(curve.iteration) - 1 or decision in (TrialScheduler.STOP, TrialScheduler.PAUSE)
        rows.append({"trial": trial.asked.number, "run": curve.run, "eval": k, "time_s": now, "flops": spent,
                     **{key: result[key] for key in keys}, "ended": ended, "stopped": ended and k < len(curve.iteration) - 1})
        if not ended:
            heapq.heappush(heap, (trial.started + curve.elapsed_s[k + 1], next(counter), trial, k + 1))
            continue
        scheduler.on_trial_complete(controller, trial, result)
        controller.live.remove(trial)
        values = [result[key] for key in keys]
        study.tell(trial.asked, values if len(values) > 1 else values[0])
        if len(study.trials) < run.num_samples:
            start(now)
    return rows
