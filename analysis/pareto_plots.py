"""A search's Pareto front: one panel for two objectives, a panel per pair for three or more.
Dominated trials are grey, front trials coloured and labelled with their Pareto number (the
`search_{name}_pareto_N` entries of the best TOML), joined by the front's staircase."""

from __future__ import annotations

import itertools
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.pareto import PARETO_PREFIX  # noqa: E402
from analysis.plots import log_count_axis  # noqa: E402
from slm_tune.metrics import METRICS  # noqa: E402

LOG_SCALE = ("total_params", "non_embedding_params", "flops_per_token")  # spread over decades


def plot_pareto(table: pd.DataFrame, front: pd.DataFrame, objectives: list[str], title: str, path: Path) -> None:
    """`table`: every trial with its objectives; `front`: pareto_table's rows (numbered)."""
    pairs = list(itertools.combinations(objectives, 2))
    fig, axes = plt.subplots(1, len(pairs), figsize=(7.5 * len(pairs), 6), squeeze=False)
    for ax, (y, x) in zip(axes[0], pairs):
        _panel(ax, table, front, x, y, staircase=len(objectives) == 2)
    fig.suptitle(title + (f" ({len(objectives)} objectives: the front over all, shown pairwise)"
                          if len(objectives) > 2 else ""), fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def _panel(ax, table: pd.DataFrame, front: pd.DataFrame, x: str, y: str, staircase: bool) -> None:
    values = table[[x, y]].apply(pd.to_numeric, errors="coerce")
    ok = values.notna().all(axis=1)
    on_front = table["trial"].isin(front["trial"]) if "trial" in table else pd.Series(False, index=table.index)
    rest = values[ok & ~on_front]
    ax.scatter(rest[x], rest[y], s=28, color="0.7", label=f"dominated ({len(rest)})", zorder=2)
    fx, fy = pd.to_numeric(front[x], errors="coerce"), pd.to_numeric(front[y], errors="coerce")
    if staircase and len(front) > 1:
        order = np.argsort(fx.to_numpy(), kind="stable")
        where = "post" if METRICS[y].direction == "min" else "pre"
        ax.step(fx.to_numpy()[order], fy.to_numpy()[order], where=where, color="tab:blue", lw=1.2, zorder=3)
    ax.scatter(fx, fy, s=60, color="tab:blue", edgecolor="black", zorder=4,
               label=f"Pareto front ({len(front)})" if staircase else f"on the front of all objectives ({len(front)})")
    for n, name, px, py in zip(front[PARETO_PREFIX], front["trial"], fx, fy):
        ax.annotate(f"{n}: {name}", (px, py), textcoords="offset points", xytext=(6, 5), fontsize=8)
    for which, metric in (("x", x), ("y", y)):
        if metric in LOG_SCALE:
            log_count_axis(ax, which)
    ax.set_xlabel(METRICS[x].axis_label + _better(x))
    ax.set_ylabel(METRICS[y].axis_label + _better(y))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)


def _better(metric: str) -> str:
    return ", lower is better" if METRICS[metric].direction == "min" else ", higher is better"

