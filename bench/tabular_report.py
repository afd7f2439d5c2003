"""The replay benchmark's figures (bench/tabular.py): normalised regret against compute, the compute
each pairing needs to reach a regret, how it compares with random search, and 2-objective
hypervolumes. Reads what `bench/tabular.py replay` stored; the plot is its own function."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

THRESHOLDS = (0.05, 0.02, 0.01)
REFERENCE = "random+fifo"


def regret(data: dict, best: list[float]) -> np.ndarray:
    """Normalised regret: 0 at the table's best run, 1 at its worst (the worst run's final best
    val_bpb); an early eval worse than every run's end counts 1."""
    facts = data["table"]
    return np.minimum(1.0, (np.asarray(best) - facts["best"]) / (facts["worst"] - facts["best"]))


def compute_to(data: dict, run: dict, threshold: float) -> float:
    """Training FLOPs a search spent until its incumbent's normalised regret was at most
    `threshold` (inf when it never got there within its trials)."""
    r = regret(data, run["best"])
    hit = np.nonzero(r <= threshold + 1e-12)[0]
    return run["flops"][hit[0]] if len(hit) else math.inf


def rank_test(a: list[float], b: list[float]) -> tuple[float, float]:
    """Two-sided Mann-Whitney p-value, and the shift P(a > b) + P(a = b) / 2 - 1/2 (above 0: a tends
    to need more compute): compute to a regret is skewed and censored (inf where a search never got
    there), which ranks take as they are."""
    from scipy.stats import mannwhitneyu

    big = 1e300
    result = mannwhitneyu([min(x, big) for x in a], [min(x, big) for x in b], alternative="two-sided")
    return float(result.pvalue), float(result.statistic / (len(a) * len(b)) - 0.5)


def ratio_interval(a: list[float], b: list[float], reps: int = 2000, seed: int = 0) -> tuple:
    """Median of a over median of b, with a 95% bootstrap interval over the seeds of each. A median
    that is "never" (inf) gives no number: inf where a's median never got there and b's did, None
    where b's never did (shown "ref never"). For the interval's order a resample where only b never
    got there ranks below every number (a was faster without bound) and one where neither got there
    ranks as a tie (1)."""
    rng = np.random.default_rng(seed)
    a, b = np.asarray(a), np.asarray(b)
    medians = [(quantiles(rng.choice(a, len(a)), [0.5])[0], quantiles(rng.choice(b, len(b)), [0.5])[0])
               for _ in range(reps)]
    ranked = sorted(medians, key=lambda m: _rank_key(*m))
    lo, hi = (_ratio(*ranked[i]) for i in _inverted_cdf_indices(len(ranked), [0.025, 0.975]))
    return _ratio(quantiles(a, [0.5])[0], quantiles(b, [0.5])[0]), lo, hi


def _ratio(a: float, b: float) -> float | None:
    return None if math.isinf(b) else a / b


def _rank_key(a: float, b: float) -> float:
    if math.isinf(b):
        return 1.0 if math.isinf(a) else -math.inf
    return a / b


def _inverted_cdf_indices(n: int, qs) -> list[int]:
    """The order statistics np.quantile's inverted_cdf method picks (quantiles() below)."""
    return [max(0, math.ceil(q * n) - 1) for q in qs]


def quantiles(values, qs) -> list[float]:
    """Quantiles without interpolation (inverted CDF), so that a censored (inf) value stays inf."""
    return [float(q) for q in np.quantile(np.asarray(values, dtype=float), qs, method="inverted_cdf")]


def within(data: dict, threshold: float) -> int:
    """How many of the table's runs end within this normalised regret of its best."""
    return int(np.sum(regret(data, [p[0] for p in data["table"]["points"]]) <= threshold + 1e-12))


def single_table(data: dict) -> pd.DataFrame:
    """One row per pairing and threshold's columns: median and quartiles of the compute to the
    regret, as a share of the whole table's compute, the share of seeds that got there, and against
    random search the ratio of medians with its interval, a Mann-Whitney p-value and a verdict
    (Holm over the pairings at each threshold)."""
    from analysis.significance import holm, verdict

    total, ref = data["table"]["total_flops"], data["single"][REFERENCE]
    rows = []
    for name, runs in data["single"].items():
        row = {"pairing": name}
        for thr in THRESHOLDS:
            c, c_ref = [compute_to(data, r, thr) for r in runs], [compute_to(data, r, thr) for r in ref]
            q1, med, q3 = quantiles(c, [0.25, 0.5, 0.75])
            row.update({f"median_{thr}": med / total, f"q1_{thr}": q1 / total, f"q3_{thr}": q3 / total,
                        f"reached_{thr}": float(np.mean(np.isfinite(c)))})
            row[f"ratio_{thr}"], row[f"lo_{thr}"], row[f"hi_{thr}"] = ratio_interval(c, c_ref)
            row[f"p_{thr}"], row[f"shift_{thr}"] = rank_test(c, c_ref) if name != REFERENCE else (math.nan, 0.0)
        rows.append(row)
    table = pd.DataFrame(rows)
    for thr in THRESHOLDS:
        table[f"p_holm_{thr}"] = holm(list(table[f"p_{thr}"]))
        table[f"verdict_{thr}"] = [("reference" if n == REFERENCE else verdict(shift, p)) for n, shift, p
                                   in zip(table["pairing"], table[f"shift_{thr}"], table[f"p_holm_{thr}"])]
    return table.sort_values("median_0.01").reset_index(drop=True)


def hypervolumes(data: dict) -> dict[str, list[float]]:
    """Each 2-objective search's hypervolume (bits per byte x parameters, one reference point for
    all: the table's worst of each), as a share of the whole table's front's."""
    from analysis.pareto import hypervolume

    facts, objectives = data["table"], ["best_val_bpb", "total_params"]
    ref = [facts["worst"], facts["max_params"]]
    whole = hypervolume(pd.DataFrame(facts["points"], columns=objectives), objectives, ref)
    return {name: [hypervolume(pd.DataFrame(f, columns=objectives), objectives, ref) / whole for f in fronts]
            for name, fronts in data["multi"].items()}


def multi_table(data: dict) -> pd.DataFrame:
    from analysis.significance import holm, verdict, welch

    hv = hypervolumes(data)
    rows = []
    for name, values in hv.items():
        diff, lo, hi, p = (welch(np.asarray(values), np.asarray(hv["random"])) if name != "random"
                           else (0.0, math.nan, math.nan, math.nan))
        rows.append({"searcher": name, "mean": np.mean(values), "sd": np.std(values, ddof=1), "diff": diff,
                     "lo": lo, "hi": hi, "p": p})
    table = pd.DataFrame(rows)
    table["p_holm"] = holm(list(table["p"]))
    table["verdict"] = ["reference" if s == "random" else verdict(-d, p)  # more area is better
                        for s, d, p in zip(table["searcher"], table["diff"], table["p_holm"])]
    return table


def summary(data: dict) -> str:
    facts = data["table"]
    lines = [f"table: {facts['runs']} runs, best {facts['best']:.4f}, worst {facts['worst']:.4f} bits per byte "
             f"(regret 0.01 = {0.01 * (facts['worst'] - facts['best']):.4f} bpb; seed sd "
             f"{', '.join(f'{s:.4f}' for s in facts['seed_sd'])}); {data['seeds']} seeds x {data['trials']} trials",
             "compute as a share of training the whole table once: median [q1, q3] (seeds that got there); against "
             f"{REFERENCE}: ratio of medians [95% bootstrap], Mann-Whitney, Holm over the pairings"]
    table = single_table(data)
    for thr in sorted(THRESHOLDS, reverse=True):
        lines.append(f"regret {thr} ({thr * (facts['worst'] - facts['best']):.4f} bpb; {within(data, thr)} of the "
                     f"table's {facts['runs']} runs end within it):")
        for _, r in table.iterrows():
            lines.append(f"  {r['pairing']:<26} {_cell(r, thr):<34} vs random {_times(r[f'ratio_{thr}'])} "
                         f"[{_times(r[f'lo_{thr}'])}, {_times(r[f'hi_{thr}'])}] {r[f'verdict_{thr}']}")
    lines += [f"seeds that reached regret 0.01, and how many of them end on the table's best run ({facts['best']:.4f}):",
              "  " + ", ".join(f"{name} {n} ({on_best})" for name, (n, on_best) in on_the_best_run(data).items())]
    pairs = asha_against_fifo(data)
    if pairs:
        lines.append("final best, ASHA against FIFO, seed by seed (random and QMC draw the same points either way):")
        lines += [f"  {s}: worse in {w}, better in {b} of {n} seeds" for s, (w, b, n) in pairs.items()]
    if data["multi"]:
        lines.append("2-objective hypervolume (share of the whole table's front), mean over seeds, against random:")
        for _, r in multi_table(data).iterrows():
            lines.append(f"  {r['searcher']:<16} {r['mean']:.4f} sd {r['sd']:.4f}  diff {r['diff']:+.4f} "
                         f"[{r['lo']:+.4f}, {r['hi']:+.4f}] {r['verdict']}")
    return "\n".join(lines)


def on_the_best_run(data: dict) -> dict[str, tuple[int, int]]:
    """Per pairing: (seeds whose search reached regret 0.01, of them the seeds whose final incumbent
    is the table's best run itself)."""
    best = data["table"]["best"]
    return {name: (sum(math.isfinite(compute_to(data, r, 0.01)) for r in runs), sum(r["best"][-1] == best for r in runs))
            for name, runs in data["single"].items()}


def asha_against_fifo(data: dict) -> dict[str, tuple[int, int, int]]:
    """Per sampler replayed with both FIFO and ASHA: (seeds where ASHA's final best is worse, better,
    seeds compared); a seed's two searches draw the same points, ASHA stopping some of them early."""
    out = {}
    for name in data["single"]:
        sampler, scheduler = name.split("+")
        if scheduler == "asha" and f"{sampler}+fifo" in data["single"]:
            pairs = list(zip(data["single"][name], data["single"][f"{sampler}+fifo"]))
            out[sampler] = (sum(a["best"][-1] > f["best"][-1] for a, f in pairs),
                            sum(a["best"][-1] < f["best"][-1] for a, f in pairs), len(pairs))
    return out


def _cell(r, thr: float) -> str:
    share = f"{r[f'reached_{thr}']:.0%}"
    return f"{_share(r[f'median_{thr}'])} [{_share(r[f'q1_{thr}'])}, {_share(r[f'q3_{thr}'])}] ({share})"


def _share(x: float) -> str:
    return "never" if math.isinf(x) else f"{x:.3f}"


def _times(x: float | None) -> str:
    """A ratio of medians: "never" where this pairing's median never got there, "ref never" where
    the reference's did not (no ratio either way)."""
    if x is None or pd.isna(x):
        return "ref never"
    return "never" if math.isinf(x) else f"{x:.2f}x"


def regret_curves(data: dict, runs: list[dict], grid: np.ndarray) -> np.ndarray:
    """Each search's regret at each compute of `grid` (a step function; nan before its first eval)."""
    out = np.full((len(runs), len(grid)), np.nan)
    for i, run in enumerate(runs):
        r, f = regret(data, run["best"]), np.asarray(run["flops"])
        idx = np.searchsorted(f, grid, side="right") - 1
        out[i] = np.where(idx >= 0, r[np.clip(idx, 0, None)], np.nan)
    return out


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    total = data["table"]["total_flops"]
    grid = np.geomspace(total * 1e-3, total * 0.6, 200)
    order = ["fifo", "asha", "hyperband", "median"]  # then ASHA's variants (bench/tabular.py), by name
    schedulers = sorted({k.split("+")[1] for k in data["single"]}, key=lambda s: (order.index(s) if s in order else len(order), s))
    searchers = list(dict.fromkeys(k.split("+")[0] for k in data["single"]))
    colors = dict(zip(searchers, plt.rcParams["axes.prop_cycle"].by_key()["color"]))  # one colour per searcher
    rows = math.ceil(len(schedulers) / 2)
    fig, axes = plt.subplots(rows, min(2, len(schedulers)), figsize=(10, 4 * rows), sharey=True, squeeze=False)
    for ax in axes.flat[len(schedulers):]:
        ax.set_visible(False)
    for ax, scheduler in zip(axes.flat, schedulers):
        for name, runs in data["single"].items():
            alg, sch = name.split("+")
            if sch != scheduler and name != REFERENCE:
                continue
            curves = regret_curves(data, runs, grid)
            med = np.maximum(np.nanmedian(curves, axis=0), 1e-3)  # regret 0 drawn at the axis' floor
            style = dict(color="gray", ls="--") if name == REFERENCE else dict(color=colors[alg])
            line, = ax.plot(grid / total, med, label=alg if name != REFERENCE else "random+fifo", **style)
            q1, q3 = np.nanpercentile(curves, [25, 75], axis=0)
            ax.fill_between(grid / total, np.maximum(q1, 1e-3), np.maximum(q3, 1e-3), color=line.get_color(), alpha=0.12)
        for thr in THRESHOLDS:
            ax.axhline(thr, color="black", lw=0.6, ls=":")
        ax.set(xscale="log", yscale="log", title=f"scheduler: {scheduler}", xlabel="training FLOPs / whole table's")
        ax.set_ylim(bottom=1e-3)
        ax.legend(fontsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel("normalised regret (median, IQR band)")
    fig.suptitle(f"Replay benchmark: {data['seeds']} searcher seeds x {data['trials']} trials per pairing, "
                 f"{data['table']['runs']} recorded runs (regret 0 is drawn at the floor)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))  # room for the title above the panels
    fig.savefig(path, dpi=110)
    plt.close(fig)
