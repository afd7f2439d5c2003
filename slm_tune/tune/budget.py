"""A search's compute budget (`--budget FLOPS`): once its trials have trained that many FLOPs
between them, Tune samples no more trials and stops the running ones, as it does at the end of a
--time-budget. The sum is over every trial's newest report, an account the stopper keeps and Ray
saves with the experiment's state, so a resumed search counts what its trials trained before the
interruption too.

What it guarantees: Tune checks `stop_all` right after each report it processes (Ray 2.60's
TuneController.step: one event, then the stop check), and the sum counts that report itself, so
the search stops at the first report that brings the reported FLOPs to the budget. Every report
before it left the sum below the budget: what the trials reported in all exceeds the budget by
at most the crossing report's own step (the FLOPs its trial trained since its previous report),
plus what other running trials trained between their last report and the stop (they are stopped,
not waited for; their reports in flight, at most one each, may still be counted).

Across a resume: Ray saves its controller's stopper with the experiment's state and, on
`Tuner.restore`, puts that saved copy in place of the one the tuner was built with, so the stopper
keeps its own account (each trial's newest train_flops, as of the last saved state; a restored
trial's reports from its checkpoint on replace its entry) and needs nothing from any other object.
What a trial trained after its last checkpoint before the interruption is trained again and
counted once, and the account is as fresh as Ray's last saved state (at least every 10 s), so
across a resume the overrun can exceed the bound above by up to that much.
An earlier design counted in a callback that shared the object with the stopper: after a restore
the two were separate copies and the search ran past its budget to its last sample
(tests/test_search.py). A stopper saved by that design resumes with an empty account: it counts
the trials that report again, not those that had ended before the interruption."""

from __future__ import annotations

from typing import Any, Iterable

from ray import tune
from ray.tune.stopper import Stopper


class FlopsBudget(tune.Callback, Stopper):
    """A stopper with its own account of the trials' FLOPs. It stays a (no-op) tune.Callback: the
    earlier design passed it to RunConfig as a callback too, and stored tuners hold it there."""

    def __init__(self, flops: float):
        self.flops = flops
        self.latest: dict[str, float] = {}  # trial id -> its newest report's train_flops

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("latest", {})  # saved by the earlier design: see the module's docstring
        self.__dict__.pop("spent", None)  # that design's count, stale once restored

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        if "train_flops" in result:
            self.latest[trial_id] = float(result["train_flops"])
        return False  # no trial is stopped on its own account

    def stop_all(self) -> bool:
        return sum(self.latest.values()) >= self.flops


def spent_flops(reports: Iterable[dict | None]) -> float:
    """The training FLOPs of trials, from each one's newest report (its train_flops so far)."""
    return float(sum((r or {}).get("train_flops", 0.0) for r in reports))
