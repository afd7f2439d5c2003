"""The report of `studies.py transfer`: a proxy search and the target run trained from its best
settings, read back from the stored runs: what each found, what each spent (training FLOPs: each
trial's FLOPs per token x the tokens it trained, so trials a scheduler stopped count what they
trained), and, where the user names one, a directly tuned target to compare with."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.load import UNFINISHED, find_runs, load_runs
from slm_tune.errors import UserError


def trained_flops(trials: pd.DataFrame) -> float:
    """Training FLOPs the trials spent: each one's train_flops (the steps it trained itself, so a
    trial a scheduler stopped counts what it trained, and one PBT handed weights does not count the
    donor's steps); for runs stored before reports carried it, FLOPs per token x iterations x
    tokens per iteration."""
    total = 0.0
    for _, t in trials.iterrows():
        c = t["config"] or {}
        if "train_flops" in t and pd.notna(t["train_flops"]):
            total += float(t["train_flops"])
        elif t["flops_per_token"] and t["iterations"] and c:
            total += float(t["flops_per_token"]) * float(t["iterations"]) * c["batch_size"] * c["block_size"]
    return total


def study_trials(output_dir: Path, study: str, storage_path: str | None = None) -> pd.DataFrame:
    """The trials of the study's newest run (a study run again without --resume is a new run of
    the same name: its stages are compared, not mixed with the earlier run's)."""
    trials, _ = load_runs(find_runs(output_dir, [study], storage_path)[-1:])
    return trials


def _side(trials: pd.DataFrame) -> dict[str, Any]:
    """A stage's runs: its figures over the runs that ended (finished, diverged or stopped early:
    compare's rule, analysis.load), its FLOPs over every run."""
    done = trials[~trials["status"].isin(UNFINISHED)]
    values = done["best_val_bpb"].dropna().to_numpy(dtype=float)
    return {"trials": int(len(trials)), "finished": int(len(done)), "flops": trained_flops(trials),
            "best_val_bpb": float(values.min()) if len(values) else None,
            "mean_best_val_bpb": float(values.mean()) if len(values) else None,
            "sd_best_val_bpb": float(values.std(ddof=1)) if len(values) > 1 else None,
            "runs_best_val_bpb": values.tolist()}


def best_config(output_dir: Path, study: str, storage_path: str | None = None, missing: str | None = None):
    """The stored study's best finished trial's whole config (ExperimentConfig); a one-line error
    (`missing`, or the --against one) when the study has none."""
    from slm_tune.config import ExperimentConfig

    trials = study_trials(output_dir, study, storage_path)
    done = trials[(trials["status"] == "finished") & trials["best_val_bpb"].notna()] if not trials.empty else trials
    if done.empty:
        raise UserError(missing or f"--against {study!r}: no finished trial of that study in {output_dir}; name a "
                        "study stored there that tuned the target directly (e.g. a search at the target shape)")
    return ExperimentConfig(**done.loc[done["best_val_bpb"].idxmin(), "config"])


def transfer_report(output_dir: Path, search: str, target: str, targets: dict[str, Any],
                    against: str | None = None, retrain: str | None = None) -> dict[str, Any]:
    """The proxy search's best and spend, the target's result and spend, and against a directly
    tuned study (`against`: a study in the same output dir) its best and spend, with its best
    configuration retrained at the target's seeds (the stored study `retrain`) as the like-for-like
    comparison."""
    proxy, tuned = study_trials(output_dir, search), study_trials(output_dir, target)
    if proxy.empty or tuned.empty:
        raise UserError(f"no stored runs of {search if proxy.empty else target} in {output_dir}: "
                        "run the transfer first (without --report-only)")
    best = proxy.loc[proxy["best_val_bpb"].idxmin()] if proxy["best_val_bpb"].notna().any() else None
    report = {"search": search, "target": target, "to": targets,
              "proxy": {**_side(proxy), "best_trial": None if best is None else best["experiment"],
                        "best_settings": {} if best is None else dict(best["searched"] or {})},
              "target_run": _side(tuned)}
    runs = max(1, report["target_run"]["trials"])
    report["compute"] = {"proxy_flops": report["proxy"]["flops"], "target_flops": report["target_run"]["flops"],
                         "total_flops": report["proxy"]["flops"] + report["target_run"]["flops"],
                         # what the transfer costs: the proxy search and one target run (more seeds measure it)
                         "transfer_flops": report["proxy"]["flops"] + report["target_run"]["flops"] / runs}
    if against:
        report["against"] = _against(output_dir, against, retrain, report)
    return report


def _against(output_dir: Path, study: str, retrain: str | None, report: dict[str, Any]) -> dict[str, Any]:
    """The directly tuned study: its search (best trial and FLOPs: the compute the transfer is
    measured against) and its best configuration retrained at the target's seeds (`retrain`; its
    FLOPs are the comparison's cost, not tuning). Welch compares the target's runs with the
    retrained runs: seeds of one configuration against seeds of another. The search's own best
    trial is not compared: it was chosen on the windows it is scored on (optimistic), and its
    other trials are other configurations, not seeds."""
    from analysis.significance import verdict, welch

    direct = study_trials(output_dir, study)
    if direct.empty:
        raise UserError(f"--against {study!r}: no stored runs of that study in {output_dir}")
    side = _side(direct)
    out = {"study": study, **side, "compute_share": report["compute"]["transfer_flops"] / side["flops"]
           if side["flops"] else math.nan}
    runs = study_trials(output_dir, retrain) if retrain else pd.DataFrame()
    if runs.empty:
        out["note"] = "no retrained runs of its best configuration: no verdict"
        return out
    out["retrain"] = {"study": retrain, **_side(runs)}
    mine, theirs = (np.asarray(x["runs_best_val_bpb"]) for x in (report["target_run"], out["retrain"]))
    if len(mine) > 1 and len(theirs) > 1:
        diff, lo, hi, p = welch(mine, theirs)
        out.update(diff=diff, lo=lo, hi=hi, p=p, verdict=verdict(diff, p))
    else:
        out["note"] = "one run on a side: no verdict (give --repeats 2 or more)"
    return out


def report_text(report: dict[str, Any]) -> str:
    p, t, c = report["proxy"], report["target_run"], report["compute"]
    lines = [f"proxy search {report['search']}: best {_bpb(p['best_val_bpb'])} bits per byte "
             f"({p['best_trial']}), {p['trials']} trials, {c['proxy_flops']:.3g} training FLOPs",
             f"target {report['target']} ({', '.join(f'{k}={v}' for k, v in report['to'].items())}): "
             f"{_bpb(t['mean_best_val_bpb'])} bits per byte over {t['finished']} run(s), "
             f"{c['target_flops']:.3g} training FLOPs; all in all {c['total_flops']:.3g}"]
    a = report.get("against")
    if a:
        lines.append(f"against {a['study']} (tuned directly): its best trial {_bpb(a['best_val_bpb'])} (chosen on "
                     f"the windows it is scored on) for {a['flops']:.3g} training FLOPs; the transfer (its search and one "
                     f"target run) spent {a['compute_share']:.0%} of that")
        r = a.get("retrain")
        if r:
            lines.append(f"  its best configuration retrained at the target's seeds: {_bpb(r['mean_best_val_bpb'])} "
                         f"over {r['finished']} run(s), {r['flops']:.3g} training FLOPs (not counted as tuning)")
        lines.append(f"  transfer - direct: {a['diff']:+.4f} [{a['lo']:+.4f}, {a['hi']:+.4f}], {a['verdict']} "
                     "(Welch, seeds against seeds)" if "diff" in a else f"  {a['note']}")
    return "\n".join(lines)


def _bpb(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
