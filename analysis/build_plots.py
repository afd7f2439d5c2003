"""The plot of a build's report: the fitted frontier with the chosen shape, the sweep's runs and the
measured target (left), and what each stage spent (right)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_build(report: dict[str, Any], path: Path) -> Path:
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 2]})
    _frontier(left, report)
    _spend(right, report)
    fig.suptitle(f"build at {report['budget']:.3g} FLOPs", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
    return Path(path)


def _frontier(ax, report: dict[str, Any]) -> None:
    c, m = report["choice"], report["measured"]
    by_depth: dict[int, list[dict]] = {}
    for row in c["candidates"]:
        by_depth.setdefault(row["n_layer"], []).append(row)
    for depth, rows in sorted(by_depth.items()):
        rows.sort(key=lambda r: r["N"])
        ax.plot([r["N"] for r in rows], [r["predicted"] for r in rows], lw=1.2, label=f"fit, {depth} layers")
    shape = c["shape"]
    if c["predicted"] is not None:
        ax.plot(shape["non_embedding_params"], c["predicted"], "*", ms=16, color="black", label="chosen (predicted)")
    if m.get("runs"):
        ax.plot([shape["non_embedding_params"]] * len(m["runs"]), m["runs"], "o", mfc="none", color="crimson",
                ms=9, label=f"target, measured ({len(m['runs'])} run(s))")
    for run in report.get("fit", {}).get("runs", []):
        ax.plot(run["N"], run["L"], "s", color="grey", alpha=0.4 + 0.6 * min(1.0, run["D"] / _max_d(report)), ms=6)
    ax.plot([], [], "s", color="grey", label="sweep runs (darker: more tokens)")
    ax.set_xscale("log")
    ax.set_xlabel("non-embedding parameters N")
    ax.set_ylabel(m["metric"])
    how = "the fitted law" if c["how"] == "fit" else "fallback (the fit refused): the sweep's best size"
    ax.set_title(f"the compute left ({c['compute_left']:.3g} FLOPs) by target shape; chosen by {how}", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(alpha=0.3)


def _max_d(report: dict[str, Any]) -> float:
    return max((r["D"] for r in report.get("fit", {}).get("runs", [])), default=1.0)


def _spend(ax, report: dict[str, Any]) -> None:
    sp = report["spent"]
    names = ["search", "sweep", "target"]
    values = [sp[k] for k in names]
    for name, r in report.get("simple", {}).items():
        names.append(name.removeprefix("build_simple_") + " (1 run)")
        values.append(r["flops_per_run"])
    bars = ax.barh(names, values, color=["#4c72b0", "#55a868", "#c44e52"] + ["#8c8c8c"] * (len(names) - 3))
    for bar, v in zip(bars, values):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {v / report['budget']:.0%}", va="center",
                fontsize=8)
    ax.axvline(report["budget"], color="black", ls="--", lw=1)
    ax.set_xlabel("training FLOPs (dashed: the budget)")
    ax.set_title("what each stage spent", fontsize=9)
    ax.invert_yaxis()
