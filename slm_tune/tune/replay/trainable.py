"""The replay trainable: a Tune trainable that trains nothing and reports the recorded curve of the
table's run nearest to its config, eval by eval, as the training trainable reports its evals.

    tune.Tuner(tune.with_parameters(replay_trainable, table=table, space=space), ...)

runs any search slm-tune builds (make_search_alg, make_scheduler) through Tune itself against the
table: the live code path, at Tune's own overhead per trial.
"""

from __future__ import annotations

from typing import Any

from ray import tune

from slm_tune.space import SearchSpace
from slm_tune.tune.replay.table import ReplayTable


def replay_trainable(config: dict[str, Any], table: ReplayTable, space: SearchSpace) -> None:
    curve = table.nearest(config, space)
    for k in range(len(curve.iteration)):
        tune.report({**curve.report(k), "run": curve.run})
