"""The layout's plots: one loss plot per experiment, and the comparison figure of a batch."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed, and safe in Ray workers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402
import pandas as pd  # noqa: E402

from slm_tune.describe import short_number as _short  # noqa: E402
from analysis.pareto import pareto_mask  # noqa: E402
from slm_tune.metrics import METRICS  # noqa: E402

COMPARISON_PANELS = (
    "Best validation loss", "Best validation bits per byte", "Parameters", "Training time",
    "Validation curves", "Training loss curves", "Quality vs training time", "Quality vs parameters",
)


def _evals(history: pd.DataFrame) -> pd.DataFrame:
    return history[history["kind"] == "eval"] if "kind" in history.columns else history


LOG_LOSS_SPAN = 5  # losses spanning more than this factor get a log axis: on a linear one a run that starts
# at ln(vocabulary) (10.8 nats for GPT-2's) leaves its last four fifths as a flat line along the bottom


def _loss_axis(ax, losses: pd.Series, label: str) -> str:
    """A log y axis when `losses` span more than LOG_LOSS_SPAN x; the axis label to use."""
    losses = pd.to_numeric(losses, errors="coerce")
    losses = losses[losses > 0]
    if len(losses) and losses.max() > LOG_LOSS_SPAN * losses.min():
        log_count_axis(ax, "y")
        return f"{label}, log scale"
    return label


def plot_training_losses(history: pd.DataFrame, title: str, path: Path) -> plt.Figure:
    """Training loss at every log interval, validation loss at every eval; one faint line per
    seed when repeated; a log axis when the losses span more than LOG_LOSS_SPAN x."""
    fig, ax = plt.subplots(figsize=(8, 5))
    seeds = sorted(history["seed"].dropna().unique()) if len(history) else []
    many = len(seeds) > 1
    for i, seed in enumerate(seeds or [None]):
        h = history if seed is None else history[history["seed"] == seed]
        h = h.sort_values("iteration")
        v = _evals(h)
        suffix = f" (seed {int(seed)})" if many else ""
        alpha = 0.35 if many else 1.0
        ax.plot(h["iteration"], h["train_loss"], color="tab:blue", alpha=alpha, lw=1.2,
                marker="o" if len(h) < 40 else None, ms=2.5,
                label=f"train{suffix}" if not many or i == 0 else None)
        ax.plot(v["iteration"], v["val_loss"], color="tab:orange", alpha=alpha, marker="o", ms=4,
                label=f"validation{suffix}" if not many or i == 0 else None)
    if many:
        train = history.groupby("iteration")["train_loss"].mean()
        val = _evals(history).groupby("iteration")["val_loss"].mean()
        ax.plot(train.index, train, color="tab:blue", lw=2.5, label=f"train, mean of {len(seeds)}")
        ax.plot(val.index, val, color="tab:orange", lw=2.5, marker="o", ms=4, label=f"validation, mean of {len(seeds)}")
    ax.set_xlabel("iteration")
    ax.set_ylabel(_loss_axis(ax, pd.concat([history.get(k, pd.Series(dtype=float)) for k in ("train_loss", "val_loss")]),
                             METRICS["val_loss"].axis_label.replace("validation ", "")))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
    return fig


CROWDED = 12  # more experiments than this (a search): no value on each bar, names only for the best
SHOWN = 5


def _bars(ax, names, values, errors, title, ylabel, fmt="{:.3f}", floor=None, zoom=False):
    fmt = fmt if callable(fmt) else fmt.format
    crowded = len(names) > CROWDED
    colors = plt.cm.tab10(np.arange(len(names)) % 10)
    ax.bar(names, values, yerr=errors if errors is not None and np.nansum(errors) > 0 else None,
           color=colors, capsize=4)
    for i, v in enumerate(values):
        if np.isfinite(v) and not crowded:
            ax.annotate(fmt(v), (i, v), ha="center", va="bottom", fontsize=8,
                        xytext=(0, 2), textcoords="offset points")
    finite = [v for v in values if np.isfinite(v)]
    if finite and zoom:  # losses: the differences, not the distance from zero
        low = min(finite + ([floor] if floor else []))
        ax.set_ylim(low * 0.9, max(finite) * 1.05)
    if floor:
        ax.axhline(floor, color="black", ls="--", lw=1, label=f"corpus entropy {floor:.3f}")
        ax.legend(fontsize=8, loc="upper left")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", rotation=90 if crowded else 35, labelsize=5 if crowded else 8)
    for label in ax.get_xticklabels():
        label.set_ha("center" if crowded else "right")
    ax.grid(axis="y", alpha=0.3)


def plot_comparison(summary: pd.DataFrame, history: pd.DataFrame, title: str, path: Path) -> plt.Figure:
    """The batch at a glance: eight panels, named in COMPARISON_PANELS (in order)."""
    summary = summary.sort_values("best_val_bpb", na_position="last").reset_index(drop=True)
    names = list(summary["experiment"])
    fig, axes = plt.subplots(2, 4, figsize=(22, 10))
    ax = axes.ravel()
    floor = summary["entropy_bpb"].dropna().unique() if "entropy_bpb" in summary else []
    floor = float(floor[0]) if len(floor) == 1 else None
    unit, scale = _bar_panels(ax[:4], summary, names, floor)
    crowded = len(names) > CROWDED
    named = set(names[:SHOWN]) if crowded else set(names)  # names are best first
    color = {n: plt.cm.tab10(i % 10) for i, n in enumerate(names)}
    _curve_panels(ax[4:6], history, names, named, color, floor, crowded)
    for a, col, label, x_scale in ((ax[6], "training_time_s", f"training time ({unit})", 1 / scale),
                                   (ax[7], "total_params", METRICS["total_params"].label, 1.0)):
        _tradeoff_panel(a, summary, col, x_scale, names, named, color, crowded)
        a.set(title=COMPARISON_PANELS[6 if col == "training_time_s" else 7], xlabel=label,
              ylabel=METRICS["best_val_bpb"].label)
    log_count_axis(ax[7])
    fig.suptitle(title, fontsize=14)
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
    return fig


def _top(values: pd.Series, scale: float = 1.0) -> float:
    """An axis's upper limit for these values: 15% above the largest, 1 when there is none."""
    top = pd.to_numeric(values, errors="coerce").max() / scale
    return float(top) * 1.15 if pd.notna(top) and top > 0 else 1.0


def _bar_panels(ax, summary: pd.DataFrame, names: list[str], floor: float | None) -> tuple[str, float]:
    """Losses, bits per byte, parameters and training time as bars; the time unit chosen."""
    std = lambda col: summary[f"{col}_std"].to_numpy(float) if f"{col}_std" in summary else None  # noqa: E731
    _bars(ax[0], names, summary["best_val_loss"].to_numpy(float), std("best_val_loss"),
          COMPARISON_PANELS[0], METRICS["best_val_loss"].unit, zoom=True)
    ci = summary["best_val_bpb_ci95"].to_numpy(float) if "best_val_bpb_ci95" in summary else None
    _bars(ax[1], names, summary["best_val_bpb"].to_numpy(float), ci if ci is not None else std("best_val_bpb"),
          COMPARISON_PANELS[1] + (" (95% intervals)" if ci is not None and np.isfinite(ci).any() else ""),
          METRICS["best_val_bpb"].unit + " (comparable across vocabularies)", floor=floor, zoom=True)
    _mark_reference(ax[1], summary)
    _bars(ax[2], names, summary["total_params"].to_numpy(float), None, COMPARISON_PANELS[2],
          METRICS["total_params"].label, fmt=_short)
    ax[2].set_ylim(0, _top(summary["total_params"]))
    minutes = bool(pd.to_numeric(summary["training_time_s"], errors="coerce").max() >= 120)
    unit, scale = ("minutes", 60.0) if minutes else ("seconds", 1.0)
    _bars(ax[3], names, summary["training_time_s"].to_numpy(float) / scale, None,
          COMPARISON_PANELS[3], unit, fmt="{:.1f}")
    ax[3].set_ylim(0, _top(summary["training_time_s"], scale))
    return unit, scale


def _mark_reference(ax, summary: pd.DataFrame) -> None:
    """The reference's bar outlined and its name marked; a verdict under each other name."""
    if "verdict" not in summary:
        return
    short = {"better": "better", "worse": "worse", "within noise": "~noise", "reference": "(reference)",
             "unfinished: no verdict": "(unfinished)"}
    labels = [f"{n}\n{short.get(v, '')}" for n, v in zip(summary["experiment"], summary["verdict"].fillna(""))]
    ax.set_xticks(range(len(labels)), labels)
    for patch, v in zip(ax.patches, summary["verdict"]):
        if v == "reference":
            patch.set_edgecolor("black")
            patch.set_linewidth(2.0)


def _curve_panels(ax, history: pd.DataFrame, names, named, color, floor, crowded: bool) -> None:
    """Validation bits per byte and training loss against iterations, a line per experiment."""
    for n in names:
        h = history[history["experiment"] == n]
        if not len(h):
            continue
        style = dict(color=color[n], label=n if n in named else None,
                     alpha=1.0 if n in named else 0.35, lw=1.6 if n in named else 0.8)
        val = _evals(h).groupby("iteration")["val_bpb"].mean()
        ax[0].plot(val.index, val, marker="o" if not crowded else None, ms=3, **style)
        train = h.groupby("iteration")["train_loss"].mean()  # every report: log intervals and evals
        ax[1].plot(train.index, train, marker="o" if len(train) < 40 and not crowded else None, ms=3, **style)
    if floor:
        ax[0].axhline(floor, color="black", ls="--", lw=1, label="corpus entropy")
    ax[0].set(title=COMPARISON_PANELS[4], xlabel="iteration", ylabel=METRICS["val_bpb"].label)
    ax[1].set(title=COMPARISON_PANELS[5], xlabel="iteration",
              ylabel=_loss_axis(ax[1], history.get("train_loss", pd.Series(dtype=float)), METRICS["train_loss"].axis_label))
    for a in ax:
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=8, title=f"best {SHOWN} of {len(names)}" if crowded else None, title_fontsize=8)
        a.grid(alpha=0.3)


def _tradeoff_panel(a, summary: pd.DataFrame, col: str, scale: float, names, named, color, crowded: bool) -> None:
    """Best bits per byte against a cost (time or parameters), with the Pareto front."""
    ok = summary[["best_val_bpb", col]].notna().all(axis=1).to_numpy()
    x = summary[col].to_numpy(float)[ok] * scale
    y = summary["best_val_bpb"].to_numpy(float)[ok]
    labels = [n for n, k in zip(names, ok) if k]
    errors = summary["best_val_bpb_ci95"].to_numpy(float)[ok] if "best_val_bpb_ci95" in summary else np.full(len(x), np.nan)
    for xi, yi, n, err in zip(x, y, labels, errors):
        a.scatter(xi, yi, color=color[n], s=50 if not crowded else 20, zorder=3)
        if np.isfinite(err):
            a.errorbar(xi, yi, yerr=err, color=color[n], capsize=3, lw=1, zorder=2)
        if n in named:
            a.annotate(n, (xi, yi), fontsize=8, xytext=(4, 4), textcoords="offset points")
    if len(x):
        on_front = pareto_mask(pd.DataFrame({col: x, "best_val_bpb": y}), [col, "best_val_bpb"])
        front = np.flatnonzero(on_front)[np.argsort(x[on_front], kind="stable")]
        a.step(x[front], y[front], where="post", color="black", lw=1, ls="--", label="Pareto front")
        a.scatter(x[front], y[front], s=160, facecolors="none", edgecolors="black", zorder=2)
        a.legend(fontsize=8)
    a.grid(alpha=0.3)


def log_count_axis(a, which: str = "x") -> None:
    """A log-scale axis of counts (or losses) labelled 1, 2 and 5 per decade in short form (0.5, 200k, 1M):
    matplotlib's default labels every minor tick when the values span less than a decade, and
    those labels overlap."""
    axis = a.xaxis if which == "x" else a.yaxis
    (a.set_xscale if which == "x" else a.set_yscale)("log")
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: _short(v)))
    axis.set_minor_formatter(NullFormatter())
