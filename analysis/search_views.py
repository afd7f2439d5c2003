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

from analysis.load import ended
from slm_tune.config import EXPERIMENT_CONFIGS
from slm_tune.files import atomic_write, write_text
from slm_tune.metrics import METRICS
from slm_tune.objectives import constraints_from, measured_filter
from slm_tune.space import SearchSpace
from slm_tune.storage import read_study_file
from slm_tune.study_file import stored_search

IMPORTANCE_COLUMNS = ["setting", "importance", "spearman", "trials", "evaluator", "note"]


def stored_run_search(run_dir: Path) -> tuple[SearchSpace, dict[str, Any]] | None:
    """The search a stored run sampled, and its study.json; None for a study of named experiments."""
    meta = read_study_file(run_dir)
    space = stored_search(meta)
    return (space, meta) if space is not None else None


def search_table(trials: pd.DataFrame, space: SearchSpace, metric: str = "best_val_bpb",
                 also: list[str] | tuple[str, ...] = ()) -> pd.DataFrame:
    """One row per trial: name, status, the metric (and the figures in `also`: further objectives,
    constrained metrics), each searched setting; best first, in the metric's direction."""
    figures = list(dict.fromkeys([metric, *also]))
    rows = []
    for _, t in trials.iterrows():
        searched = t.get("searched") if isinstance(t.get("searched"), dict) else {}
        rows.append({"trial": t["experiment"], "status": t["status"], **{m: _metric(t, m) for m in figures},
                     "iterations": t["iterations"], "ended_at": t["ended_at"],
                     "training_time_s": t["training_time_s"],
                     **{k: searched.get(k) for k in space.searched}})
    columns = list(dict.fromkeys(["trial", "status", *figures, "iterations", "ended_at", "training_time_s",
                                  *space.searched]))
    table = pd.DataFrame(rows, columns=columns)
    ascending = METRICS[metric].direction == "min" if metric in METRICS else True
    return table.sort_values(metric, ascending=ascending, na_position="last", kind="stable").reset_index(drop=True)


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
    inside = [all(_in(space, k, v) for k, v in zip(space.searched, r)) for r in done[space.searched].values]
    done = done[pd.Series(inside, index=done.index, dtype=bool)]  # a plain [] would select no columns
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
    """The first row with the metric (search_table sorts best first) among the trials that ended
    (analysis.load.ended), or among all where none did (a search looked at while it runs)."""
    ok = table[table[metric].notna()]
    done = ended(ok)
    return done.iloc[0] if len(done) else ok.iloc[0] if len(ok) else None


def best_experiment_toml(name: str, search: str, trial: str, config: Mapping[str, Any], metric: str,
                         value: float, output_dir_hint: str = "experiments", close: str = "",
                         figures: str = "", file: str | None = None) -> str:
    """A trial as an experiments-file entry: every setting that differs from baseline.
    `close`: the trials within the noise of it, named in a comment; `figures`: its objectives, for
    a Pareto entry; `file`: the TOML's name, when it holds several entries."""
    base = EXPERIMENT_CONFIGS["baseline"].to_dict()
    what = f"A Pareto trial of search {search!r}: {trial}, {figures}." if figures else \
        f"The best trial of search {search!r}: {trial}, {metric} {value:.4f}."
    lines = [
        f"# {what}",
        *([f"# Within the noise of it: {close}."] if close else []),
        f"# Run it: python studies.py run {name} --experiments-file {output_dir_hint}/{file or name}.toml",
        f"[{name}]",
        'base = "baseline"',
        f"description = {json.dumps(f'{search} {trial}: {figures}' if figures else f'best of search {search} ({trial}, {metric} {value:.4f})')}",
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


def export_search(run_dir: Path, trials: pd.DataFrame, output_dir: Path) -> dict[str, Any]:
    """`search_{name}.png`, `search_{name}_importance.csv` and `search_{name}_best.toml` for one
    stored search run (its trials as analysis.load returns them); with several objectives also
    `search_{name}_pareto.csv` and `.png`, and the front's trials in the best TOML. The best trial
    and the front are chosen among the trials that meet the search's constraints."""
    from analysis.search_plots import plot_search

    found = stored_run_search(run_dir)
    if found is None or trials.empty:
        return {}
    space, meta = found
    metric = meta.get("metric", "best_val_bpb")
    objectives = list(meta.get("objectives") or [metric])
    constraints = constraints_from(meta.get("constraints", []))
    name = meta.get("study", space.name)
    exp_dir = Path(output_dir) / "experiments"
    table = search_table(trials, space, metric, [*objectives, *(k.metric for k in constraints)])
    written: dict[str, Any] = {}
    imp = importance(table, space, metric)
    written["importance"] = atomic_write(exp_dir / f"search_{name}_importance.csv",
                                         lambda tmp: imp.to_csv(tmp, index=False))
    started = _epoch(meta.get("started_at"))
    written["plot"] = atomic_write(
        exp_dir / f"search_{name}.png",
        lambda tmp: plot_search(table, space, metric, started, f"search {name}: {len(table)} trials, "
                                f"{meta.get('search_alg', '?')} sampler, {meta.get('scheduler', 'fifo')} scheduler",
                                tmp))
    feasible = table[[measured_filter(constraints)(r) for r in table.to_dict("records")]]
    if constraints:
        written["feasible"] = f"{len(feasible)} of {len(table)} trials meet {', '.join(k.text for k in constraints)}"
    entries = _best_entry(feasible, trials, name, metric, written)
    if len(objectives) > 1:
        entries += _export_front(table, feasible, trials, space, name, objectives, exp_dir, written)
    if entries:
        written["best"] = write_text(exp_dir / f"search_{name}_best.toml", "\n".join(text for _, text in entries))
        written["entries"] = [entry for entry, _ in entries]
    return written


def _best_entry(feasible: pd.DataFrame, trials: pd.DataFrame, name: str, metric: str,
                written: dict[str, Any]) -> list[tuple[str, str]]:
    """[(entry name, TOML text)] for the best trial by the (first) metric, or []; the trials
    within the noise of it go to written["within_noise"]."""
    best = best_trial(feasible, metric)
    if best is None:
        return []
    row = trials[trials["experiment"] == best["trial"]].iloc[0]
    entry = f"search_{name}_best"
    close = within_noise_of(trials, best["trial"]) if "val_" in metric else ""  # a loss: it has an eval's noise
    if close:
        written["within_noise"] = close
    return [(entry, best_experiment_toml(entry, name, best["trial"], row["config"], metric, float(best[metric]),
                                         close=close))]


def _export_front(table: pd.DataFrame, feasible: pd.DataFrame, trials: pd.DataFrame, space: SearchSpace, name: str,
                  objectives: list[str], exp_dir: Path, written: dict[str, Any]) -> list[tuple[str, str]]:
    """The Pareto front's CSV and plot; its trials as best-TOML entries."""
    from analysis.pareto import PARETO_PREFIX, pareto_table
    from analysis.pareto_plots import plot_pareto

    front = pareto_table(feasible, objectives)
    columns = [PARETO_PREFIX, "trial", *objectives, "status", "iterations", *space.searched]
    written["pareto"] = atomic_write(exp_dir / f"search_{name}_pareto.csv",
                                     lambda tmp: front[columns].to_csv(tmp, index=False))
    shown = table.assign(feasible=table["trial"].isin(feasible["trial"]))
    written["pareto_plot"] = atomic_write(
        exp_dir / f"search_{name}_pareto.png",
        lambda tmp: plot_pareto(shown, front, objectives, f"search {name}: Pareto front of {len(front)} among "
                                f"{int(shown[objectives].notna().all(axis=1).sum())} trials", tmp))
    entries = []
    for r in front.itertuples(index=False):
        row = trials[trials["experiment"] == r.trial].iloc[0]
        entry = f"search_{name}_{PARETO_PREFIX}_{getattr(r, PARETO_PREFIX)}"
        figures = ", ".join(f"{o} {_short(getattr(r, o))}" for o in objectives)
        entries.append((entry, best_experiment_toml(entry, name, r.trial, row["config"], objectives[0],
                                                    float(getattr(r, objectives[0])), figures=figures,
                                                    file=f"search_{name}_best")))
    return entries


def _short(value: Any) -> str:
    v = float(value)
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"


def within_noise_of(trials: pd.DataFrame, best: str) -> str:
    """The trials whose best val bits per byte is not resolved from the best trial's (their
    difference and 95% interval, and what noise it rests on; analysis/significance.py)."""
    from analysis.significance import UNFINISHED_VERDICT, differences

    table = differences(trials, reference=best)
    others = table[table["verdict"] != "reference"]
    if len(others) and (others["verdict"] == UNFINISHED_VERDICT).all():
        return "not known: no comparison with it rests on trials that ended (the others, or it, were interrupted)"
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
