"""A search's figure: parallel coordinates of the searched settings coloured by the metric, the
metric against each setting, and the best value found so far against wall time."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from slm_tune.metrics import METRICS  # noqa: E402
from slm_tune.space import SearchSpace  # noqa: E402

STOPPED = ("stopped early", "interrupted", "errored", "diverged")


def _axis(space: SearchSpace, key: str, values: pd.Series) -> tuple[np.ndarray, list[float], list[str]]:
    """A setting's values mapped to [0, 1] (log where the space samples on a log scale, category
    positions for choices), with tick positions and labels."""
    d = space.dists[key]
    if d.categorical:
        cats = list(dict.fromkeys(d.args))
        pos = {c: i / max(1, len(cats) - 1) for i, c in enumerate(cats)}
        return (np.array([pos.get(v, np.nan) for v in values], dtype=float), list(pos.values()),
                [str(c) for c in cats])
    lo, hi = _bounds(space, key)
    x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    if d.log_scale:
        f = lambda v: (np.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))  # noqa: E731
    else:
        f = lambda v: (v - lo) / (hi - lo)  # noqa: E731
    ticks = [lo, hi] if not d.log_scale else [lo, math.sqrt(lo * hi), hi]
    return f(x), [float(f(t)) for t in ticks], [f"{t:.3g}" for t in ticks]


def _label(metric: str) -> str:
    return METRICS[metric].label if metric in METRICS else metric


def _bounds(space: SearchSpace, key: str) -> tuple[float, float]:
    """The lowest and highest value a numeric setting can take (randint's upper bound is excluded)."""
    d = space.dists[key]
    lo, hi = float(d.args[0]), float(d.args[1])
    return lo, hi - 1 if d.kind == "randint" else hi


def plot_search(table: pd.DataFrame, space: SearchSpace, metric: str, started: float | None, title: str,
                path: Path) -> None:
    """Three rows: parallel coordinates of every trial, the metric against each setting, and the
    best so far against wall time."""
    keys = space.searched
    k = len(keys)
    fig = plt.figure(figsize=(max(11, 3.2 * k), 12))
    grid = fig.add_gridspec(3, k, height_ratios=[1.25, 1, 1], hspace=0.45, wspace=0.3)
    ok = table[table[metric].notna()]
    _parallel_coordinates(fig, fig.add_subplot(grid[0, :]), ok, space, metric)
    for j, key in enumerate(keys):
        _metric_against(fig.add_subplot(grid[1, j]), ok, space, key, metric, first=j == 0)
    _best_so_far(fig.add_subplot(grid[2, :]), ok, metric, started)
    fig.suptitle(title, fontsize=13)
    fig.savefig(path, dpi=100, format="png", bbox_inches="tight")
    plt.close(fig)


def _parallel_coordinates(fig, ax, ok: pd.DataFrame, space: SearchSpace, metric: str) -> None:
    """One line per trial, best drawn last (on top)."""
    keys = space.searched
    values = ok[metric].to_numpy(dtype=float)
    cmap = plt.get_cmap("viridis_r")  # best (lowest) bright yellow-green, worst dark purple
    norm = matplotlib.colors.Normalize(vmin=values.min(), vmax=values.max()) if len(values) else None
    cols = keys + [metric]
    order = ok.sort_values(metric, ascending=False)
    ys = {}
    for key in keys:
        ys[key], ticks, labels = _axis(space, key, order[key])
        for t, lab in zip(ticks, labels):
            ax.annotate(lab, (keys.index(key), t), xytext=(4, 0), textcoords="offset points", fontsize=7,
                        va="center", color="0.3")
    low = values.min() if len(values) else 0.0
    span = (values.max() - low) if len(values) and values.max() > low else 1.0
    ys[metric] = (order[metric].to_numpy(dtype=float) - low) / span
    for i in range(len(order)):
        line = [ys[c][i] for c in cols]
        ax.plot(range(len(cols)), line, color=cmap(norm(order[metric].iloc[i])) if norm else "C0",
                lw=2.2 if i == len(order) - 1 else 1.2, alpha=0.9)
    for x in range(len(cols)):
        ax.axvline(x, color="0.6", lw=0.8)
    if len(values):
        for t, v in ((0.0, values.min()), (1.0, values.max())):
            ax.annotate(f"{v:.4f}", (len(cols) - 1, t), xytext=(4, 0), textcoords="offset points", fontsize=7,
                        va="center", color="0.3")
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels(cols)
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(cols) - 0.6)
    ax.set_title("Parallel coordinates: each line a trial, coloured by " + metric + " (lower is better)")
    if norm:
        fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.01, label=metric)


def _metric_against(ax, ok: pd.DataFrame, space: SearchSpace, key: str, metric: str, first: bool) -> None:
    """The metric against one setting; hollow markers: stopped before the end."""
    d = space.dists[key]
    for stopped in (False, True):
        part = ok[ok["status"].isin(STOPPED) == stopped]
        if d.categorical:
            cats = [str(c) for c in dict.fromkeys(d.args)]
            x = [cats.index(str(v)) if str(v) in cats else np.nan for v in part[key]]
            ax.set_xticks(range(len(cats)))
            ax.set_xticklabels(cats, fontsize=8)
        else:
            x = pd.to_numeric(part[key], errors="coerce")
        ax.scatter(x, part[metric], s=28, facecolors="none" if stopped else "C0", edgecolors="C0",
                   label="stopped early" if stopped else "ran to the end")
    if d.log_scale:
        ax.set_xscale("log")
    if not d.categorical:
        lo, hi = _bounds(space, key)
        pad = (hi / lo) ** 0.04 if d.log_scale else (hi - lo) * 0.04
        ax.set_xlim(*((lo / pad, hi * pad) if d.log_scale else (lo - pad, hi + pad)))
    ax.set_xlabel(key)
    if first:
        ax.set_ylabel(_label(metric))
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def _best_so_far(ax, ok: pd.DataFrame, metric: str, started: float | None) -> None:
    """Best so far against wall time."""
    ended = pd.to_numeric(ok["ended_at"], errors="coerce")
    if started is None and ended.notna().any():
        started = float(ended.min() - pd.to_numeric(ok["training_time_s"], errors="coerce").max())
    if ended.notna().any() and started is not None:
        seconds = (ended - started).clip(lower=0)
        unit, scale = ("minutes", 60.0) if seconds.max() > 180 else ("seconds", 1.0)
        by_time = pd.DataFrame({"t": seconds / scale, "v": ok[metric]}).dropna().sort_values("t")
        ax.scatter(by_time["t"], by_time["v"], s=22, color="0.55", label="trial (when it ended)")
        best = by_time["v"].cummin()
        ax.step(list(by_time["t"]) + [by_time["t"].max() * 1.02], list(best) + [best.iloc[-1]], where="post",
                color="C3", lw=2, label="best so far")
        ax.set_xlim(left=0)
        ax.set_xlabel(f"wall time since the search started ({unit})")
        ax.legend()
    ax.set_ylabel(_label(metric))
    ax.set_title("Best so far against wall time")
    ax.grid(alpha=0.3)
