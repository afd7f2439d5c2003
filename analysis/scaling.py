"""Scaling laws: fit L(N, D) = E + A / N^alpha + B / D^beta to stored runs, and predict.

N is a run's non-embedding parameter count, D the tokens it trained on, L its best validation
bits per byte (comparable across vocabularies, and what storyworld's entropy floor is in). L is
measured on the second half of each validation window (`best_val_bpb_context`), where every
prediction sees at least half a block before it: averaged over whole windows the first tokens,
predicted from little or no context, lift the floor of the loss well above the corpus's entropy
(0.24 against 0.186 for a model whose late positions reach 0.192), so a law whose E is that
entropy would be wrong by a constant. Runs stored before this metric existed are fitted on
whole-window `best_val_bpb`, and the fit says so. The
compute of a run is C = 6 N D (Kaplan et al.'s estimate with non-embedding N; attention and the
output layer are left out, so C is a little under the model's own FLOPs per token x D).

E is the irreducible loss. On storyworld it is known exactly (the corpus's entropy, stored with
every run), so it is fixed there and only A, alpha, B, beta are fitted; elsewhere E is fitted
too. The fit is robust least squares on log L (scipy's least_squares, Huber loss, several
starting points), with bootstrap intervals (runs resampled), and a held-out check: fit without
the largest model, predict its runs.

    from analysis import find_runs, load_runs
    from analysis.scaling import fit_scaling, scaling_runs
    trials, _ = load_runs(find_runs(".", ["scaling"]))
    fit = fit_scaling(scaling_runs(trials))      # fit.params, fit.intervals, fit.predict(N, D)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from slm_tune.errors import UserError
from slm_tune.metrics import SCALING_METRICS, get_metric

PARAMS = ("E", "A", "alpha", "B", "beta")
METRICS = SCALING_METRICS  # the first that every run has (slm_tune/metrics.py)
HUBER_SCALE = 0.01  # on log L: residuals beyond 1% count linearly, so one bad run cannot drag the fit


@dataclass
class ScalingRuns:
    """The runs a fit uses: N, D, L (bits per byte), the entropy floor when known, and what was
    left out."""

    table: pd.DataFrame  # experiment, N, D, L, C
    entropy: float | None
    left_out: list[dict[str, Any]] = field(default_factory=list)
    dataset: str | None = None
    tokenizer: str | None = None
    metric: str = METRICS[0]
    metric_note: str = ""  # why the fit is not on the context metric, when it was not asked for


def choose_metric(trials: pd.DataFrame, metric: str | None = None) -> str:
    """`metric`, or the first of METRICS that every run reports (older runs lack the context one)."""
    if metric is not None:
        return get_metric(metric, METRICS).name
    for name in METRICS:
        if name in trials and pd.to_numeric(trials[name], errors="coerce").notna().all():
            return name
    return METRICS[-1]


def scaling_runs(trials: pd.DataFrame, metric: str | None = None) -> ScalingRuns:
    """The stored trials (analysis.load's table) as fit input, or a one-line error."""
    if trials.empty:
        raise UserError("no stored runs to fit; run a study first, e.g. `python studies.py scaling`")
    mixed = [(col, sorted(set(trials[col].dropna().astype(str)))) for col in ("dataset", "tokenizer")]
    for col, values in mixed:
        if len(values) > 1:
            what = "corpora" if col == "dataset" else "vocabularies"
            raise UserError(f"the runs mix {what} ({', '.join(values)}): a scaling law holds for one corpus and "
                            "one vocabulary; fit one study with --study NAME (e.g. --study scaling)")
    asked, metric = metric, choose_metric(trials, metric)
    note = ("" if asked or metric == METRICS[0] else
            f"not every run reports {METRICS[0]} (runs from before it), so every run is fitted on {metric}")
    rows, left_out = [], []
    for _, t in trials.iterrows():
        config = t["config"] if isinstance(t.get("config"), dict) else {}
        loss = pd.to_numeric(pd.Series([t.get(metric)]), errors="coerce").iloc[0]
        n = pd.to_numeric(pd.Series([t["non_embedding_params"]]), errors="coerce").iloc[0]
        tokens = (t["iterations"] or 0) * config.get("batch_size", 0) * config.get("block_size", 0)
        if not (np.isfinite(loss) and np.isfinite(n) and n > 0 and tokens > 0):
            left_out.append({"experiment": t["experiment"], "why": "no finite loss" if not np.isfinite(loss)
                             else "no parameter or token count"})
            continue
        se = pd.to_numeric(pd.Series([t.get(f"{metric}_se")]), errors="coerce").iloc[0]
        rows.append({"experiment": t["experiment"], "N": float(n), "D": float(tokens), "L": float(loss),
                     "C": 6.0 * float(n) * float(tokens), "L_se": float(se)})
    table = pd.DataFrame(rows, columns=["experiment", "N", "D", "L", "C", "L_se"])
    entropy = pd.to_numeric(trials["entropy_bpb"], errors="coerce").dropna()
    return ScalingRuns(table, float(entropy.iloc[0]) if len(entropy) else None, left_out,
                       mixed[0][1][0] if mixed[0][1] else None, mixed[1][1][0] if mixed[1][1] else None, metric, note)


def law(params: dict[str, float], n, d):
    """L(N, D) = E + A / N^alpha + B / D^beta."""
    n, d = np.asarray(n, dtype=float), np.asarray(d, dtype=float)
    return params["E"] + params["A"] * n ** -params["alpha"] + params["B"] * d ** -params["beta"]


@dataclass
class ScalingFit:
    params: dict[str, float]
    fixed_E: bool
    runs: ScalingRuns
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    boot: list[dict[str, float]] = field(default_factory=list)
    held_out: dict[str, Any] | None = None
    cost: float = 0.0
    undetermined: dict[str, str] = field(default_factory=dict)  # parameter -> what runs would pin it down

    def predict(self, n, d):
        return law(self.params, n, d)

    def band(self, n, d, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """The bootstrap fits' spread of the prediction at (n, d)."""
        if not self.boot:
            p = self.predict(n, d)
            return p, p
        preds = np.array([law(b, n, d) for b in self.boot])
        lo = (1 - level) / 2
        return np.quantile(preds, lo, axis=0), np.quantile(preds, 1 - lo, axis=0)

    def optimal(self, compute: float, params: dict[str, float] | None = None) -> dict[str, float]:
        """The compute-optimal N and D for C = 6 N D (minimise L on that curve) and the loss there."""
        p = params or self.params
        a, b = p["alpha"], p["beta"]
        g = (a * p["A"] / (b * p["B"])) ** (1.0 / (a + b))
        n = g * (compute / 6.0) ** (b / (a + b))
        d = compute / (6.0 * n)
        return {"N": float(n), "D": float(d), "L": float(law(p, n, d))}

    def budget(self, compute: float) -> dict[str, Any]:
        """The compute-optimal N, D and loss at C, with intervals; refused (with why) when the runs
        do not determine the exponents and coefficients that the optimum depends on."""
        if not (isinstance(compute, (int, float)) and math.isfinite(compute) and compute > 0):
            raise UserError(f"--budget {compute!r} must be a positive number of FLOPs, e.g. 1e15")
        blocking = [k for k in ("A", "alpha", "B", "beta") if k in self.undetermined]
        if blocking:
            return {"C": float(compute), "refused": f"these runs do not determine {', '.join(blocking)}, "
                                                     "so they cannot place a compute-optimal N and D"}
        best = self.optimal(compute)
        spread = [self.optimal(compute, b) for b in self.boot]
        out = {"C": float(compute), **best}
        for key in ("N", "D", "L"):
            values = [s[key] for s in spread if math.isfinite(s[key])]
            if values:
                out[f"{key}_interval"] = [float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "law": "L(N, D) = E + A / N^alpha + B / D^beta; L in bits per byte, N non-embedding parameters, "
                   "D training tokens, C = 6 N D", "metric": self.runs.metric, "metric_note": self.runs.metric_note,
            "params": self.params, "E_fixed_to_entropy": self.fixed_E,
            "intervals_95": {k: list(v) for k, v in self.intervals.items()}, "bootstrap_fits": len(self.boot),
            "held_out": self.held_out, "undetermined": self.undetermined, "dataset": self.runs.dataset, "tokenizer": self.runs.tokenizer,
            "runs": self.runs.table.assign(predicted=self.predict(self.runs.table["N"], self.runs.table["D"]))
                                   .to_dict("records"),
            "left_out": self.runs.left_out,
        }


def _unknowns(fixed_e: bool) -> int:
    return 4 if fixed_e else 5


def _solve(table: pd.DataFrame, entropy: float | None, start: dict[str, float] | None = None) -> tuple[dict[str, float], float]:
    """Least squares on log L with a Huber loss from several starting points; the best solution."""
    from scipy.optimize import least_squares

    n, d, loss = (table[k].to_numpy(float) for k in ("N", "D", "L"))
    fixed = entropy is not None
    floor_max = max(loss.min() * 0.999, 1e-9)

    def unpack(x):
        p = {"A": math.exp(x[0]), "alpha": x[1], "B": math.exp(x[2]), "beta": x[3]}
        p["E"] = entropy if fixed else x[4]
        return p

    def residuals(x):
        pred = law(unpack(x), n, d)
        return np.log(np.maximum(pred, 1e-12)) - np.log(loss)

    lower = [-30.0, 0.0, -30.0, 0.0] + ([] if fixed else [0.0])
    upper = [60.0, 2.5, 60.0, 2.5] + ([] if fixed else [floor_max])
    starts = []
    if start is not None:
        starts.append([math.log(start["A"]), start["alpha"], math.log(start["B"]), start["beta"]]
                      + ([] if fixed else [min(start["E"], floor_max * 0.99)]))
    gap = max(float(np.median(loss)) - (entropy or 0.0), 1e-3)
    for alpha in (() if start is not None else (0.1, 0.3, 0.6)):  # a bootstrap refit starts from the fit
        for beta in (0.1, 0.3, 0.6):
            x = [math.log(gap / 2) + alpha * math.log(np.median(n)), alpha,
                 math.log(gap / 2) + beta * math.log(np.median(d)), beta]
            starts.append(x + ([] if fixed else [floor_max * 0.5]))
    best, best_cost = None, math.inf
    for x0 in starts:
        x0 = np.clip(x0, np.array(lower) + 1e-9, np.array(upper) - 1e-9)
        try:
            r = least_squares(residuals, x0, bounds=(lower, upper), loss="huber", f_scale=HUBER_SCALE,
                              x_scale="jac", max_nfev=2000)
        except ValueError:
            continue
        if r.cost < best_cost:
            best, best_cost = r.x, r.cost
    if best is None:
        raise UserError("the scaling fit did not converge on these runs")
    return unpack(best), float(best_cost)


def fit_scaling(runs: ScalingRuns, bootstrap: int = 200, seed: int = 0, hold_out: bool = True) -> ScalingFit:
    """Fit the law to the runs (E fixed to the entropy when known), with bootstrap intervals, what
    the runs leave undetermined, and the held-out prediction of the largest model."""
    table = runs.table
    fixed = runs.entropy is not None
    need = _unknowns(fixed)
    dropped = f" ({len(runs.left_out)} left out: no finite loss)" if runs.left_out else ""
    if len(table) < need + 1:
        raise UserError(f"a scaling fit needs more runs than its {need} unknowns; it has {len(table)}{dropped}: "
                        "run the scaling study (`python studies.py scaling`) or more sizes and token budgets")
    if table["N"].nunique() < 2 or table["D"].nunique() < 2:
        raise UserError(f"a scaling fit needs 2 or more model sizes and 2 or more token budgets; the runs have "
                        f"{table['N'].nunique()} size(s) and {table['D'].nunique()} budget(s)")
    params, cost = _solve(table, runs.entropy)
    fit = ScalingFit(params, fixed, runs, cost=cost)
    fit.boot = _bootstrap(table, runs.entropy, params, bootstrap, seed)
    for key in PARAMS:
        values = [b[key] for b in fit.boot]
        if values and not (fixed and key == "E"):
            fit.intervals[key] = (float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975)))
    fit.undetermined = undetermined(fit, bootstrap)
    if hold_out:
        fit.held_out = held_out_error(runs)
    return fit


def _bootstrap(table: pd.DataFrame, entropy: float | None, params: dict[str, float], n: int,
               seed: int) -> list[dict[str, float]]:
    """Refits to resamples of the runs (with replacement), each from the fit's solution."""
    rng = np.random.default_rng(seed)
    fits = []
    for _ in range(n):
        sample = table.iloc[rng.integers(0, len(table), len(table))]
        if sample["N"].nunique() < 2 or sample["D"].nunique() < 2:
            continue
        try:
            fits.append(_solve(sample, entropy, start=params)[0])
        except UserError:
            continue
    return fits


WIDE = 100.0  # a 95% interval spanning more than this factor does not determine a parameter
PINS = {"A": "more model sizes, spread wider (N over 10x or more) at each token budget",
        "alpha": "more model sizes, spread wider (N over 10x or more) at each token budget",
        "B": "more token budgets, spread wider (D over 10x or more) for each size",
        "beta": "more token budgets, spread wider (D over 10x or more) for each size",
        "E": "larger models trained longer, nearer the floor (or a corpus whose entropy is known, so E is fixed)"}


def undetermined(fit: ScalingFit, bootstrap: int) -> dict[str, str]:
    """The fitted parameters these runs do not determine, each with what runs would: an exponent
    at its bound (0 or 2.5), E at 0, or a 95% interval over a factor of WIDE."""
    out = {}
    for key, (lo, hi) in fit.intervals.items():
        value = fit.params[key]
        at_bound = (key in ("alpha", "beta") and not 0.01 < value < 2.49) or (key == "E" and value < 1e-3)
        wide = lo <= 0 or hi / lo > WIDE
        if at_bound or wide:
            out[key] = f"{value:.3g}, 95% {lo:.3g} to {hi:.3g}: needs {PINS[key]}"
    if bootstrap and len(fit.boot) < max(10, bootstrap // 4):
        for key in PARAMS:
            if key not in out and not (fit.fixed_E and key == "E"):
                out[key] = f"only {len(fit.boot)} of {bootstrap} bootstrap refits converged: needs more runs"
    return out


def held_out_error(runs: ScalingRuns) -> dict[str, Any] | None:
    """Fit without the largest model; predict its runs. The error in bits per byte, and as a share
    of the run's gap to E (what a scaling law is for: how far above the floor a model will be)."""
    table = runs.table
    largest = table["N"].max()
    rest = table[table["N"] < largest]
    need = _unknowns(runs.entropy is not None)
    if len(rest) < need + 1 or rest["N"].nunique() < 2 or rest["D"].nunique() < 2:
        return None
    params, _ = _solve(rest, runs.entropy)
    held = table[table["N"] == largest].sort_values("D")
    rows = []
    for _, r in held.iterrows():
        pred = float(law(params, r["N"], r["D"]))
        gap = r["L"] - params["E"]
        rows.append({"experiment": r["experiment"], "N": r["N"], "D": r["D"], "observed": r["L"],
                     "predicted": pred, "error_bpb": pred - r["L"], "eval_se": _finite_or_none(r.get("L_se")),
                     "error_share_of_gap": abs(pred - r["L"]) / gap if gap > 0 else None})
    headline = rows[-1]  # the largest model at its largest budget
    return {"model_N": float(largest), "fit_without_it": params, "runs": rows,
            "error_bpb": headline["error_bpb"], "error_share_of_gap": headline["error_share_of_gap"],
            "eval_se": headline["eval_se"]}


def _finite_or_none(value: Any) -> float | None:
    try:
        return float(value) if value is not None and math.isfinite(float(value)) else None
    except (TypeError, ValueError):
        return None


def format_fit(fit: ScalingFit, budget: dict[str, Any] | None = None) -> str:
    """The printed `scaling` section."""
    r = fit.runs
    what = ("L: best val bits per byte, second half of each window" if r.metric == "best_val_bpb_context"
            else "L: best val bits per byte over whole windows") + (f" ({r.metric_note})" if r.metric_note else "")
    lines = [f"scaling: {len(r.table)} runs on {r.dataset or '?'} ({r.tokenizer or '?'}), "
             f"L(N, D) = E + A/N^alpha + B/D^beta, C = 6ND; {what}"
             + (f"; {len(r.left_out)} left out (no finite loss)" if r.left_out else "")]
    for key in PARAMS:
        value = fit.params[key]
        if key == "E" and fit.fixed_E:
            lines.append(f"  E      {value:.4f}  (fixed: the corpus's entropy)")
            continue
        lo, hi = fit.intervals.get(key, (math.nan, math.nan))
        lines.append(f"  {key:<6} {value:.4g}  (95% {lo:.4g} to {hi:.4g}, {len(fit.boot)} bootstrap fits)")
    for key, why in fit.undetermined.items():
        lines.append(f"  not determined by these runs: {key} ({why})")
    h = fit.held_out
    if h:
        share = h["error_share_of_gap"]
        lines.append(f"  held out: the largest model (N = {h['model_N']:,.0f}) predicted from the others: "
                     f"{h['error_bpb']:+.4f} bpb at its largest budget"
                     + (f", {100 * share:.1f}% of its gap to E" if share is not None else "")
                     + (f"; that run's own evaluation standard error is {h['eval_se']:.4f} bpb"
                        if h.get("eval_se") else ""))
    if budget and "refused" in budget:
        lines.append(f"  budget C = {budget['C']:.3g} FLOPs: no compute-optimal point: {budget['refused']}")
    elif budget:
        lines.append(f"  budget C = {budget['C']:.3g} FLOPs: N = {budget['N']:,.0f}, D = {budget['D']:,.0f} tokens, "
                     f"predicted {budget['L']:.4f} bpb"
                     + (f" (95% {budget['L_interval'][0]:.4f} to {budget['L_interval'][1]:.4f})"
                        if "L_interval" in budget else ""))
    return "\n".join(lines)
