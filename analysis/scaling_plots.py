"""The scaling fit's figure: loss against model size for each token budget, and against compute,
with the fitted law, its bootstrap band, the runs as points and the entropy floor."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from analysis.scaling import ScalingFit  # noqa: E402
from slm_tune.describe import short_number  # noqa: E402
from slm_tune.metrics import METRICS  # noqa: E402


def plot_scaling(fit: ScalingFit, path: Path, budget: dict | None = None) -> None:
    t = fit.runs.table
    held = fit.held_out or {}
    held_n = held.get("model_N")
    fig, (ax_n, ax_c) = plt.subplots(1, 2, figsize=(14, 5.8))
    budgets = sorted(t["D"].unique())
    colors = plt.get_cmap("viridis")(np.linspace(0.1, 0.85, len(budgets)))
    n_grid = np.geomspace(t["N"].min() / 1.5, t["N"].max() * 1.5, 120)
    for d, color in zip(budgets, colors):
        runs = t[t["D"] == d]
        lo, hi = fit.band(n_grid, d)
        ax_n.fill_between(n_grid, lo, hi, color=color, alpha=0.18, lw=0)
        ax_n.plot(n_grid, fit.predict(n_grid, d), color=color, lw=1.8, label=f"D = {short_number(d)} tokens")
        fitted = runs[runs["N"] != held_n]
        ax_n.scatter(fitted["N"], fitted["L"], color=color, s=36, zorder=3, edgecolors="black", linewidths=0.5)
        out = runs[runs["N"] == held_n]
        if len(out):
            ax_n.scatter(out["N"], out["L"], facecolors="none", edgecolors=color, s=70, linewidths=1.8, zorder=3)
    if held:  # the held-out prediction: fit without the largest model
        for r in held["runs"]:
            ax_n.plot([r["N"]] * 2, [r["observed"], r["predicted"]], color="C3", lw=1, zorder=2)
            ax_n.scatter([r["N"]], [r["predicted"]], marker="x", color="C3", s=50, zorder=4)
        ax_n.scatter([], [], marker="x", color="C3", label="held out: predicted without the largest model")
        ax_n.scatter([], [], facecolors="none", edgecolors="0.3", label="held-out runs (observed)")
    e = fit.params["E"]
    for ax in (ax_n, ax_c):
        ax.axhline(e, color="black", ls="--", lw=1, label=f"E = {e:.3f} bpb" + (" (corpus entropy)" if fit.fixed_E else " (fitted)"))
        ax.set_xscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.set_ylabel(METRICS[fit.runs.metric].label + ("" if fit.runs.metric == "best_val_bpb_context"
                                                          else ", whole windows"))
    ax_n.set_xlabel("non-embedding parameters N")
    ax_n.set_title("Loss against model size, one curve per token budget")
    ax_n.legend(fontsize=8)

    _compute_panel(fig, ax_c, fit, budget)
    ax_c.set_xlabel("training compute C = 6 N D (FLOPs)")
    ax_c.set_title("Loss against compute")
    ax_c.legend(fontsize=8)
    fig.suptitle(f"Scaling fit: {len(t)} runs on {fit.runs.dataset} ({fit.runs.tokenizer}); "
                 f"alpha = {fit.params['alpha']:.3f}, beta = {fit.params['beta']:.3f}", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=105, format="png")
    plt.close(fig)


def _compute_panel(fig, ax_c, fit: ScalingFit, budget: dict | None) -> None:
    """The runs against compute, and the fitted law's compute-optimal frontier where the runs
    determine it."""
    t = fit.runs.table
    sc = ax_c.scatter(t["C"], t["L"], c=np.log10(t["N"]), cmap="plasma", s=40, edgecolors="black", linewidths=0.5,
                      zorder=3)
    cbar = fig.colorbar(sc, ax=ax_c, pad=0.01)
    cbar.set_label("log10 N")
    c_max = max(t["C"].max(), budget["C"] if budget else 0) * 2
    c_grid = np.geomspace(t["C"].min() / 2, c_max, 120)
    blocking = [k for k in ("A", "alpha", "B", "beta") if k in fit.undetermined]
    if blocking:  # no frontier the runs cannot support
        ax_c.text(0.5, 0.5, f"no compute-optimal frontier:\nthese runs do not determine {', '.join(blocking)}",
                  transform=ax_c.transAxes, ha="center", va="center", fontsize=10, color="C3")
    else:
        frontier = np.array([fit.optimal(c)["L"] for c in c_grid])
        ax_c.plot(c_grid, frontier, color="C0", lw=2, label="compute-optimal (fitted)")
    if fit.boot and not blocking:
        spread = np.array([[fit.optimal(c, b)["L"] for c in c_grid] for b in fit.boot])
        ax_c.fill_between(c_grid, np.quantile(spread, 0.025, axis=0), np.quantile(spread, 0.975, axis=0),
                          color="C0", alpha=0.18, lw=0, label="95% bootstrap band")
    if budget and "refused" not in budget:
        ax_c.scatter([budget["C"]], [budget["L"]], marker="*", s=220, color="C3", zorder=4,
                     label=f"budget {budget['C']:.2g}: N = {short_number(budget['N'])}, D = {short_number(budget['D'])}")
