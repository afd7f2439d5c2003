"""Stored studies -> pandas DataFrames, without a running Ray cluster.

A run directory (``OUTPUT_DIR/ray_results/STUDY``) holds Ray's experiment state, one folder per
trial (params.json, result.json, checkpoints, error.txt) and slm-tune's ``study.json`` (the
study's resolved experiment configs, command line and machine). Ray 2.60 reads a stored
experiment with ``tune.ExperimentAnalysis``; this module uses it for trial statuses and errors,
and reads each trial's reports from its ``result.json`` (so an interrupted study, whose
experiment-state snapshot can lag behind, still shows every report that reached the disk).

Two tables come out:
- trials: one row per trial (the seed's key metrics and more), see TRIAL_COLUMNS;
- history: one row per trial per report: per eval interval (kind "eval": iteration, train_loss,
  val_loss, val_bpb, lr, ...) and per log interval between evals (kind "train": train_loss, lr,
  tokens_per_s). `evals(history)` keeps the first kind.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Collection, Mapping

import pandas as pd

from slm_tune.checkpoint_files import read_history
from slm_tune.errors import first_error_line
from slm_tune.files import STUDY_FILE, read_json
from slm_tune.legacy import old_module_names
from slm_tune.storage import Storage, is_remote, mirror_runs, read_study_file
from slm_tune.study_file import stored_search, stored_trial_config

HISTORY_COLUMNS = ["iteration", "train_loss", "val_loss", "val_bpb", "val_bpb_context", "lr", "elapsed_s", "val_loss_se",
                   "val_bpb_se"]
# history.parquet: a row per report. kind "eval": an eval (val_loss, val_bpb, checkpoint); kind
# "train": a training-loss report between evals (train_loss, lr, tokens_per_s; no val figures).
HISTORY_ALL_COLUMNS = ["kind", *HISTORY_COLUMNS, "tokens_per_s"]
TRAIN_LOG_COLUMNS = ["iteration", "train_loss", "lr", "tokens_per_s", "elapsed_s"]
TRIAL_COLUMNS = [
    "experiment", "study", "run", "seed", "status", "error", "total_params", "non_embedding_params",
    "training_time_s", "final_train_loss", "final_val_loss", "best_val_loss", "best_val_bpb", "final_val_bpb",
    "best_val_bpb_context", "best_val_bpb_se", "best_val_bpb_context_se", "tokens_per_s", "ms_per_token",
    "flops_per_token", "iterations", "train_flops", "max_iters", "dataset", "tokenizer", "precision", "entropy_bpb",
    "trial_id", "trial_path", "ended_at", "compiled", "compile_note", "eval_windows",
]
# per-trial dicts and lists, not in parquet: config, searched and config_changes go to the results
# JSON; best_window_bpb (each eval window's bits per byte at the best eval, for paired differences)
# stays in the trial's result.json
DICT_COLUMNS = ["config", "searched", "config_changes", "best_window_bpb"]
_RAY_STATUS = {"ERROR": "errored", "RUNNING": "interrupted", "PENDING": "interrupted", "PAUSED": "interrupted"}
UNFINISHED = ("interrupted", "errored")  # runs that did not end; finished, diverged and stopped early did


def ended(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs that ended (finished, diverged or stopped early): a run cut off at a tenth of its
    training is no sample of what its settings reach. Figures and verdicts rest on these."""
    return runs[~runs["status"].isin(UNFINISHED)] if "status" in runs else runs


def ended_runs(runs: pd.DataFrame) -> tuple[pd.DataFrame, int, bool]:
    """One experiment's runs for compare: those that ended, with how many unfinished ones that
    leaves out; all of them, flagged unfinished, where none ended (a study looked at while it runs)."""
    done = ended(runs)
    return (done, len(runs) - len(done), False) if len(done) or not len(runs) else (runs, 0, True)


def _checkpoint_history(trial_dir: Path) -> list[dict[str, Any]]:
    """The longest loss history among the trial's checkpoints (each keeps the run's history)."""
    best: list[dict[str, Any]] = []
    for d in trial_dir.glob("checkpoint_*"):
        h = read_history(d)
        if h and (not best or h[-1]["iteration"] > best[-1]["iteration"]):
            best = h
    return best


def _reports(trial_dir: Path, log_dir: Path | None = None, trial_id: str | None = None) -> list[dict[str, Any]]:
    """Every report in the trial's result.json; a resumed trial's redone iterations count once.

    A report the trial made but the driver never logged (the driver stopped first) is taken
    from the history in the trial's newest checkpoint. `log_dir` is where result.json is when
    not in the trial directory (a running study's driver staging directory). A stored
    result.json a kill cut short is read from the Ray staging copy that continues it, when one
    is left (killed_state.staged_results; TRIAL_ID: Ray's record of the trial).
    """
    lines = _result_text(trial_dir, log_dir, trial_id).splitlines()
    if not lines:
        return []
    by_iteration: dict[int, dict[str, Any]] = {}
    for line in lines:
        try:
            r = json.loads(line)
        except ValueError:
            continue  # a line cut short by a crash
        if "iteration" in r:
            by_iteration[int(r["iteration"])] = r
    last = max(by_iteration) if by_iteration else 0
    for h in _checkpoint_history(trial_dir):
        if h["iteration"] not in by_iteration and h["iteration"] < last:
            by_iteration[int(h["iteration"])] = dict(h)
    return [by_iteration[k] for k in sorted(by_iteration)]


def _result_text(trial_dir: Path, log_dir: Path | None, trial_id: str | None) -> str:
    """The stored result.json's text, or its continuation in this run's Ray staging copy when the
    stored file may lack reports (cut short by a kill, or behind the driver's when it stopped)."""
    from slm_tune.tune.killed_state import complete_reports, staged_results

    try:
        text = ((log_dir or trial_dir) / "result.json").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""  # gone: a staging copy may still hold it
    if log_dir not in (None, trial_dir) or complete_reports(text):
        return text  # the driver's own copy (a running study's), or a stored one that holds the trial's last report
    staged = staged_results(trial_dir, trial_id)
    return staged[1] if staged else text


def _ray_trials(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Ray's view of each trial (status, error), keyed by trial directory name."""
    from ray import tune

    from slm_tune.tune.run import drop_unstarted_warnings

    drop_unstarted_warnings()  # a search its budget ended leaves trials that never started
    out: dict[str, dict[str, Any]] = {}
    try:
        with old_module_names():  # a run stored before modules moved pickles their old names
            analysis = tune.ExperimentAnalysis(str(run_dir))
    except (OSError, ValueError, EOFError):  # no experiment state (yet), or a damaged one: the reports still tell
        return out
    for t in analysis.trials:
        error = None
        if t.status == "ERROR":
            error = first_error_line(Path(t.path)) if t.path else None
        out[Path(t.path).name if t.path else str(t)] = {"ray_status": t.status, "trial_id": t.trial_id,
                                                       "error": error}
    return out


def _finite(x: Any) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def load_run(run_dir: str | Path, experiments: Collection[str] | None = None,
             ray_view: Mapping[str, dict[str, Any]] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, history) DataFrames of one stored study run.

    `experiments` reads only those experiments' trials. `ray_view` (trial directory name ->
    ray_status, trial_id, error, log_dir) is Ray's live view of a running study, in place of its
    stored state: a running study's params.json and result.json are written in the driver's
    staging directory (log_dir) and reach the run directory only at Ray's next sync, while
    checkpoints go straight to the run directory.
    """
    run_dir = Path(run_dir)
    meta = read_study_file(run_dir)
    search = stored_search(meta)
    live = ray_view is not None
    ray_view = _ray_trials(run_dir) if ray_view is None else ray_view
    trials, history = [], []
    for name, log_dir in _trial_dirs(run_dir, ray_view, only_view=live and experiments is not None):
        params, reports = read_json(log_dir / "params.json"), None
        if not params:  # emptied: a kill while Ray rewrote it in its copy to the run; each report carries it
            reports = _reports(run_dir / name, log_dir, ray_view.get(name, {}).get("trial_id"))
            params = next((r["config"] for r in reversed(reports) if isinstance(r.get("config"), dict)), {})
        experiment = params.get("experiment", name)
        if not params or (experiments is not None and experiment not in experiments):
            continue
        if reports is None:
            reports = _reports(run_dir / name, log_dir, ray_view.get(name, {}).get("trial_id"))
        row = _trial_row(meta, search, run_dir, name, params, reports, ray_view.get(name, {}))
        trials.append(row)
        history.extend(_history_rows(row, reports))
    trial_df = pd.DataFrame(trials, columns=TRIAL_COLUMNS + DICT_COLUMNS)
    history_df = pd.DataFrame(history, columns=["experiment", "study", "run", "seed", "trial_id"] + HISTORY_ALL_COLUMNS)
    return trial_df, history_df


def _trial_dirs(run_dir: Path, ray_view: Mapping[str, dict[str, Any]], only_view: bool) -> list[tuple[str, Path]]:
    """(trial directory name, where its params.json and result.json are) of every trial to read.
    A running study's exporter (`only_view`) reads just the trials of Ray's view: a trial's export
    reads its own files, not every trial's (which made a study's exports quadratic)."""
    log_dirs = {name: Path(v["log_dir"]) for name, v in ray_view.items() if v.get("log_dir")}
    if only_view:
        names = set(ray_view)
    else:
        names = {p.name for p in run_dir.iterdir() if p.is_dir() and (p / "params.json").exists()} | set(log_dirs)
    return [(name, log_dirs.get(name, run_dir / name)) for name in sorted(names)]


def _finite_values(reports: list[dict[str, Any]], key: str) -> list[float]:
    return [v for v in (_finite(r.get(key)) for r in reports) if v is not None]


def _best_eval_se(evals: list[dict[str, Any]], key: str = "val_bpb") -> float | None:
    """The evaluation standard error of `key` at the eval where it is best (None for runs before it was reported)."""
    scored = [(v, r) for r in evals if (v := _finite(r.get(key))) is not None]
    return _finite(min(scored, key=lambda vr: vr[0])[1].get(f"{key}_se")) if scored else None


def _best_windows(evals: list[dict[str, Any]]) -> dict[str, Any]:
    """The eval windows' fingerprint and their bits per byte at the best eval: the last eval that
    carries them (a run reports them at each new best); None for runs from before they existed."""
    carrying = [r for r in evals if isinstance(r.get("window_bpb"), list)]
    return {"eval_windows": carrying[-1].get("eval_windows") if carrying else None,
            "best_window_bpb": carrying[-1]["window_bpb"] if carrying else None}


def _trial_row(meta: Mapping[str, Any], search, run_dir: Path, name: str, params: dict[str, Any],
               reports: list[dict[str, Any]], ray_info: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's row of the trials table: its settings, status and key figures."""
    experiment = params.get("experiment", name)
    last = reports[-1] if reports else {}
    config, searched = _trial_settings(meta, search, params, last, experiment)
    data = _data_info(meta, experiment, config)
    status = _status(last, ray_info.get("ray_status"), config)
    evals = [r for r in reports if r.get("kind", "eval") == "eval"]
    last_eval = evals[-1] if evals else {}
    best = {k: min(v) if (v := _finite_values(evals, k)) else None
            for k in ("val_loss", "val_bpb", "val_bpb_context")}
    return {
        "experiment": experiment, "study": meta.get("study", run_dir.name), "run": run_dir.name,
        "seed": config.get("seed", last.get("seed")), "status": status,
        "error": ray_info.get("error") if status == "errored" else None,
        "total_params": last.get("total_params"), "non_embedding_params": last.get("non_embedding_params"),
        "training_time_s": last.get("elapsed_s"), "final_train_loss": _finite(last.get("train_loss")),
        "final_val_loss": _finite(last_eval.get("val_loss")), "best_val_loss": best["val_loss"],
        "best_val_bpb": best["val_bpb"], "final_val_bpb": _finite(last_eval.get("val_bpb")),
        "best_val_bpb_context": best["val_bpb_context"], "best_val_bpb_se": _best_eval_se(evals),
        "best_val_bpb_context_se": _best_eval_se(evals, "val_bpb_context"),
        "tokens_per_s": (last_eval or last).get("tokens_per_s"), "ms_per_token": _finite(last_eval.get("ms_per_token")),
        "flops_per_token": last.get("flops_per_token"),
        "iterations": last.get("iteration", 0), "train_flops": last.get("train_flops"),
        "max_iters": config.get("max_iters"),
        "dataset": config.get("dataset"), "tokenizer": data.get("tokenizer"),
        "precision": last.get("precision"), "entropy_bpb": data.get("entropy_bpb"),
        "trial_id": ray_info.get("trial_id", last.get("trial_id")), "trial_path": str(run_dir / name),
        "ended_at": last.get("timestamp"), "config": config, "searched": searched,
        "config_changes": last.get("config_changes") or [],
        "compiled": last_eval.get("compiled"), "compile_note": last_eval.get("compile_note"),
        **_best_windows(evals),
    }


def _trial_settings(meta: Mapping[str, Any], search, params: dict[str, Any], last: dict[str, Any],
                    experiment: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the trial's whole config, the values of its searched settings). A search trial's point is
    the one it ended with (PBT may have changed it: Ray's config rides in each report)."""
    point = last.get("config") if search is not None and isinstance(last.get("config"), dict) else params
    searched = {k: point[k] for k in search.searched if k in point} if search is not None else {}
    config = stored_trial_config(meta, point, experiment)
    if config is not None:
        return config.to_dict(), searched
    if search is not None:  # a point this version cannot rebuild: its sampled values still show
        return {}, searched
    fallback = dict(meta.get("configs", {}).get(experiment, {}))
    if "seed" in params:
        fallback["seed"] = params["seed"]
    return fallback, {}


def _history_rows(trial: Mapping[str, Any], reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A trial's rows of the history table: one per report."""
    rows = []
    for r in reports:
        kind = r.get("kind") or "eval"  # reports from before log_interval were all evals
        row = {k: r.get(k) for k in HISTORY_ALL_COLUMNS}
        if kind == "train":  # the last eval's figures ride along for Tune; not this row's
            row.update(val_loss=None, val_bpb=None, val_bpb_context=None)
        rows.append({**{k: trial[k] for k in ("experiment", "study", "run", "seed", "trial_id")}, **row, "kind": kind})
    return rows


def _data_info(meta: Mapping[str, Any], experiment: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The tokenizer and entropy floor of an experiment's data, as the study recorded them."""
    if experiment in meta.get("tokenizers", {}):
        return {"tokenizer": meta["tokenizers"][experiment], "entropy_bpb": meta.get("entropy_bpb", {}).get(experiment)}
    entries = [d for d in meta.get("data", []) if d.get("dataset") == config.get("dataset")]
    exact = [d for d in entries if d.get("vocab_size") == config.get("vocab_size")
             and d.get("data_fraction") == config.get("data_fraction")]
    return {"tokenizer": exact[0].get("tokenizer") if exact else None,
            "entropy_bpb": entries[0].get("entropy_bpb") if entries else None}


def _status(last: dict[str, Any], ray_status: str | None, config: dict[str, Any]) -> str:
    if ray_status == "ERROR":
        return "errored"
    reported = last.get("status")
    if reported == "diverged":
        return "diverged"
    if reported == "finished":
        return "finished"
    if ray_status == "TERMINATED":
        return "stopped early"  # ended before max_iters: the scheduler stopped it
    return _RAY_STATUS.get(ray_status or "", "interrupted")


def with_added_runs(run: Path) -> list[Path]:
    """A study run and the stored runs beside it whose seeds it adds to (`--resume --repeats`: its
    study file's `adds_to`, followed back), oldest first: one study's seeds, read together."""
    chain = [Path(run)]
    while (before := read_study_file(chain[0]).get("adds_to")) and (chain[0].parent / before).is_dir():
        if chain[0].parent / before in chain:
            break  # a damaged record pointing in a circle
        chain.insert(0, chain[0].parent / before)
    return chain


def find_runs(output_dir: str | Path, studies: list[str] | None = None, storage_path: str | None = None
              ) -> list[Path]:
    """Every stored study run under OUTPUT_DIR/ray_results (or a storage path), oldest first.
    Runs in object storage (s3://...) are mirrored into OUTPUT_DIR/ray_results first."""
    if storage_path and is_remote(storage_path):
        mirror_runs(Storage(storage_path), output_dir, studies)
    elif storage_path:
        output_dir = storage_path
    root = Path(output_dir)
    root = root / "ray_results" if (root / "ray_results").is_dir() else root
    if not root.is_dir():
        return []
    runs = [p for p in root.iterdir() if p.is_dir() and (p / STUDY_FILE).is_file()]
    if studies:
        runs = [p for p in runs if read_study_file(p).get("study") in studies]
    return sorted(runs, key=lambda p: read_study_file(p).get("started_at", ""))


def load_runs(runs: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Many runs; where an experiment (and seed) ran more than once, the newest run wins."""
    frames = [load_run(r) for r in runs]
    if not frames:
        return pd.DataFrame(columns=TRIAL_COLUMNS + DICT_COLUMNS), pd.DataFrame(columns=HISTORY_ALL_COLUMNS)
    trials = pd.concat([f[0] for f in frames], ignore_index=True)
    history = pd.concat([f[1] for f in frames], ignore_index=True)
    # Newest wins: runs are in start order, so keep the last row per experiment and seed
    # (an interrupted later run replaces an earlier one only where it has any report).
    has_reports = trials["iterations"].fillna(0) > 0
    trials = trials[has_reports | ~trials.duplicated(["experiment", "seed"], keep=False)]
    trials = trials.drop_duplicates(["experiment", "seed"], keep="last").reset_index(drop=True)
    keep = set(zip(trials["run"], trials["experiment"], trials["seed"]))
    mask = [(r, e, s) in keep for r, e, s in zip(history["run"], history["experiment"], history["seed"])]
    return trials, history.loc[pd.Series(mask, index=history.index, dtype=bool)].reset_index(drop=True)


def evals(history: pd.DataFrame) -> pd.DataFrame:
    """The eval rows of a history table (those with validation figures)."""
    return history[history["kind"] == "eval"] if "kind" in history.columns else history
