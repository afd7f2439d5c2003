"""A search's objectives and constraints, from the metric registry (slm_tune.metrics).

    python studies.py search shape --objective best_val_bpb --objective params
    python studies.py search shape --constraint "params<=5e6"

An objective is a registered metric with its direction (bits per byte down, tokens/s up). A
constraint is `METRIC OP BOUND` with OP one of <=, <, >=, >. A constraint on a figure the config
alone decides (parameters, FLOPs per token: `before_training` in the registry) is checked when a
point is sampled, so it never spends a trial (slm_tune.tune.constrained); on a measured one (bits
per byte, ms_per_token) it filters the results: the best trial and the Pareto front are chosen
among the trials that meet it. Plain Python: the driver imports it.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from slm_tune.config import ExperimentConfig
from slm_tune.errors import UserError
from slm_tune.metrics import METRICS, OBJECTIVE_METRICS, get_metric

OPERATORS = {"<=": lambda v, b: v <= b, "<": lambda v, b: v < b, ">=": lambda v, b: v >= b, ">": lambda v, b: v > b}
_CONSTRAINT = re.compile(r"^\s*([A-Za-z_]+)\s*(<=|>=|<|>)\s*([-+0-9.eE_]+)\s*$")
PROBE_LIMIT = 20_000  # points of a space checked against its constraints before anything runs


@dataclass(frozen=True)
class Constraint:
    metric: str  # a registry name (aliases resolved)
    op: str
    bound: float

    @property
    def before_training(self) -> bool:
        return METRICS[self.metric].before_training

    def holds(self, value: Any) -> bool:
        try:
            v = float(value)
        except (TypeError, ValueError):
            return False
        return math.isfinite(v) and OPERATORS[self.op](v, self.bound)

    @property
    def text(self) -> str:
        return f"{self.metric}{self.op}{self.bound:g}"

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "op": self.op, "bound": self.bound}


def parse_objectives(names: Iterable[str]) -> list[str]:
    """--objective values -> registry names, in order; a one-line error for an unknown or repeated one."""
    out: list[str] = []
    for name in names:
        metric = get_metric(name, OBJECTIVE_METRICS, flag="--objective").name
        if metric in out:
            raise UserError(f"--objective {name} is given twice; name each objective once")
        out.append(metric)
    return out


def parse_constraint(text: str) -> Constraint:
    """`params<=5e6` -> Constraint, or a one-line error that shows the form."""
    m = _CONSTRAINT.match(text)
    if not m:
        raise UserError(f"--constraint {text!r} is not METRIC OP NUMBER; write e.g. \"params<=5e6\" or "
                        "\"ms_per_token<20\" (OP: <=, <, >=, >)")
    name, op, number = m.groups()
    metric = get_metric(name, OBJECTIVE_METRICS, flag="--constraint")
    try:
        bound = float(number.replace("_", ""))
    except ValueError:
        raise UserError(f"--constraint {text!r}: {number!r} is not a number") from None
    return Constraint(metric.name, op, bound)


def directions(objectives: list[str]) -> list[str]:
    """Ray's modes ("min"/"max") of the objectives."""
    return [METRICS[o].direction for o in objectives]


def report_keys(objectives: list[str]) -> list[str]:
    """The keys of a trial's reports that carry the objectives (what Ray's searcher reads)."""
    return [METRICS[o].report_key for o in objectives]


def config_value(c: ExperimentConfig, metric: str) -> float:
    """A figure the config alone decides (a `before_training` metric)."""
    from slm_tune.model.counts import flops_per_token, param_counts

    if metric == "flops_per_token":
        return float(flops_per_token(c))
    total, non_embedding = param_counts(c)
    return float(total if metric == "total_params" else non_embedding)


def holds_for(c: ExperimentConfig, constraints: Iterable[Constraint]) -> bool:
    """Whether a config meets every constraint checked before training."""
    return all(k.holds(config_value(c, k.metric)) for k in constraints if k.before_training)


def check_possible(space, constraints: list[Constraint], seed: int = 0) -> float:
    """The share of the space's probe points (every combination of its values, bounds for
    continuous settings; a sample of PROBE_LIMIT when there are more) that meets the
    before-training constraints; a one-line error, before anything runs, when none does."""
    early = [k for k in constraints if k.before_training]
    if not early:
        return 1.0
    keys = space.searched
    grid = [space.dists[k].probes() for k in keys]
    points = _probe_points(grid, seed)
    values = {k.metric: [] for k in early}
    ok = 0
    for point in points:
        c = space.config_for(dict(zip(keys, point)))
        for metric in values:
            values[metric].append(config_value(c, metric))
        ok += all(k.holds(values[k.metric][-1]) for k in early)
    if ok == 0:
        shown = "; ".join(f"{k.text}, but the space's {METRICS[k.metric].label} run from "
                          f"{min(values[k.metric]):.4g} to {max(values[k.metric]):.4g}" for k in early)
        raise UserError(f"--constraint: no point of search {space.name!r} meets it ({shown}); loosen the bound "
                        "or search smaller settings")
    return ok / len(points)


def _probe_points(grid: list[list], seed: int) -> list[tuple]:
    size = math.prod(len(g) for g in grid)
    if size <= PROBE_LIMIT:
        return list(itertools.product(*grid))
    rng = random.Random(seed)
    corners = list(itertools.product(*[(g[0], g[-1]) for g in grid]))[:PROBE_LIMIT // 2]
    return corners + [tuple(rng.choice(g) for g in grid) for _ in range(PROBE_LIMIT - len(corners))]


def measured_filter(constraints: list[Constraint]):
    """A row predicate for a trials table: the constraints on measured figures (and, again, the
    early ones: a study from before them is filtered alike)."""
    def keep(row: Mapping[str, Any]) -> bool:
        return all(k.holds(row.get(k.metric)) for k in constraints)
    return keep


def constraints_from(docs: Iterable[Mapping[str, Any]]) -> list[Constraint]:
    """Constraints as study.json stores them."""
    return [Constraint(d["metric"], d["op"], float(d["bound"])) for d in docs]
