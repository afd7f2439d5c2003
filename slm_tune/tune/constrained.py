"""A searcher that samples only points meeting a search's before-training constraints.

Ray's searchers take a space, not a constraint; Optuna's constraints (constraints_func) only steer
its samplers after trials have run, so a point that breaks one would still spend a trial. This
wrapper asks the searcher it wraps for a point until one holds, and tells that searcher each
refused draw as failed, so that no trial is spent on it and the sampler's own record stays whole.
It wraps a searcher as Ray's ConcurrencyLimiter does (its `searcher` attribute), so Ray saves and
restores both with the experiment, and a resumed search keeps the draws it has made.
"""

from __future__ import annotations

import copy
from typing import Any, Optional

from ray.tune.search import Searcher

from slm_tune.objectives import Constraint, holds_for
from slm_tune.space import SearchSpace

MAX_DRAWS = 2_000  # per suggestion; then the search ends with the trials it has


class ConstrainedSearcher(Searcher):
    def __init__(self, searcher: Searcher, space: SearchSpace, constraints: list[Constraint]):
        self.searcher = searcher
        self.space, self.constraints = space, [k for k in constraints if k.before_training]
        self.draws: dict[str, str] = {}  # Ray's trial id -> the id the wrapped searcher knows it by
        self.refused = 0  # draws that broke a constraint
        super().__init__(metric=searcher.metric, mode=searcher.mode)

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], config: dict, **spec) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        return self.searcher.set_max_concurrency(max_concurrent)

    def suggest(self, trial_id: str) -> Optional[dict]:
        for draw in range(MAX_DRAWS):
            inner_id = trial_id if draw == 0 else f"{trial_id}~{draw}"
            point = self.searcher.suggest(inner_id)
            if point is None or point == Searcher.FINISHED:
                return point
            if holds_for(self.space.config_for(point), self.constraints):
                self.draws[trial_id] = inner_id
                return point
            self.refused += 1
            self.searcher.on_trial_complete(inner_id, result=None, error=True)
        return Searcher.FINISHED  # the constraints hold almost nowhere: the search ends with what it has

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.searcher.on_trial_result(self.draws.get(trial_id, trial_id), result)

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        self.searcher.on_trial_complete(self.draws.get(trial_id, trial_id), result=result, error=error)

    def get_state(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k != "searcher"}
        return copy.deepcopy(state)

    def set_state(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)
