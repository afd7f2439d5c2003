"""The coordinate check's figure: for sp (top) and muP (bottom), one panel per training step, each
layer's mean |output| against width on log-log axes. Flat lines are what muP promises."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

NAMES = {"sp": "standard parametrization (sp)", "mup": "muP"}


def plot_coord_check(rows: list[dict], path: Path, lr: float) -> None:
    steps = sorted({r["step"] for r in rows})
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    colors = dict(zip(layers, plt.get_cmap("viridis")(np.linspace(0, 0.9, len(layers)))))
    fig, axes = plt.subplots(2, len(steps), figsize=(3.2 * len(steps), 6.4), sharex=True, squeeze=False)
    for row, parametrization in enumerate(("sp", "mup")):
        for col, step in enumerate(steps):
            ax = axes[row][col]
            for layer in layers:
                pts = sorted((r["width"], r["mean_abs"]) for r in rows
                             if r["parametrization"] == parametrization and r["step"] == step and r["layer"] == layer)
                ax.plot(*zip(*pts), marker="o", ms=3, lw=1.4, color=colors[layer],
                        ls="--" if layer == "logits" else "-", label=layer)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{NAMES[parametrization]}, step {step}", fontsize=9)
            if row == 1:
                ax.set_xlabel("width (n_embd)")
            if col == 0:
                ax.set_ylabel("mean |output|")
            ax.grid(alpha=0.3, which="both")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.suptitle(f"Coordinate check: each layer's output against width, Adam at lr {lr:g} "
                 "(flat under muP; under sp it grows with width)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
