"""A search's own views, from the DataFrames analysis.load returns: the table of trials with their
sampled settings, how much each setting explains the metric (fANOVA through optuna.importance,
whatever algorithm ran the search), and the best trial handed back as a runnable experiment.

    from analysis import find_runs, load_runs
    from analysis.search_views import search_table, importance
    trials, history = load_runs(find_runs(".", ["lr"]))
    table = search_table(trials, space)         # one row per trial, sorted by the metric
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from slm_tune.config import EXPERIMENT_CONFIGS
from slm_tune.files import atomic_write, write_text
from slm_tune.space import SearchSpace
from slm_tune.storage import read_study_file
from slm_tune.study_file import stored_search

IMPORTANCE_COLUMNS = ["setting", "importance", "spearman", "trials", "evaluator", "note"]


def stored_run_search(run_dir: Path) -> tuple[SearchSpace, dict[str, Any]] | None:
    """The search a stored run sampled, and its study.json; None for a study of named experiments."""
    meta = read_study_file(run_dir)
    space = stored_search(meta)
    return (space, meta) if space is not None else None


def search_table(trials: pd.DataFrame, space: SearchSpace, metric: str = "best_val_bpb") -> pd.DataFrame:
    """One row per trial: name, status, the metric, each searched setting; best first."""
    rows = []
    for _, t in trials.iterrows():
        searched = t.get("searched") if isinstance(t.get("searched"), dict) else {}
        rows.append({"trial": t["experiment"], "status": t["status"], metric: _metric(t, metric),
                     "iterations": t["iterations"], "ended_at": t["ended_at"],
                     "training_time_s": t["training_time_s"],
                     **{k: searched.get(k) for k in space.searched}})
    table = pd.DataFrame(rows, columns=["trial", "status", metric, "iterations", "ended_at", "training_time_s",
                                        *space.searched])
    return table.sort_values(metric, na_position="last", kind="stable").reset_index(drop=True)


def _metric(trial: pd.Series, metric: str) -> float | None:
    """A trial's value of the searcher's metric (best_* are the bests over its reports)."""
    column = {"val_loss": "final_val_loss", "val_bpb": "final_val_bpb"}.get(metric, metric)
    value = pd.to_numeric(pd.Series([trial.get(column)]), errors="coerce").iloc[0]
    return float(value) if pd.notna(value) and math.isfinite(value) else None


def importance(table: pd.DataFrame, space: SearchSpace, metric: str = "best_val_bpb", seed: int = 0) -> pd.DataFrame:
    """How much each searched setting explains the metric: fANOVA (optuna.importance) over a study
    rebuilt from the trials, and the Spearman rank correlation beside it (its sign says which way)."""
    import optuna

    done = table[table[metric].notna()]
    done = done[[all(_in(space, k, v) for k, v in zip(space.searched, r)) for r in done[space.searched].values]]
    n = len(done)
    rows = {k: {"setting": k, "importance": None, "spearman": _spearman(done, k, metric), "trials": n,
                "evaluator": "fanova", "note": ""} for k in space.searched}
    note = ""
    varying = [k for k in space.searched if done[k].nunique() > 1]
    if n < 2 or not varying or done[metric].nunique() < 2:
        note = f"needs 2 or more finished trials that differ (has {n})"
    else:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="minimize")
        dists = {k: space.dists[k].optuna() for k in space.searched}
        for _, r in done.iterrows():
            params = {k: _param(space, k, r[k]) for k in space.searched}
            study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=float(r[metric])))
        try:
            scores = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed), normalize=True)
            for k, v in scores.items():
                rows[k]["importance"] = float(v)
        except (ValueError, RuntimeError) as e:
            note = f"fANOVA failed: {str(e).splitlines()[0][:120]}"
    for r in rows.values():
        r["note"] = note
    out = pd.DataFrame(list(rows.values()), columns=IMPORTANCE_COLUMNS)
    return out.sort_values("importance", ascending=False, na_position="last", kind="stable").reset_index(drop=True)


def _in(space: SearchSpace, key: str, value: Any) -> bool:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return False
    d = space.dists[key]
    if d.categorical:
        return value in d.args
    return d.args[0] <= value <= d.args[1]


def _param(space: SearchSpace, key: str, value: Any) -> Any:
    d = space.dists[key]
    if d.categorical:
        return value
    return int(value) if d.kind in ("randint", "qrandint") else float(value)


def _spearman(table: pd.DataFrame, key: str, metric: str) -> float | None:
    x = pd.to_numeric(table[key], errors="coerce")
    if x.notna().sum() < 3 or x.nunique() < 2 or table[metric].nunique() < 2:
        return None
    value = x.rank().corr(table[metric].rank())
    return float(value) if pd.notna(value) else None


def best_trial(table: pd.DataFrame, metric: str = "best_val_bpb") -> pd.Series | None:
    ok = table[table[metric].notna()]
    return ok.iloc[0] if len(ok) else None


def best_experiment_toml(name: str, search: str, trial: str, config: Mapping[str, Any], metric: str,
                         value: float, output_dir_hint: str = "experiments", close: str = "") -> str:
    """The best trial as an experiments-file entry: every setting that differs from baseline.
    `close`: the trials within the noise of it, named in a comment."""
    base = EXPERIMENT_CONFIGS["baseline"].to_dict()
    lines = [
        f"# The best trial of search {search!r}: {trial}, {metric} {value:.4f}.",
        *([f"# Within the noise of it: {close}."] if close else []),
        f"# Run it: python studies.py run {name} --experiments-file {output_dir_hint}/{name}.toml",
        f"[{name}]",
        'base = "baseline"',
        f"description = {json.dumps(f'best of search {search} ({trial}, {metric} {value:.4f})')}",
    ]
    for key, v in config.items():
        if key in ("name", "description") or base.get(key) == v:
            continue
        lines.append(f"{key} = {_toml_value(v)}")
    return "\n".join(lines) + "\n"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    return json.dumps(str(v))


def export_search(run_dir: Path, trials: pd.DataFrame, output_dir: Path) -> dict[str, Path]:
    """`search_{name}.png`, `search_{name}_importance.csv` and `search_{name}_best.toml` for one
    stored search run (its trials as analysis.load returns them)."""
    from analysis.search_plots import plot_search

    found = stored_run_search(run_dir)
    if found is None or trials.empty:
        return {}
    space, meta = found
    metric = meta.get("metric", "best_val_bpb")
    name = meta.get("study", space.name)
    exp_dir = Path(output_dir) / "experiments"
    table = search_table(trials, space, metric)
    written: dict[str, Path] = {}
    imp = importance(table, space, metric)
    written["importance"] = atomic_write(exp_dir / f"search_{name}_importance.csv",
                                         lambda tmp: imp.to_csv(tmp, index=False))
    started = _epoch(meta.get("started_at"))
    written["plot"] = atomic_write(
        exp_dir / f"search_{name}.png",
        lambda tmp: plot_search(table, space, metric, started, f"search {name}: {len(table)} trials, "
                                f"{meta.get('search_alg', '?')} sampler, {meta.get('scheduler', 'fifo')} scheduler",
                                tmp))
    best = best_trial(table, metric)
    if best is not None:
        row = trials[trials["experiment"] == best["trial"]].iloc[0]
        best_name = f"search_{name}_best"
        close = within_noise_of(trials, best["trial"])
        written["best"] = write_text(exp_dir / f"{best_name}.toml", best_experiment_toml(
            best_name, name, best["trial"], row["config"], metric, float(best[metric]), close=close))
        if close:
            written["within_noise"] = close
    return written


def within_noise_of(trials: pd.DataFrame, best: str) -> str:
    """The trials whose best val bits per byte is not resolved from the best trial's (their
    difference and 95% interval, and what noise it rests on; analysis/significance.py)."""
    from analysis.significance import differences

    table = differences(trials, reference=best)
    close = table[table["verdict"] == "within noise"]
    if close.empty:
        return ""
    noise = close["noise"].iloc[0]
    parts = [f"{r.experiment} ({r.diff_bpb:+.4f} [{r.diff_low:+.4f}, {r.diff_high:+.4f}])" for r in close.itertuples()]
    return ", ".join(parts) + f" ({noise}; bits per byte from the best)"


def _epoch(stamp: Any) -> float | None:
    try:
        return time.mktime(time.strptime(str(stamp), "%Y-%m-%dT%H:%M:%S"))
    except (TypeError, ValueError, OverflowError):
        return None
