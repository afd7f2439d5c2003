"""The report of `studies.py build` (experiments/build_report.json): what each stage spent, the
shape the fit chose and why, the predicted loss against the measured one, and, with
--against-simple, the build's model against the simple ways of spending the same compute.

FLOPs are what the trials trained (each one's train_flops). The build's own spend is its search,
its sweep and one seed of its target; further target seeds and the simple alternatives are
measurement, reported apart.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from analysis.load import ended
from analysis.transfer import trained_flops


def _runs(trials: pd.DataFrame, metric: str = "best_val_bpb") -> list[float]:
    """The metric of each run that ended (analysis.load.ended: compare's rule)."""
    done = ended(trials) if not trials.empty else trials
    return [float(v) for v in pd.to_numeric(done.get(metric, pd.Series(dtype=float)), errors="coerce").dropna()]


def _no_figure(trials: pd.DataFrame) -> int:
    """Runs that ended with no figure (diverged before their first evaluation): left out of _runs."""
    return (len(ended(trials)) - len(_runs(trials))) if not trials.empty else 0


def _shape(c) -> dict[str, Any]:
    from slm_tune.model.counts import param_counts, tokens_per_iter

    return {"n_layer": c.n_layer, "n_embd": c.n_embd, "n_head": c.n_head, "max_iters": c.max_iters,
            "batch_size": c.batch_size, "tokens": c.max_iters * tokens_per_iter(c),
            "non_embedding_params": param_counts(c)[1], "learning_rate": c.learning_rate,
            "parametrization": c.parametrization, "depth_parametrization": c.depth_parametrization}


def build_report(built, studies: dict[str, str]) -> dict[str, Any]:
    """The report of a finished build (workflows.build.Built)."""
    s = built.settings
    frames = {k: s.trials(k) for k in studies}
    target_runs = max(1, len(frames["target"]))  # every seed's trial, finished or not
    spend = {"search": trained_flops(frames["search"]), "sweep": trained_flops(frames["sweep"]),
             "target": trained_flops(frames["target"]) / target_runs}
    total = sum(spend.values())
    report = {
        "budget": s.budget, "shares_planned": {"search": s.shares.search, "sweep": s.shares.sweep,
                                               "target": 1 - s.shares.search - s.shares.sweep},
        "spent": {**spend, "total": total, "shares": {k: v / s.budget for k, v in spend.items()},
                  "further_target_seeds": trained_flops(frames["target"]) - spend["target"]},
        "proxy": {**_shape(built.proxy), "trials": int(len(frames["search"])),
                  "best_settings": {k: getattr(built.best, k) for k in s.space.searched},
                  "best_learning_rate": built.best.learning_rate, "horizon_exponent": s.horizon_exponent,
                  "sweep_design": s.sweep_design},
        "choice": _choice(built),
        "measured": _measured(built, frames["target"]),
    }
    if built.fit is not None:
        report["fit"] = {k: v for k, v in built.fit.to_dict().items() if k not in ("law",)}
    if s.against_simple and not frames["simple"].empty:
        report["simple"] = _simple(frames["target"], frames["simple"])
    return report


def _choice(built) -> dict[str, Any]:
    c = built.choice
    return {"how": c.how, "shape": _shape(c.config), "predicted": c.predicted,
            "predicted_interval_95": list(c.interval) if c.interval else None,
            "fit_refused": built.fit_refused or None, "compute_left": built.settings.budget - built.spent_before_target,
            "candidates": c.candidates}


def _measured(built, target: pd.DataFrame) -> dict[str, Any]:
    """The target's runs on the fit's metric (what the prediction is of) and on best_val_bpb."""
    metric = built.fit.runs.metric if built.fit is not None else "best_val_bpb_context"
    values = _runs(target, metric)
    out = {"metric": metric, "runs": values, "best_val_bpb_runs": _runs(target)}
    if values:
        mean = float(np.mean(values))
        out["mean"] = mean
        p = built.choice.predicted
        if p is not None:
            out["prediction_error"] = (p - mean) / mean  # a share of the measured loss
    return out


def _simple(target: pd.DataFrame, simple: pd.DataFrame) -> dict[str, Any]:
    """Each simple alternative's seeds against the target's seeds: Welch, Holm over the two."""
    from analysis.significance import holm, verdict, welch

    mine = np.asarray(_runs(target))
    rows = {}
    for name, group in simple.groupby("experiment"):
        theirs = np.asarray(_runs(group))
        row = {"runs": theirs.tolist(), "mean": float(theirs.mean()) if len(theirs) else None,
               "flops_per_run": trained_flops(group) / max(1, len(group)),
               "no_figure": {"build": _no_figure(target), name: _no_figure(group)},
               "shape": {k: group["config"].iloc[0][k] for k in ("n_layer", "n_embd", "vocab_size", "max_iters")}}
        if len(mine) > 1 and len(theirs) > 1:
            diff, lo, hi, p = welch(mine, theirs)
            row.update(diff=diff, lo=lo, hi=hi, p=p)
        rows[name] = row
    tested = [n for n in rows if "p" in rows[n]]
    for name, p_adj in zip(tested, holm([rows[n]["p"] for n in tested])):
        rows[name].update(p_holm=p_adj, verdict=verdict(rows[name]["diff"], p_adj))
    for name in rows:
        rows[name].setdefault("verdict", "no verdict: needs 2 or more runs on each side")
    return rows


def report_text(report: dict[str, Any]) -> str:
    sp, c, m = report["spent"], report["choice"], report["measured"]
    lines = [f"build: budget {report['budget']:.3g} FLOPs; spent " + ", ".join(
        f"{k} {sp[k]:.3g} ({sp['shares'][k]:.0%})" for k in ("search", "sweep", "target"))
        + f"; total {sp['total']:.3g} ({sp['total'] / report['budget']:.0%})"]
    shape = c["shape"]
    lines.append(f"target: {shape['n_layer']} layers x {shape['n_embd']} wide ({shape['non_embedding_params']:,} "
                 f"non-embedding parameters), {shape['tokens']:,} tokens; chosen by {c['how']}")
    proxy = report["proxy"]
    moved = (f" x ({shape['max_iters']} / {proxy['max_iters']})^-{proxy['horizon_exponent']:g}"
             if shape["max_iters"] > proxy["max_iters"] and proxy["horizon_exponent"] else ", as it is")
    lines.append(f"rate: {shape['learning_rate']:.3g}, the search's best {proxy['best_learning_rate']:.3g} at its "
                 f"{proxy['max_iters']} iterations{moved}")
    if c["predicted"] is not None and "mean" in m:
        lo, hi = c["predicted_interval_95"]
        lines.append(f"predicted {c['predicted']:.4f} [{lo:.4f}, {hi:.4f}] {m['metric']}, measured {m['mean']:.4f} "
                     f"over {len(m['runs'])} run(s): error {100 * m['prediction_error']:+.1f}%")
    for name, r in report.get("simple", {}).items():
        interval = f"{r['diff']:+.4f} [{r['lo']:+.4f}, {r['hi']:+.4f}], " if "diff" in r else ""
        mean = "-" if r["mean"] is None or math.isnan(r["mean"]) else f"{r['mean']:.4f}"
        left = ", ".join(f"{k} {n}" for k, n in r.get("no_figure", {}).items() if n)
        left = f" (runs with no figure left out, diverged before their first evaluation: {left})" if left else ""
        lines.append(f"against {name} ({r['shape']['n_layer']} x {r['shape']['n_embd']}, {r['shape']['max_iters']} "
                     f"iterations): {mean} best val bpb; build - it: {interval}{r['verdict']}{left}")
    export = report.get("export")  # written after the report itself: absent from a report built alone
    if export:
        lines.append(f"export: {export['path']}" if export.get("path") else f"export: not written ({export['why']})")
    return "\n".join(lines)
