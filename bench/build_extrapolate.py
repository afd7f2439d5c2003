#!/usr/bin/env python
"""What a fallback that extrapolates each sweep size by tokens would have chosen and predicted, read
from stored builds (no training): issue 41's suggested fallback, tried on the benchmark's sweeps.

    python bench/build_extrapolate.py /work/build_runs/storyworld2_1e+13 /work/build_runs/sotu_1e+13 ...

For each build directory (a `bench/build.py` work directory or a `studies.py build --output-dir`),
the sweep's 9 runs (3 sizes x 3 token counts, second-half val bits per byte, the fit's metric) are
fitted two ways, each size then extrapolated to the tokens the compute left buys it
(experiments/build_report.json's compute_left / the size's FLOPs per token):

- shared: L_s(D) = c_s + B / D^beta, one B and beta for every size and a constant per size (the
  scaling law's form with its N term left free per size: 5 unknowns for 9 runs); c_s >= E where the
  corpus's entropy is known (storyworld), >= 0 elsewhere;
- per size: L_s(D) = E + B_s / D^beta_s through each size's 3 runs (E the entropy, 0 elsewhere).

Robust least squares on log L (scipy's least_squares, Huber 0.01, as analysis/scaling.py), several
starts. It prints each size's runs and predictions, the size each form would choose, the size the
build chose (its fallback: the size whose longest run ended lowest) and the target's measured
mean over its seeds, with the chosen size's prediction error. A last line does the same for the
build's own law L(N, D) (the fit the build refuses when the sweep leaves a parameter undetermined):
the shape it would have chosen and its prediction at the shape the build trained.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METRIC = "best_val_bpb_context"


def sweep_runs(work: Path) -> list[dict]:
    """The sweep's finished runs: size, tokens, loss, the entropy and the size's FLOPs per token."""
    from slm_tune.config import ExperimentConfig
    from slm_tune.model.counts import flops_per_token, tokens_per_iter

    rows = []
    for path in sorted((work / "experiments").glob("build_sweep_*_results.json")):
        r = json.loads(path.read_text())
        if r.get("status") != "finished" or not math.isfinite(r.get(METRIC) or math.nan):
            continue
        c = ExperimentConfig(**r["config"])
        rows.append({"size": r["experiment"].split("_")[2], "shape": f"{c.n_layer}x{c.n_embd}",
                     "D": float(r["iterations"] * tokens_per_iter(c)), "L": float(r[METRIC]),
                     "E": r.get("entropy_bpb"), "flops_per_token": float(flops_per_token(c))})
    return rows


def _least_squares(residuals, starts, lower, upper):
    """The lowest-cost of scipy's robust fits from each start (analysis/scaling.py's loss and scale)."""
    from scipy.optimize import least_squares

    from analysis.scaling import HUBER_SCALE

    fits = [least_squares(residuals, np.clip(x0, np.add(lower, 1e-9), np.subtract(upper, 1e-9)),
                          bounds=(lower, upper), loss="huber", f_scale=HUBER_SCALE, max_nfev=4000) for x0 in starts]
    return min(fits, key=lambda r: r.cost).x


def fit_shared(rows: list[dict], floor: float) -> tuple[dict, str]:
    """c_s + B / D^beta: each size's c_s (>= floor), one B and beta; a predictor per size, and the
    fit's beta with the sizes whose c_s sits at the floor (there the form is a pure power law)."""
    sizes = sorted({r["size"] for r in rows})
    at = np.array([sizes.index(r["size"]) for r in rows])
    d, loss = np.array([r["D"] for r in rows]), np.array([r["L"] for r in rows])
    k = len(sizes)

    def unpack(x):
        return floor + np.exp(x[:k]), math.exp(x[k]), x[k + 1]

    def residuals(x):
        c, b, beta = unpack(x)
        return np.log(c[at] + b * d ** -beta) - np.log(loss)

    starts = [[math.log(max(loss.min() * f - floor, 1e-4))] * k + [math.log(np.median(loss)) + beta * math.log(np.median(d)), beta]
              for f in (0.3, 0.7) for beta in (0.2, 0.5, 1.0)]
    x = _least_squares(residuals, starts, [-30.0] * k + [-30.0, 0.0], [10.0] * k + [80.0, 3.0])
    c, b, beta = unpack(x)
    at_floor = [s for s, v in zip(sizes, x[:k]) if v < -10]  # c_s - floor below 5e-5
    note = f"beta {beta:.2f}" + (f"; c at the floor for {', '.join(at_floor)}" if at_floor else "")
    return {s: (lambda dd, ci=c[i]: float(ci + b * dd ** -beta)) for i, s in enumerate(sizes)}, note


def fit_per_size(rows: list[dict], floor: float) -> tuple[dict, str]:
    """floor + B_s / D^beta_s through each size's runs; a predictor per size, and each beta_s."""
    out, betas = {}, []
    for s in sorted({r["size"] for r in rows}):
        d = np.array([r["D"] for r in rows if r["size"] == s])
        loss = np.array([r["L"] for r in rows if r["size"] == s])

        def residuals(x, d=d, loss=loss):
            return np.log(floor + math.exp(x[0]) * d ** -x[1]) - np.log(loss)

        starts = [[math.log(max(np.median(loss) - floor, 1e-4)) + beta * math.log(np.median(d)), beta] for beta in (0.2, 0.5, 1.0)]
        lb, beta = _least_squares(residuals, starts, [-30.0, 0.0], [80.0, 3.0])
        out[s] = lambda dd, lb=lb, beta=beta: float(floor + math.exp(lb) * dd ** -beta)
        betas.append(f"{s} {beta:.2f}")
    return out, "beta " + ", ".join(betas)


def report(work: Path) -> list[str]:
    rows = sweep_runs(work)
    built = json.loads((work / "experiments" / "build_report.json").read_text())
    left, shape = built["choice"]["compute_left"], built["choice"]["shape"]
    floor = rows[0]["E"] if rows[0]["E"] is not None else 0.0
    measured = built["measured"]["mean"] if built.get("measured") else None
    chosen = f"{shape['n_layer']}x{shape['n_embd']}"
    lines = [f"\n{work.name}: compute left {left:.3g} FLOPs, floor {floor:.4f}; the build chose {chosen} "
             f"({built['choice']['how'].split(':')[0]}), measured {measured if measured is None else round(measured, 4)}"]
    sizes = {s: [r for r in rows if r["size"] == s] for s in sorted({r["size"] for r in rows})}
    tokens = {s: left / mine[0]["flops_per_token"] for s, mine in sizes.items()}  # what the compute left buys each
    fits = {"shared": fit_shared(rows, floor), "per size": fit_per_size(rows, floor)}
    for s, mine in sizes.items():
        preds = "  ".join(f"{name} {f[s](tokens[s]):.4f}" for name, (f, _) in fits.items())
        runs = " ".join(f"{r['L']:.4f}" for r in mine)
        lines.append(f"  {s} {mine[0]['shape']:<6} runs {runs} -> {tokens[s]:.3g} tokens "
                     f"({tokens[s] / max(r['D'] for r in mine):.0f}x its longest run): {preds}")
    for name, (f, note) in fits.items():
        pick = min(f, key=lambda s: f[s](tokens[s]))
        line = f"  {name} ({note}): would choose {pick} {sizes[pick][0]['shape']}"
        at_chosen = next((s for s in f if sizes[s][0]["shape"] == chosen), None)
        if measured is not None and at_chosen is not None:
            pred = f[at_chosen](tokens[at_chosen])
            line += f"; at the build's {chosen} it predicts {pred:.4f}, {100 * (pred - measured) / measured:+.0f}% of the measured"
        lines.append(line)
    lines.append(law_line(work, built, measured, chosen))
    return lines


def law_line(work: Path, built: dict, measured: float | None, chosen: str) -> str:
    """The build's own scaling law of the same sweep (workflows.build.fit_sweep), used as if the
    build had not refused it: the shape it would choose for the compute left (build_plan.choose_target
    over the build's candidates, at the build's --min-iters and rate rule) and what it predicts at
    the shape the build trained."""
    from analysis.transfer import best_config, study_trials
    from workflows import build_plan as plan
    from workflows.build import STUDIES, fit_sweep

    fit, refused = fit_sweep(study_trials(work, STUDIES["sweep"]))
    if fit is None:
        return f"  the law: no fit ({refused})"
    proxy = best_config(work, STUDIES["search"], missing="the build's search has no finished trial")
    min_iters = json.loads((work / "experiments" / "build_plan.json").read_text())["min_iters"]
    pick = plan.choose_target(proxy, built["choice"]["compute_left"], fit.predict, fit.band, min_iters=min_iters,
                              exponent=built["proxy"].get("horizon_exponent", 0.0))
    shape = built["choice"]["shape"]
    line = (f"  the law ({'refused: ' + refused if refused else 'not refused'}): would choose "
            f"{pick.config.n_layer}x{pick.config.n_embd} for {pick.config.max_iters} iterations, predicting "
            f"{pick.predicted:.4f} (95% {pick.interval[0]:.4f} to {pick.interval[1]:.4f})")
    if measured is not None:
        if fit.runs.metric != built["measured"]["metric"]:
            return line + f"; fitted on {fit.runs.metric}, measured on {built['measured']['metric']}: not compared"
        n, d = shape["non_embedding_params"], shape["tokens"]
        pred, (lo, hi) = float(fit.predict(n, d)), (float(x) for x in fit.band(n, d))
        line += (f"; at the build's {chosen} it predicts {pred:.4f} (95% {lo:.4f} to {hi:.4f}), "
                 f"{100 * (pred - measured) / measured:+.0f}% of the measured")
    return line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work", type=Path, nargs="+", help="build directories with experiments/build_report.json")
    args = ap.parse_args()
    for work in args.work:
        print("\n".join(report(work)))


if __name__ == "__main__":
    main()
