"""A replay table: configurations, their learning curves, and the nearest configuration to a point.

The file is a parquet table with one row per eval of each recorded run: the run's name, its point
(one column per searched setting), its seed, and per eval the iteration, training FLOPs so far,
seconds so far, val_bpb and the best val_bpb so far. Runs of the same point at other seeds
(`seed` differs from the table's first seed) measure the seed noise and are never replayed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from slm_tune.errors import UserError
from slm_tune.space import SearchSpace

CURVE_COLUMNS = ("iteration", "train_flops", "elapsed_s", "val_bpb", "best_val_bpb")
RUN_COLUMNS = ("total_params", "non_embedding_params", "flops_per_token")


@dataclass(frozen=True)
class Curve:
    """One recorded run: its point and its evals (arrays, in order)."""

    run: str
    point: dict[str, Any]
    figures: dict[str, float]  # RUN_COLUMNS
    iteration: np.ndarray
    train_flops: np.ndarray
    elapsed_s: np.ndarray
    val_bpb: np.ndarray
    best_val_bpb: np.ndarray

    def report(self, k: int) -> dict[str, Any]:
        """Eval k as a report (the keys a training run's eval report has that searches rank on)."""
        return {"iteration": int(self.iteration[k]), "eval_iteration": int(self.iteration[k]),
                "train_flops": float(self.train_flops[k]), "eval_flops": float(self.train_flops[k]),
                "elapsed_s": float(self.elapsed_s[k]),
                "val_bpb": float(self.val_bpb[k]), "best_val_bpb": float(self.best_val_bpb[k]),
                "val_loss": math.nan, **{k2: float(v) for k2, v in self.figures.items()},
                "params": float(self.figures["total_params"]), "kind": "eval"}


class ReplayTable:
    """The recorded runs of a table file, and the nearest one to a point of a search space."""

    def __init__(self, frame: pd.DataFrame, keys: list[str]):
        self.frame, self.keys = frame, keys
        first_seed = frame["seed"].min()
        self.noise_runs = sorted(set(frame.loc[frame["seed"] != first_seed, "run"]))
        self.curves = [_curve(rows, keys) for _, rows in frame[frame["seed"] == first_seed].groupby("run", sort=True)]
        self._coords_cache: dict[int, np.ndarray] = {}

    @classmethod
    def load(cls, path: str | Path) -> "ReplayTable":
        path = Path(path)
        if not path.is_file():
            raise UserError(f"replay table {path} not found; build it with `python bench/tabular.py export` "
                            "(bench/tabular.parquet is the committed one)")
        frame = pd.read_parquet(path)
        keys = [c for c in frame.columns if c.startswith("p_")]
        return cls(frame.rename(columns={k: k[2:] for k in keys}), [k[2:] for k in keys])

    def final(self, key: str = "best_val_bpb") -> np.ndarray:
        """Each replayable run's last eval's figure."""
        return np.array([getattr(c, key)[-1] for c in self.curves])

    def nearest(self, point: Mapping[str, Any], space: SearchSpace) -> Curve:
        """The recorded run closest to `point`: each searched setting scaled to [0, 1] over the
        space's range (log for loguniform), a different category counting 1."""
        target = _coords([point], self.keys, space)[0]
        return self.curves[int(np.argmin(np.nansum((self._coords(space) - target) ** 2, axis=1)))]

    def _coords(self, space: SearchSpace) -> np.ndarray:
        if id(space) not in self._coords_cache:
            self._coords_cache[id(space)] = _coords([c.point for c in self.curves], self.keys, space)
        return self._coords_cache[id(space)]

    def check_space(self, space: SearchSpace) -> None:
        """The space searches exactly the table's settings."""
        missing = sorted(set(self.keys) - set(space.searched))
        extra = sorted(set(space.searched) - set(self.keys))
        if missing or extra:
            raise UserError(f"the replay table's settings are {', '.join(self.keys)}; the search "
                            f"{'lacks ' + ', '.join(missing) if missing else 'also searches ' + ', '.join(extra)}: "
                            "replay it with the space it was built for (search_spaces/searches/tiny_lm.toml)")


def _curve(rows: pd.DataFrame, keys: list[str]) -> Curve:
    rows = rows.sort_values("iteration")
    first = rows.iloc[0]
    return Curve(run=str(first["run"]), point={k: _plain(first[k]) for k in keys},
                 figures={k: float(first[k]) for k in RUN_COLUMNS},
                 **{k: rows[k].to_numpy(dtype=float) for k in CURVE_COLUMNS})


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _coords(points: list[Mapping[str, Any]], keys: list[str], space: SearchSpace) -> np.ndarray:
    """Points as rows of [0, 1] coordinates, one column per numeric setting and one indicator
    column per category of a categorical one."""
    columns = []
    for key in keys:
        d = space.dists[key]
        values = [p[key] for p in points]
        if d.categorical:
            columns += [np.array([float(v == c) for v in values]) / math.sqrt(2) for c in d.args]
            continue
        lo, hi = float(d.args[0]), float(d.args[1])
        x = np.array(values, dtype=float)
        columns.append((np.log(x / lo) / math.log(hi / lo)) if d.log_scale else (x - lo) / (hi - lo))
    return np.stack(columns, axis=1)
