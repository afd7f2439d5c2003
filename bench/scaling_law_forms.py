#!/usr/bin/env python
"""Does another form of the scaling law predict a held-out model better? On the stored runs of
bench/storyworld_capacity.py (each run at the best of its rates tried, seed 1337, the scaling
family's five sizes), the largest size is predicted from the four smaller by two laws, both with E
fixed at the corpus's entropy:

    additive   L = E + A / N^alpha + B / D^beta             (Hoffmann et al. 2022; analysis/scaling.py)
    joint      L = E + ((N_c / N)^(alpha_N / alpha_D) + D_c / D)^alpha_D   (Kaplan et al. 2020, eq. 1.5)

The joint law couples N and D (a larger model gains more from more tokens); the additive one gives
every size the same gain in D. Both are fitted the same way (least squares on log L, Huber loss at
analysis.scaling.HUBER_SCALE, several starts). It prints, for each window of budgets, each law's
fitted exponents and the held-out model's signed error (predicted minus measured, as a share of
its gap to the floor) at each budget, and plots the held-out model's runs with both laws'
predictions (bench/scaling_law_forms.png). No training: it reads the stored JSON (under a minute).

    python bench/scaling_law_forms.py
    python bench/scaling_law_forms.py --windows 600,1200,2400,4800 --plot-window 600,1200,2400,4800
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

CORPUS = "storyworld:version=2"
METRIC = "best_val_bpb_context"
WINDOWS = ("600,1200,2400", "600,1200,2400,4800", "1200,2400,4800", "2400,4800", "300,600,1200,2400,4800")


def joint_law(x, n, d, entropy: float):
    """Kaplan et al.'s L(N, D) with E added: x = (ln N_c, alpha_N / alpha_D, ln D_c, alpha_D)."""
    ln_nc, ratio, ln_dc, alpha_d = x
    n, d = np.asarray(n, float), np.asarray(d, float)
    return entropy + (np.exp(ratio * (ln_nc - np.log(n))) + np.exp(ln_dc - np.log(d))) ** alpha_d


def fit_joint(n, d, loss, entropy: float) -> np.ndarray:
    """The joint law's best fit from a grid of starts (the same loss as analysis.scaling's fit)."""
    from scipy.optimize import least_squares

    from analysis.scaling import HUBER_SCALE

    n, d, loss = (np.asarray(v, float) for v in (n, d, loss))
    best = None
    for ratio in (0.3, 1.0, 2.0):
        for alpha_d in (0.1, 0.3, 0.6):
            for ln_nc in (np.log(n).mean() - 4, np.log(n).mean(), np.log(n).mean() + 4):
                for ln_dc in (np.log(d).mean() - 4, np.log(d).mean(), np.log(d).mean() + 4):
                    try:
                        r = least_squares(lambda x: np.log(np.maximum(joint_law(x, n, d, entropy), 1e-12)) - np.log(loss),
                                          [ln_nc, ratio, ln_dc, alpha_d], bounds=([-20, 0.01, -20, 0.01], [80, 10, 80, 3]),
                                          loss="huber", f_scale=HUBER_SCALE, x_scale="jac", max_nfev=3000)
                    except ValueError:  # a start the solver cannot use: the others decide
                        continue
                    if best is None or r.cost < best.cost:
                        best = r
    if best is None:
        sys.exit("the joint law's fit did not converge from any start on these runs")
    return best.x


def family_runs(rows: list[dict], budgets: list[int]) -> list[dict]:
    """The scaling family's finished seed-1337 runs on CORPUS at these budgets, each at its best rate."""
    from search_spaces.scaling import SIZES
    from storyworld_capacity import best_rate

    read = [r for r in rows if r["iters"] in budgets and r["corpus"] == CORPUS and r["seed"] == 1337]
    return [r for r in best_rate(read, METRIC) if r["size"] in {s[0] for s in SIZES}]


def held_out(runs: list[dict]) -> dict:
    """Both laws fitted without the largest size; their predictions of its runs, shortest first."""
    from analysis.scaling import law
    from analysis.scaling import _solve as solve_additive
    import pandas as pd

    entropy = runs[0]["entropy_bpb"]
    table = pd.DataFrame({"N": [float(r["non_embedding_params"]) for r in runs],
                          "D": [float(r["tokens"]) for r in runs], "L": [float(r[METRIC]) for r in runs]})
    rest, big = table[table["N"] < table["N"].max()], table[table["N"] == table["N"].max()].sort_values("D")
    additive, _ = solve_additive(rest, entropy)
    joint = fit_joint(rest["N"], rest["D"], rest["L"], entropy)
    predicted = {"additive": law(additive, big["N"], big["D"]), "joint": joint_law(joint, big["N"], big["D"], entropy)}
    return {"entropy": entropy, "N": float(big["N"].iloc[0]), "D": big["D"].to_numpy(), "L": big["L"].to_numpy(),
            "predicted": predicted, "exponents": {"additive": (additive["alpha"], additive["beta"]),
                                                  "joint": (joint[1] * joint[3], joint[3])}}


def lines(result: dict, window: str) -> list[str]:
    gap = result["L"] - result["entropy"]
    out = [f"budgets {window} (iterations): {len(result['D'])} runs of the held-out {result['N'] / 1e6:.2f}M model"]
    for name, pred in result["predicted"].items():
        a, b = result["exponents"][name]
        errors = " ".join(f"{100 * e + 0.0:+.1f}%" for e in np.round((np.asarray(pred) - result["L"]) / gap, 3))
        out.append(f"  {name:<8} alpha(N) {a:.2f} beta(D) {b:.2f}  held-out error by budget, shortest first: {errors}")
    return out


def plot(result: dict, window: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(result["D"], result["L"] - result["entropy"], "ko", label="measured (second halves)")
    for style, (name, pred) in zip(("C0-", "C1--"), result["predicted"].items()):
        ax.plot(result["D"], np.asarray(pred) - result["entropy"], style, marker="x", label=f"{name} law, fitted without it")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("val bits per byte minus the floor")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"the {result['N'] / 1e6:.1f}M model predicted from the four smaller sizes\n"
                 f"storyworld v2, budgets {window.replace(',', ', ')} iterations,\n"
                 "each run at the best of its rates tried, one seed", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "bench" / "storyworld_capacity_rates.json")
    parser.add_argument("--windows", nargs="+", default=list(WINDOWS), help="comma-separated budgets (iterations)")
    parser.add_argument("--plot-window", default="600,1200,2400,4800")
    parser.add_argument("--plot", type=Path, default=ROOT / "bench" / "scaling_law_forms.png")
    args = parser.parse_args()
    rows = json.loads(args.runs.read_text())
    for window in dict.fromkeys([*args.windows, args.plot_window]):
        result = held_out(family_runs(rows, [int(b) for b in window.split(",")]))
        if window in args.windows:
            print("\n".join(lines(result, window)))
        if window == args.plot_window:
            plot(result, window, args.plot)
    print(f"\n{args.plot}")


if __name__ == "__main__":
    main()
