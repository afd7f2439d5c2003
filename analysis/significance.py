"""Whether a difference is larger than the noise: each experiment's best val bits per byte against a
reference's, with a 95% interval, a p-value, a Holm-adjusted p-value and a verdict.

Every run is evaluated on the same fixed windows (slm_tune/train/evaluate.py: the eval batches
depend on the data and the window shape, not on the run's seed). The `noise` column says which
of four intervals a row has:

- "seeds (Welch, n vs m runs)", with two or more runs on both sides: Welch's t-test over the seeds
  (scipy's ttest_ind, equal_var=False, and its confidence interval). This is seed-to-seed noise
  measured on those fixed windows: it does not include the windows' own sampling error (another
  draw of windows would shift both sides), which the paired evaluation interval measures.
- "seeds (t, 1 vs n runs; seed sd from E's n runs)", with one run on one side and two or more on
  the other: the single run is taken to vary from seed to seed as the repeated side's runs do, so
  the one measured seed standard deviation s (n - 1 degrees of freedom) serves both. The difference
  of a single run y and the mean of n runs has variance sigma^2 (1 + 1/n), so the interval is
  (y - mean) +- t_{n-1, 97.5%} s sqrt(1 + 1/n) (a prediction interval's form) and the p-value is
  two-sided Student's t with n - 1 degrees of freedom at (y - mean) / (s sqrt(1 + 1/n)): the pooled
  two-sample t-test in which the single run adds no degree of freedom.
- "evaluation, paired over N windows": single runs on both sides whose evaluations share their
  windows (the same data, tokenizer and window shape: the same `eval_windows` fingerprint). The
  standard error of the mean per-window difference, as a normal interval: the evaluation's noise
  of this difference exactly, much tighter than two separate errors since the windows' difficulty
  cancels. It leaves out seed-to-seed noise, which is usually the larger part. (Also where the
  repeated side's runs all ended alike, which leaves no seed spread to borrow.)
- "evaluation, unpaired": single runs on different windows (another corpus or vocabulary): the two
  evaluations' standard errors combined (hypot), a normal interval. It too leaves out seed noise.

Several runs of one experiment are evaluated on the same windows, so their mean's evaluation error
is not smaller than one run's: nothing here divides it by the number of runs.

Runs that did not end (interrupted by a kill or Ctrl-C, or errored) are left out of a verdict
where their experiment has runs that ended (finished, diverged or stopped early by a scheduler or a
budget): a run cut short at a tenth of its training is no sample of what its settings reach. An
experiment with no run that ended (a study compared while it runs) is still compared, so its
difference can be looked at, but its verdict is "unfinished: no verdict".

Holm's correction over the experiments compared with the reference: with many experiments some
unadjusted "better" verdicts are luck; the verdict uses the adjusted p-value (family-wise error 5%),
the interval is the unadjusted 95% one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Collection, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from analysis.load import ended_runs
from slm_tune.errors import UserError, closest

METRIC = "best_val_bpb"
ALPHA = 0.05
COLUMNS = ["reference", "diff_bpb", "diff_low", "diff_high", "p_value", "p_holm", "verdict", "noise"]


def choose_reference(experiments: Sequence[str], means: dict[str, float], reference: str | None,
                     unfinished: Collection[str] = ()) -> str:
    """The named reference, else baseline when the comparison has it, else the best experiment (the
    best of those with a run that ended, where any has: an `unfinished` one gives no verdicts)."""
    if reference is not None:
        if reference not in experiments:
            raise UserError(f"--reference {reference!r} is not among the compared experiments"
                            f"{closest(reference, list(experiments))}: {', '.join(experiments)}")
        return reference
    if "baseline" in experiments:
        return "baseline"
    finite = {e: v for e, v in means.items() if np.isfinite(v)}
    ended = {e: v for e, v in finite.items() if e not in unfinished}
    pool = ended or finite
    return min(pool, key=pool.get) if pool else experiments[0]


def welch(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> tuple[float, float, float, float]:
    """mean(a) - mean(b), its Welch interval and two-sided p-value."""
    result = stats.ttest_ind(a, b, equal_var=False)
    ci = result.confidence_interval(level)
    return float(a.mean() - b.mean()), float(ci.low), float(ci.high), float(result.pvalue)


def normal_interval(diff: float, se: float, level: float = 0.95) -> tuple[float, float, float, float]:
    """diff, its normal interval at this standard error, and the two-sided p-value."""
    if not se > 0:
        return diff, math.nan, math.nan, math.nan
    z = stats.norm.ppf(0.5 + level / 2)
    return diff, diff - z * se, diff + z * se, float(2 * stats.norm.sf(abs(diff) / se))


def paired_se(a_windows: np.ndarray, b_windows: np.ndarray) -> float:
    """The standard error of the mean per-window difference (ddof 1) of two evaluations on the
    same windows."""
    d = np.asarray(a_windows, float) - np.asarray(b_windows, float)
    return float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.nan


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


UNFINISHED_VERDICT = "unfinished: no verdict"


def verdict(diff: float, p_adjusted: float) -> str:
    if not np.isfinite(p_adjusted):
        return "unknown"
    if p_adjusted >= ALPHA:
        return "within noise"
    return "better" if diff < 0 else "worse"  # bits per byte: lower is better


NO_FIGURE = "runs with no figure left out (diverged before their first evaluation)"


@dataclass(frozen=True)
class Side:
    """One experiment's runs: best val bpb per run, one evaluation's standard error (the runs'
    mean: they share windows, so it does not shrink with runs), and the per-window bits per byte
    averaged over the runs where every run reported them on the same windows."""

    values: np.ndarray
    eval_se: float
    windows: str | None = None
    window_bpb: np.ndarray | None = None
    left_out: int = 0  # unfinished runs left out (their experiment has runs that ended)
    unfinished: bool = False  # no run of it ended: its values are unfinished runs'
    no_figure: int = 0  # runs that ended with no figure (diverged before their first evaluation)


def _side(trials: pd.DataFrame, experiment: str) -> Side:
    g, left_out, unfinished = ended_runs(trials[trials["experiment"] == experiment])
    finite = pd.to_numeric(g[METRIC], errors="coerce").notna()
    # no figure: runs that ended so (an unfinished experiment's runs have none for being cut, not diverged)
    flags = {"left_out": left_out, "unfinished": unfinished, "no_figure": 0 if unfinished else int((~finite).sum())}
    g = g[finite]
    values = pd.to_numeric(g[METRIC], errors="coerce").to_numpy(float)
    se = pd.to_numeric(g.get("best_val_bpb_se", pd.Series(dtype=float)), errors="coerce").dropna()
    eval_se = float(se.mean()) if len(se) else math.nan
    ids = {w if isinstance(w, str) else None for w in g.get("eval_windows", pd.Series([None] * len(g)))} or {None}
    lists = [w for w in g.get("best_window_bpb", pd.Series(dtype=object)) if isinstance(w, (list, np.ndarray))]
    if len(ids) != 1 or None in ids or len(lists) != len(g) or len({len(w) for w in lists}) != 1:
        return Side(values, eval_se, **flags)
    return Side(values, eval_se, ids.pop(), np.mean(np.asarray(lists, float), axis=0), **flags)


def borrowed_sd(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> tuple[float, float, float, float]:
    """mean(a) - mean(b), its interval and two-sided p-value where one side has a single run and the
    other's seed standard deviation stands for both (see the module's doc): Student's t with the
    repeated side's n - 1 degrees of freedom, standard error s sqrt(1/len(a) + 1/len(b))."""
    repeated = a if len(a) > 1 else b
    df, sd = len(repeated) - 1, _seed_sd(repeated)
    diff, se = float(a.mean() - b.mean()), sd * math.sqrt(1 / len(a) + 1 / len(b))
    half = stats.t.ppf(0.5 + level / 2, df) * se
    return diff, diff - half, diff + half, float(2 * stats.t.sf(abs(diff) / se, df))


def _seed_sd(values: np.ndarray) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else math.nan


def compare(a: Side, b: Side, names: tuple[str, str] = ("a", "b")) -> tuple[tuple[float, float, float, float], str]:
    """(diff, low, high, p) of mean(a) - mean(b) and the kind of interval (see the module's doc);
    `names` name the two sides in the label."""
    if len(a.values) >= 2 and len(b.values) >= 2:
        return welch(a.values, b.values), f"seeds (Welch, {len(a.values)} vs {len(b.values)} runs)"
    if not (len(a.values) and len(b.values)):
        return (math.nan,) * 4, "no result"
    name, repeated = (names[0], a.values) if len(a.values) > 1 else (names[1], b.values)
    if _seed_sd(repeated) > 0:
        return borrowed_sd(a.values, b.values), (f"seeds (t, {len(a.values)} vs {len(b.values)} runs; seed sd "
                                                 f"from {name}'s {len(repeated)} runs)")
    diff = float(a.values.mean() - b.values.mean())
    if a.windows is not None and a.windows == b.windows:
        return normal_interval(diff, paired_se(a.window_bpb, b.window_bpb)), \
            f"evaluation, paired over {len(a.window_bpb)} windows"
    return normal_interval(diff, math.hypot(a.eval_se, b.eval_se)), "evaluation, unpaired"


def _left_out_text(a: Side, b: Side, a_name: str, b_name: str) -> str:
    """The runs a comparison leaves out, per side: cut ones, and ones that ended with no figure."""
    text = ""
    for what, field in (("unfinished runs left out", "left_out"), (NO_FIGURE, "no_figure")):
        left = ", ".join(f"{n} of {x}" for x, n in ((a_name, getattr(a, field)), (b_name, getattr(b, field))) if n)
        text += f"; {what}: {left}" if left else ""
    return text


def differences(trials: pd.DataFrame, reference: str | None = None) -> pd.DataFrame:
    """One row per experiment: COLUMNS against the reference (the reference's own row says so)."""
    experiments = list(dict.fromkeys(trials["experiment"]))
    sides = {e: _side(trials, e) for e in experiments}
    means = {e: float(s.values.mean()) if len(s.values) else math.nan for e, s in sides.items()}
    ref = choose_reference(experiments, means, reference, {e for e, s in sides.items() if s.unfinished})
    rows = []
    for e in experiments:
        if e == ref:
            rows.append({"experiment": e, "reference": ref, "verdict": "reference"})
            continue
        found, noise = compare(sides[e], sides[ref], (e, ref))
        rows.append({"experiment": e, "reference": ref, **dict(zip(COLUMNS[1:5], found)),
                     "noise": noise + _left_out_text(sides[e], sides[ref], e, ref),
                     "unfinished": sides[e].unfinished or sides[ref].unfinished})
    table = pd.DataFrame(rows, columns=["experiment", *COLUMNS, "unfinished"])
    compared = (table["verdict"] != "reference") & (table["unfinished"] != True)  # noqa: E712 (NaN on the reference)
    table.loc[compared, "p_holm"] = holm(table.loc[compared, "p_value"].tolist())  # the family: verdicts given
    table.loc[compared, "verdict"] = [verdict(d, p) for d, p in table.loc[compared, ["diff_bpb", "p_holm"]].to_numpy()]
    table.loc[table["unfinished"] == True, "verdict"] = UNFINISHED_VERDICT  # noqa: E712
    return table.drop(columns="unfinished")


def ci95_half_width(trials: pd.DataFrame, reference: str | None = None) -> dict[str, float]:
    """Each experiment's 95% half-width of its mean best val bpb (the error bars of the comparison
    plot): Student's t over the seeds with repeats; for a single run compared with a repeated
    reference, t_{n-1} times the reference's seed sd (the spread its comparison borrows); else 1.96
    evaluation standard errors."""
    out = {}
    ref = _side(trials, reference).values if reference is not None else np.array([])
    for e in dict.fromkeys(trials["experiment"]):
        side = _side(trials, e)
        v = side.values
        if len(v) >= 2:
            out[e] = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
        elif len(v) == 1 and e != reference and _seed_sd(ref) > 0:
            out[e] = float(stats.t.ppf(0.975, len(ref) - 1) * _seed_sd(ref))
        else:
            out[e] = float(stats.norm.ppf(0.975) * side.eval_se) if np.isfinite(side.eval_se) else math.nan
    return out


def seed_spread(a: np.ndarray, b: np.ndarray) -> float:
    """The seed standard deviation of a comparison: the root of the two sides' mean variance
    (ddof 1; what repeats_needed's equal-n test assumes), or the one side's with two or more runs
    when the other has one; NaN when neither has two."""
    if len(a) > 1 and len(b) > 1:
        return math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    return _seed_sd(a if len(a) > 1 else b)


def repeats_needed(a: np.ndarray, b: np.ndarray, power: float = 0.8, alpha: float = ALPHA, family: int = 1,
                   most: int = 10_000) -> int | None:
    """Runs per experiment (n on each side) for a two-sided two-sample Student t-test with pooled
    variance (df 2n - 2) to resolve mean(a) - mean(b) with this power at the measured spread: the
    pooled seed standard deviation, power from the noncentral t. Not Welch's test: with equal n
    and similar spreads the two agree closely. `family` > 1 tests at alpha / family, the level
    Holm's correction asks of the smallest of that many p-values (so the answer is enough for
    any rank). One run on a side takes the other side's spread for both (as the 1-vs-n verdict
    does). None if there is no difference or no spread to measure."""
    delta = abs(a.mean() - b.mean())
    sigma = seed_spread(a, b)
    if not (delta > 0 and sigma > 0):
        return None
    level = alpha / max(family, 1)
    for n in range(2, most + 1):
        df = 2 * n - 2
        crit = stats.t.ppf(1 - level / 2, df)
        ncp = delta / (sigma * math.sqrt(2 / n))
        if stats.nct.sf(crit, df, ncp) + stats.nct.cdf(-crit, df, ncp) >= power:
            return n
    return None


def power_text(trials: pd.DataFrame, reference: str, against: str) -> str:
    """One paragraph: the two experiments' difference, and the repeats that would resolve it, alone
    and within the study's Holm family (every experiment compared with the reference)."""
    experiments = list(dict.fromkeys(trials["experiment"]))
    if against not in experiments:
        raise UserError(f"--against {against!r} is not among the compared experiments{closest(against, experiments)}")
    sides = {against: _side(trials, against), reference: _side(trials, reference)}
    cut = [name for name, side in sides.items() if side.unfinished]
    if cut:
        return f"{against} vs {reference}: no run of {' or '.join(cut)} ended, so there is no spread to size repeats by"
    a, b = sides[against].values, sides[reference].values
    if min(len(a), len(b)) < 1 or max(len(a), len(b)) < 2:
        return (f"{against} vs {reference}: the spread between seeds needs a finished run of each and two or "
                f"more of one of them ({len(a)} and {len(b)} here); add seeds with --resume --repeats 3")
    n = repeats_needed(a, b)
    whose = "" if min(len(a), len(b)) > 1 else f", {against if len(a) > 1 else reference}'s, taken for both"
    spread = seed_spread(a, b)
    head = (f"{against} vs {reference}: difference {a.mean() - b.mean():+.4f} bits per byte, seed standard "
            f"deviation {spread:.4f} ({len(a)} and {len(b)} runs{whose})")
    if not spread > 0:
        return f"{head}; the runs ended alike, so they give no spread to size repeats by"
    if n is None:
        return f"{head}; no difference to resolve"
    text = f"{head}; {n} runs of each would resolve it with 80% power at 5% (two-sided pooled t-test)"
    family = int(differences(trials, reference)["p_holm"].notna().sum())  # Holm's family: the verdicts given
    if family > 1:
        text += f", {repeats_needed(a, b, family=family)} within Holm's correction over {family} comparisons"
    return text
