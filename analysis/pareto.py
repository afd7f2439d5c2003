"""Trade-offs between a search's objectives: which trials are non-dominated (the Pareto front),
and the hypervolume a front encloses (how much of the objective space it wins).

    from analysis.pareto import pareto_mask, pareto_table, hypervolume
    front = pareto_table(table, ["best_val_bpb", "total_params"])

Directions come from the metric registry (slm_tune.metrics): bits per byte and parameters down,
tokens/s up. A trial is on the front when no other trial is at least as good in every objective
and better in one; trials without a finite value of every objective are on no front.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from slm_tune.metrics import METRICS

PARETO_PREFIX = "pareto"  # the best TOML's entries: search_{name}_pareto_1, _2, ...


def _minimised(table: pd.DataFrame, objectives: list[str]) -> np.ndarray:
    """The objectives as an (n, k) array in which lower is better everywhere (NaN where missing)."""
    values = table[objectives].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    signs = np.array([1.0 if METRICS[o].direction == "min" else -1.0 for o in objectives])
    return values * signs


def pareto_mask(table: pd.DataFrame, objectives: list[str]) -> np.ndarray:
    """True for the rows no other row dominates (among rows with every objective finite)."""
    x = _minimised(table, objectives)
    ok = np.isfinite(x).all(axis=1)
    mask = np.zeros(len(x), dtype=bool)
    for i in np.flatnonzero(ok):
        others = x[ok]
        dominated = ((others <= x[i]).all(axis=1) & (others < x[i]).any(axis=1)).any()
        mask[i] = not dominated
    return mask


def pareto_table(table: pd.DataFrame, objectives: list[str]) -> pd.DataFrame:
    """The front's rows, best first by the first objective, numbered from 1 (`pareto`)."""
    front = table[pareto_mask(table, objectives)].copy()
    ascending = METRICS[objectives[0]].direction == "min"
    front = front.sort_values(objectives, ascending=ascending, kind="stable").reset_index(drop=True)
    front.insert(0, PARETO_PREFIX, range(1, len(front) + 1))
    return front


def hypervolume(table: pd.DataFrame, objectives: list[str], reference: list[float]) -> float:
    """The area a 2-objective front dominates up to `reference` (a point worse than every trial in
    both, in the objectives' own units and directions). Two objectives only: a sweep along the first."""
    if len(objectives) != 2:
        raise ValueError("hypervolume here is for two objectives")
    signs = np.array([1.0 if METRICS[o].direction == "min" else -1.0 for o in objectives])
    ref = np.asarray(reference, dtype=float) * signs
    x = _minimised(table, objectives)
    x = x[np.isfinite(x).all(axis=1) & (x < ref).all(axis=1)]
    if not len(x):
        return 0.0
    x = x[np.argsort(x[:, 0], kind="stable")]
    area, best_second = 0.0, ref[1]
    for i, (first, second) in enumerate(x):
        if second < best_second:
            best_second = second
        right = x[i + 1, 0] if i + 1 < len(x) else ref[0]
        area += (right - first) * (ref[1] - best_second)
    return float(area)
