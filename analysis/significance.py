"""Whether a difference is larger than the noise: each experiment's best val bits per byte against a
reference's, with a 95% interval, a p-value, a Holm-adjusted p-value and a verdict.

- With repeats (two or more seeds on both sides): Welch's t-test over the seeds (scipy's
  ttest_ind, equal_var=False, and its confidence interval). This is seed-to-seed noise, which
  includes the evaluation's own.
- Without: the evaluation's standard errors alone (each best eval's mean over eval_iters
  batches has a standard error from their spread), as a normal interval. It leaves out
  seed-to-seed noise, so it understates the real noise: such rows say "evaluation only".
- Holm's correction over the experiments compared with the reference: with many experiments
  some unadjusted "better" verdicts are luck; the verdict uses the adjusted p-value (family-wise
  error 5%), the interval is the unadjusted 95% one.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from slm_tune.errors import UserError, closest

METRIC = "best_val_bpb"
ALPHA = 0.05
COLUMNS = ["reference", "diff_bpb", "diff_low", "diff_high", "p_value", "p_holm", "verdict", "noise"]


def choose_reference(experiments: Sequence[str], means: dict[str, float], reference: str | None) -> str:
    """The named reference, else baseline when the comparison has it, else the best experiment."""
    if reference is not None:
        if reference not in experiments:
            raise UserError(f"--reference {reference!r} is not among the compared experiments"
                            f"{closest(reference, list(experiments))}: {', '.join(experiments)}")
        return reference
    if "baseline" in experiments:
        return "baseline"
    finite = {e: v for e, v in means.items() if np.isfinite(v)}
    return min(finite, key=finite.get) if finite else experiments[0]


def welch(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> tuple[float, float, float, float]:
    """mean(a) - mean(b), its Welch interval and two-sided p-value."""
    result = stats.ttest_ind(a, b, equal_var=False)
    ci = result.confidence_interval(level)
    return float(a.mean() - b.mean()), float(ci.low), float(ci.high), float(result.pvalue)


def from_eval_errors(a: float, se_a: float, b: float, se_b: float, level: float = 0.95):
    """a - b, its normal interval and p-value from the two evaluation standard errors."""
    se = math.hypot(se_a, se_b)
    diff = a - b
    if not se > 0:
        return diff, math.nan, math.nan, math.nan
    z = stats.norm.ppf(0.5 + level / 2)
    return diff, diff - z * se, diff + z * se, float(2 * stats.norm.sf(abs(diff) / se))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN stays NaN)."""
    p = np.asarray(p_values, float)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok])]
    adjusted = np.full(len(p), np.nan)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def verdict(diff: float, p_adjusted: float) -> str:
    if not np.isfinite(p_adjusted):
        return "unknown"
    if p_adjusted >= ALPHA:
        return "within noise"
    return "better" if diff < 0 else "worse"  # bits per byte: lower is better


def _values(trials: pd.DataFrame, experiment: str) -> tuple[np.ndarray, float]:
    """The experiment's best val bpb per run, and its mean evaluation standard error."""
    g = trials[trials["experiment"] == experiment]
    values = pd.to_numeric(g[METRIC], errors="coerce").dropna().to_numpy(float)
    se = pd.to_numeric(g.get("best_val_bpb_se", pd.Series(dtype=float)), errors="coerce").dropna()
    return values, float(se.mean() / math.sqrt(len(se))) if len(se) else math.nan


def differences(trials: pd.DataFrame, reference: str | None = None) -> pd.DataFrame:
    """One row per experiment: COLUMNS against the reference (the reference's own row says so)."""
    experiments = list(dict.fromkeys(trials["experiment"]))
    values = {e: _values(trials, e) for e in experiments}
    means = {e: float(v.mean()) if len(v) else math.nan for e, (v, _) in values.items()}
    ref = choose_reference(experiments, means, reference)
    rows = []
    b, se_b = values[ref]
    for e in experiments:
        a, se_a = values[e]
        if e == ref:
            rows.append({"experiment": e, "reference": ref, "verdict": "reference"})
            continue
        if len(a) >= 2 and len(b) >= 2:
            found, noise = welch(a, b), f"seeds (Welch, {len(a)} vs {len(b)} runs)"
        elif len(a) and len(b):
            found, noise = from_eval_errors(a.mean(), se_a, b.mean(), se_b), "evaluation only"
        else:
            found, noise = (math.nan,) * 4, "no result"
        rows.append({"experiment": e, "reference": ref, **dict(zip(COLUMNS[1:5], found)), "noise": noise})
    table = pd.DataFrame(rows, columns=["experiment", *COLUMNS])
    compared = table["verdict"] != "reference"
    table.loc[compared, "p_holm"] = holm(table.loc[compared, "p_value"].tolist())
    table.loc[compared, "verdict"] = [verdict(d, p) for d, p in table.loc[compared, ["diff_bpb", "p_holm"]].to_numpy()]
    return table


def ci95_half_width(trials: pd.DataFrame) -> dict[str, float]:
    """Each experiment's 95% half-width of its mean best val bpb: Student's t over the seeds with
    repeats, else 1.96 evaluation standard errors (the error bars of the comparison plot)."""
    out = {}
    for e in dict.fromkeys(trials["experiment"]):
        v, se = _values(trials, e)
        if len(v) >= 2:
            out[e] = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
        else:
            out[e] = float(stats.norm.ppf(0.975) * se) if np.isfinite(se) else math.nan
    return out


def repeats_needed(a: np.ndarray, b: np.ndarray, power: float = 0.8, alpha: float = ALPHA,
                   most: int = 10_000) -> int | None:
    """Runs per experiment for a two-sided Welch-like t-test to resolve mean(a) - mean(b) with this
    power at the measured spread (the pooled seed standard deviation); None if there is no
    difference or no spread to measure."""
    delta = abs(a.mean() - b.mean())
    sigma = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2) if len(a) > 1 and len(b) > 1 else math.nan
    if not (delta > 0 and sigma > 0):
        return None
    for n in range(2, most + 1):
        df = 2 * n - 2
        crit = stats.t.ppf(1 - alpha / 2, df)
        ncp = delta / (sigma * math.sqrt(2 / n))
        if stats.nct.sf(crit, df, ncp) + stats.nct.cdf(-crit, df, ncp) >= power:
            return n
    return None


def power_text(trials: pd.DataFrame, reference: str, against: str) -> str:
    """One paragraph: the two experiments' difference, and the repeats that would resolve it."""
    experiments = list(dict.fromkeys(trials["experiment"]))
    if against not in experiments:
        raise UserError(f"--against {against!r} is not among the compared experiments{closest(against, experiments)}")
    a, _ = _values(trials, against)
    b, _ = _values(trials, reference)
    if len(a) < 2 or len(b) < 2:
        return (f"{against} vs {reference}: the spread between seeds needs two or more runs of each "
                f"({len(a)} and {len(b)} here); run the study with --repeats 3")
    n = repeats_needed(a, b)
    spread = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    head = (f"{against} vs {reference}: difference {a.mean() - b.mean():+.4f} bits per byte, seed standard "
            f"deviation {spread:.4f} ({len(a)} and {len(b)} runs)")
    if n is None:
        return f"{head}; no difference to resolve"
    return f"{head}; {n} runs of each would resolve it with 80% power at 5% (two-sided t-test)"
