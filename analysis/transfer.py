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

from analysis.load import ended, find_runs, load_runs, with_added_runs
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
    """The trials of the study's newest run and the runs it adds seeds to (a study run again
    without --resume is a new run of the same name: its stages are compared, not mixed with the
    earlier run's; one that adds seeds, `--resume --repeats`, is read with the run it adds to)."""
    runs = find_runs(output_dir, [study], storage_path)
    trials, _ = load_runs(with_added_runs(runs[-1]) if runs else [])
    return trials


def _scored(trials: pd.DataFrame) -> pd.DataFrame:
    """The runs that ended (analysis.load.ended: compare's rule) with a best val bits per byte."""
    done = ended(trials)
    return done[pd.to_numeric(done["best_val_bpb"], errors="coerce").notna()] if len(done) else done


def _best_row(trials: pd.DataFrame) -> pd.Series | None:
    """The finished trial with the lowest best val bits per byte: the configuration a report names
    and the next stage trains (a diverged trial's settings are unstable, one stopped early trained
    less: neither is picked, though both count as runs of their settings in `_side`'s figures)."""
    done = _scored(trials)
    done = done[done["status"] == "finished"] if len(done) else done
    return done.loc[pd.to_numeric(done["best_val_bpb"]).idxmin()] if len(done) else None


def _side(trials: pd.DataFrame) -> dict[str, Any]:
    """A stage's runs: the mean and spread over the scored runs that ended (seeds of one setting:
    a diverged one counts), the best as `_best_row` picks it, the FLOPs of every run."""
    values = pd.to_numeric(_scored(trials)["best_val_bpb"]).to_numpy(dtype=float) if len(trials) else np.array([])
    best = _best_row(trials) if len(trials) else None
    no_figure = int(len(ended(trials)) - len(values)) if len(trials) else 0  # diverged before an evaluation
    return {"trials": int(len(trials)), "scored": int(len(values)), "no_figure": no_figure, "flops": trained_flops(trials),
            "best_val_bpb": None if best is None else float(best["best_val_bpb"]),
            "mean_best_val_bpb": float(values.mean()) if len(values) else None,
            "sd_best_val_bpb": float(values.std(ddof=1)) if len(values) > 1 else None,
            "runs_best_val_bpb": values.tolist()}


def best_config(output_dir: Path, study: str, storage_path: str | None = None, missing: str | None = None):
    """The stored study's best finished trial's whole config (ExperimentConfig; `_best_row`); a
    one-line error (`missing`, or the --against one) when the study has none."""
    from slm_tune.config import ExperimentConfig

    trials = study_trials(output_dir, study, storage_path)
    best = _best_row(trials) if not trials.empty else None
    if best is None:
        raise UserError(missing or f"--against {study!r}: no finished trial of that study is stored in {output_dir}; name a "
                        "study stored there that tuned the target directly (e.g. a search at the target shape)")
    return ExperimentConfig(**best["config"])


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
    best = _best_row(proxy)
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
        out["note"] = "one run on a side: no verdict (add seeds: --resume --repeats 2)"
    return out


def report_text(report: dict[str, Any]) -> str:
    p, t, c = report["proxy"], report["target_run"], report["compute"]
    lines = [f"proxy search {report['search']}: best {_bpb(p['best_val_bpb'])} bits per byte "
             f"({p['best_trial']}), {p['trials']} trials, {c['proxy_flops']:.3g} training FLOPs",
             f"target {report['target']} ({', '.join(f'{k}={v}' for k, v in report['to'].items())}): "
             f"{_bpb(t['mean_best_val_bpb'])} bits per byte over {t['scored']} run(s){_left_out(t)}, "
             f"{c['target_flops']:.3g} training FLOPs; all in all {c['total_flops']:.3g}"]
    a = report.get("against")
    if a:
        lines.append(f"against {a['study']} (tuned directly): its best trial {_bpb(a['best_val_bpb'])} (chosen on "
                     f"the windows it is scored on) for {a['flops']:.3g} training FLOPs; the transfer (its search and one "
                     f"target run) spent {a['compute_share']:.0%} of that")
        r = a.get("retrain")
        if r:
            lines.append(f"  its best configuration retrained at the target's seeds: {_bpb(r['mean_best_val_bpb'])} "
                         f"over {r['scored']} run(s){_left_out(r)}, {r['flops']:.3g} training FLOPs (not counted as "
                         "tuning)")
        lines.append(f"  transfer - direct: {a['diff']:+.4f} [{a['lo']:+.4f}, {a['hi']:+.4f}], {a['verdict']} "
                     "(Welch, seeds against seeds)" if "diff" in a else f"  {a['note']}")
    return "\n".join(lines)


def _left_out(side: dict[str, Any]) -> str:
    n = side.get("no_figure")
    return f" ({n} more diverged before their first evaluation: no figure, left out)" if n else ""


def _bpb(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
