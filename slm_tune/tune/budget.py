"""A search's compute budget (`--budget FLOPS`): once its trials have trained that many FLOPs
between them, Tune samples no more trials and stops the running ones, as it does at the end of a
--time-budget. The sum is taken over every trial Tune holds, so a resumed search counts what its
trials trained before the interruption too.

What it guarantees: Tune checks `stop_all` right after each report it processes (Ray 2.60's
TuneController.step: one event, then the stop check), and the sum counts that report itself, so
the search stops at the first report that brings the reported FLOPs to the budget. Every report
before it left the sum below the budget: what the trials reported in all exceeds the budget by
at most the crossing report's own step (the FLOPs its trial trained since its previous report),
plus what other running trials trained between their last report and the stop (they are stopped,
not waited for; their reports in flight, at most one each, may still be counted)."""

from __future__ import annotations

from typing import Any, Iterable

from ray import tune
from ray.tune.stopper import Stopper


class FlopsBudget(tune.Callback, Stopper):
    """Both halves of the budget in one object: as a callback it sees every trial's newest report,
    as a stopper it tells Tune to stop all. Passed to RunConfig as both, it is pickled with the
    Tuner as one object, and a restored Tuner gets it back as one."""

    def __init__(self, flops: float):
        self.flops = flops
        self.spent = 0.0

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        # Ray calls the callbacks before it sets the reporting trial's last_result: its newest
        # report is `result`, every other trial's is its last_result
        self.spent = spent_flops(result if t is trial else t.last_result for t in trials)

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False  # no trial is stopped on its own account

    def stop_all(self) -> bool:
        return self.spent >= self.flops


def spent_flops(reports: Iterable[dict | None]) -> float:
    """The training FLOPs of trials, from each one's newest report (its train_flops so far)."""
    return float(sum((r or {}).get("train_flops", 0.0) for r in reports))
