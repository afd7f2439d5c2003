"""Stored studies -> the standard layout under OUTPUT_DIR.

Per experiment: ``experiments/{experiment}_results.json``, ``experiments/{experiment}_training_losses.png``,
``best_model_{experiment}.pt``. Per batch: ``experiments/batch_results.json``,
``experiments/experiment_comparison.csv`` (+ ``.png``), and ``experiments/trials.parquet`` and
``experiments/history.parquet``. Every file is written atomically (temporary name, then rename).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from analysis.load import DICT_COLUMNS, HISTORY_COLUMNS, TRAIN_LOG_COLUMNS, ended_runs, evals, find_runs, load_run, load_runs, with_added_runs
from analysis.plots import plot_comparison, plot_training_losses
from analysis.search_views import export_search, stored_run_search
from analysis.significance import COLUMNS as SIGNIFICANCE_COLUMNS, NO_FIGURE, UNFINISHED_VERDICT, ci95_half_width, differences
from slm_tune.checkpoint_files import CHECKPOINT_FILE, DAMAGED_FILE_ERRORS, UnsafeFileError, read_history
from slm_tune.errors import UserError, first_error_line
from slm_tune.metrics import SUMMARY_METRICS
from slm_tune.storage import local_run, read_study_file
from slm_tune.files import atomic_write as _atomic, clean_json as _clean, read_json, write_json

METRICS = SUMMARY_METRICS  # the comparison's columns, from the one registry (slm_tune/metrics.py)
CSV_COLUMNS = ["experiment", "study", "status"] + METRICS + ["runs"]


# ----------------------------------------------------------------------------- best checkpoints

def _last_val_loss(history: Any) -> float | None:
    try:
        val = history[-1]["val_loss"]
        return float(val) if val is not None and math.isfinite(val) else None
    except (LookupError, TypeError, ValueError):
        return None


def _load_checkpoint(d: Path, refused: list[str] | None = None) -> dict[str, Any] | None:
    """The checkpoint's state, or None for one that is incomplete or damaged (never used) or that
    holds more than data (refused unread; its one-line reason is added to `refused`)."""
    from slm_tune.model.checkpoints import load_state  # torch: only once a best model is written

    try:
        return load_state(d / CHECKPOINT_FILE)
    except UnsafeFileError as e:
        if refused is not None:
            refused.append(str(e))
        return None
    except DAMAGED_FILE_ERRORS:  # a copy cut short by a kill: the next best checkpoint is used
        return None


def _torch_save(obj: Any, path: Path) -> None:
    import torch

    torch.save(obj, path)


def ranked_checkpoints(trial_paths: Iterable[str | Path]) -> list[tuple[float, Path]]:
    """The trials' stored checkpoints with a finite validation loss, lowest first. The loss comes
    from each checkpoint's small history.json; only a checkpoint without one is loaded for it."""
    ranked = []
    for tp in trial_paths:
        for d in sorted(Path(tp).glob("checkpoint_*")):
            history = read_history(d)
            if history is None:
                saved = _load_checkpoint(d)
                history = saved["state"]["history"] if saved else None
            val = _last_val_loss(history)
            if val is not None:
                ranked.append((val, d))
    return sorted(ranked, key=lambda vd: vd[0])


def best_checkpoint(trial_path: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """The trial's stored checkpoint with the lowest validation loss that loads, and its state."""
    for _, d in ranked_checkpoints([trial_path]):
        saved = _load_checkpoint(d)
        if saved is not None:
            return d, saved
    return None


def export_best_model(trials: pd.DataFrame, path: Path, previous: dict[str, Any] | None = None,
                      refused: list[str] | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """Write best_model_{experiment}.pt from the best checkpoint over the experiment's trials;
    return its description and a text sample. `previous` (the experiment's results JSON) says
    which checkpoint the file already holds: if that is still the best, nothing is rewritten.
    A checkpoint refused as unsafe is passed over (the next best is used) and named in `refused`."""
    done = (previous or {}).get("best_checkpoint") or {}
    for _, directory in ranked_checkpoints(trials["trial_path"]):
        if (done.get("checkpoint") == str(directory) and path.is_file()
                and path.stat().st_mtime >= (directory / CHECKPOINT_FILE).stat().st_mtime):
            return done, previous.get("sample")
        saved = _load_checkpoint(directory, refused)
        if saved is None:
            continue
        last = saved["state"]["history"][-1]
        info = {"iteration": last["iteration"], "val_loss": last["val_loss"], "val_bpb": last["val_bpb"],
                "checkpoint": str(directory)}
        payload = {"model": saved["model"], "config": saved["config"], "tokenizer": saved["tokenizer"],
                   "vocab_size": saved["config"]["vocab_size"], **info}
        _atomic(path, lambda tmp: _torch_save(payload, tmp))
        return info, _sample(path)
    return None, None


def _sample(path: Path) -> str | None:
    """A text sample from the exported model, drawn on one thread: during a study the trials
    have the CPUs, and a second pool of threads on them would slow a trial more than it saves."""
    import torch

    from slm_tune.model.generation import SAMPLE_PROMPT, generate_text, load_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, config, _ = load_model(path)
        return generate_text(model, config.vocab_size, SAMPLE_PROMPT, seed=0)
    except (UserError, RuntimeError, ValueError) as e:  # the model is written; its sample says why it is missing
        return f"(no sample: {e})"
    finally:
        torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- tables

def summarize(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per experiment: the mean over its runs that ended (all of them where none did;
    analysis.load.ended_runs), `<metric>_std` when repeated, and `runs` (every run, ended or not)."""
    rows = []
    repeated = bool(len(trials)) and trials.groupby("experiment").size().max() > 1
    for experiment, g in trials.groupby("experiment", sort=False):
        statuses = sorted(set(g["status"]))
        row = {"experiment": experiment, "study": ",".join(sorted(set(g["study"]))),
               "status": statuses[0] if len(statuses) == 1 else "/".join(statuses), "runs": len(g)}
        g = ended_runs(g)[0]  # its figures: the runs that ended, where any did (as its verdict)
        for m in METRICS:
            values = pd.to_numeric(g[m], errors="coerce")
            row[m] = values.mean()
            if repeated:  # no spread from fewer than two runs (one that ended beside a cut one: NaN, not 0)
                row[f"{m}_std"] = values.std(ddof=1) if values.notna().sum() > 1 else (0.0 if len(g) == row["runs"]
                                                                                       else math.nan)
        row["entropy_bpb"] = g["entropy_bpb"].dropna().iloc[0] if g["entropy_bpb"].notna().any() else None
        rows.append(row)
    columns = CSV_COLUMNS + ([f"{m}_std" for m in METRICS] if repeated else []) + ["entropy_bpb"]
    out = pd.DataFrame(rows, columns=columns)
    out["total_params"] = pd.to_numeric(out["total_params"], errors="coerce").round().astype("Int64")  # a count
    return out


def _trial_record(row: pd.Series, history: pd.DataFrame) -> dict[str, Any]:
    h = history[(history["run"] == row["run"]) & (history["experiment"] == row["experiment"])
                & (history["seed"] == row["seed"])]
    record = {k: row[k] for k in row.index if k not in DICT_COLUMNS}
    record["config"] = row["config"]
    for key in ("searched", "config_changes"):  # a search's sampled values; PBT's changes mid-run
        if isinstance(row.get(key), (dict, list)) and row.get(key):
            record[key] = row[key]
    record["history"] = evals(h)[HISTORY_COLUMNS].to_dict("records")
    record["train_log"] = h[h["kind"] == "train"][TRAIN_LOG_COLUMNS].to_dict("records")
    return record


def experiment_record(experiment: str, trials: pd.DataFrame, history: pd.DataFrame,
                      sample: str | None, best: dict[str, Any] | None) -> dict[str, Any]:
    """The {experiment}_results.json document: one run's results, or the mean of repeated runs."""
    summary = summarize(trials).iloc[0].to_dict()
    runs = [_trial_record(r, history) for _, r in trials.iterrows()]
    first = runs[0]
    record = {
        "experiment": experiment, "study": summary["study"], "config": first["config"],
        **{m: summary[m] for m in METRICS},
        "non_embedding_params": _count(first["non_embedding_params"]),
        "history": first["history"] if len(runs) == 1 else _mean_history(evals(history)),
        "train_log": first["train_log"] if len(runs) == 1 else [],
        "dataset": first["dataset"], "tokenizer": first["tokenizer"], "status": summary["status"],
        "seed": first["seed"] if len(runs) == 1 else [r["seed"] for r in runs],
        "trial_id": first["trial_id"] if len(runs) == 1 else [r["trial_id"] for r in runs],
        "trial_path": first["trial_path"] if len(runs) == 1 else [r["trial_path"] for r in runs],
        "error": first["error"] if len(runs) == 1 else [r["error"] for r in runs],
        "entropy_bpb": summary["entropy_bpb"], "precision": first["precision"],
        "iterations": first["iterations"], "best_checkpoint": best, "sample": sample, "runs": len(runs),
        "compiled": first["compiled"] if len(runs) == 1 else [r["compiled"] for r in runs],
        "compile_note": first["compile_note"] if len(runs) == 1 else [r["compile_note"] for r in runs],
    }
    if len(runs) == 1:
        record.update({k: first[k] for k in ("searched", "config_changes") if k in first})
    if len(runs) > 1:
        record.update({f"{m}_std": summary[f"{m}_std"] for m in METRICS})
        record["per_run"] = runs
    return record


def _count(value: Any) -> int | None:
    """A parameter count as an integer (pandas keeps counts as floats beside missing values)."""
    try:
        return int(round(float(value))) if pd.notna(value) else None
    except (TypeError, ValueError):
        return None


def _mean_history(history: pd.DataFrame) -> list[dict[str, Any]]:
    cols = [c for c in HISTORY_COLUMNS if c != "iteration"]
    numbers = history[cols].apply(pd.to_numeric, errors="coerce")  # a column older runs lack is all None
    mean = numbers.groupby(history["iteration"]).mean().reset_index()
    return mean[HISTORY_COLUMNS].to_dict("records")


# ----------------------------------------------------------------------------- the layout

def export_experiment(experiment: str, trials: pd.DataFrame, history: pd.DataFrame, output_dir: Path,
                      refused: list[str] | None = None) -> dict[str, Any]:
    """The per-experiment files: results JSON, loss plot, best model (with a sample). Checkpoints
    refused as unsafe are named in `refused`."""
    exp_dir = output_dir / "experiments"
    t = trials[trials["experiment"] == experiment]
    h = history[history["experiment"] == experiment]
    json_path = exp_dir / f"{experiment}_results.json"
    plot_path = exp_dir / f"{experiment}_training_losses.png"
    previous = read_json(json_path)
    best, sample = export_best_model(t, output_dir / f"best_model_{experiment}.pt", previous, refused)
    record = experiment_record(experiment, t, h, sample, best)
    if _clean(record) == previous and (plot_path.is_file() or not len(h)):
        return record  # written already (when its trial ended): the same files again would cost a plot
    write_json(json_path, record)
    if len(h):
        params = t["total_params"].dropna()
        title = (f"{experiment} on {record['dataset']}"
                 + (f", {params.iloc[0] / 1e6:.1f}M parameters" if len(params) else ""))
        _atomic(plot_path, lambda tmp: plot_training_losses(h, title, tmp))
    return record


def comparison_table(trials: pd.DataFrame, runs: list[Path], reference: str | None = None):
    """(the comparison table, the runs' searches, their searched settings): one row per experiment
    with its searched values and its difference from the reference (analysis/significance.py)."""
    summary = summarize(trials)
    searches = {r: found for r in runs if (found := stored_run_search(r)) is not None}
    searched = list(dict.fromkeys(k for space, _ in searches.values() for k in space.searched))
    summary = with_significance(with_searched_columns(summary, trials, searched), trials, reference)
    if searches:  # a search's comparison is a ranking: best first
        summary = summary.sort_values("best_val_bpb", na_position="last", kind="stable").reset_index(drop=True)
    return summary, searches, searched


def with_significance(summary: pd.DataFrame, trials: pd.DataFrame, reference: str | None) -> pd.DataFrame:
    """The table with each experiment's 95% half-width and its difference from the reference."""
    table = differences(trials, reference)
    out = summary.merge(table, on="experiment", how="left")
    out["best_val_bpb_ci95"] = out["experiment"].map(ci95_half_width(trials, table["reference"].iloc[0]))
    return out


def export_runs(runs: list[Path], output_dir: Path, label: str, command: Iterable[str] | None = None,
                reference: str | None = None) -> dict[str, Any]:
    """Every layout file for these study runs (newest run of an experiment wins)."""
    output_dir = Path(output_dir)
    trials, history = load_runs(runs)
    if trials.empty:
        raise UserError(f"no stored study results under {output_dir}; run a study first, e.g. `python studies.py quick`")
    exp_dir = output_dir / "experiments"
    refused: list[str] = []
    records = [export_experiment(e, trials, history, output_dir, refused) for e in trials["experiment"].unique()]
    summary, searches, searched = comparison_table(trials, runs, reference)
    csv_cols = [c for c in summary.columns if c != "entropy_bpb"]
    _atomic(exp_dir / "experiment_comparison.csv", lambda tmp: summary[csv_cols].to_csv(tmp, index=False))
    flat = with_searched_columns(trials, trials, searched).drop(columns=DICT_COLUMNS)
    _atomic(exp_dir / "trials.parquet", lambda tmp: flat.to_parquet(tmp, index=False))
    _atomic(exp_dir / "history.parquet", lambda tmp: history.to_parquet(tmp, index=False))
    studies = [{**{k: v for k, v in read_study_file(r).items() if k not in ("configs",)}, "run_dir": str(r)} for r in runs]
    batch = {"study": label, "command": list(command) if command else None,
             "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "studies": studies,
             "trials": [_trial_record(r, history) for _, r in trials.iterrows()],
             "experiments": records, "differences": summary[["experiment", *SIGNIFICANCE_COLUMNS]].to_dict("records")}
    write_json(exp_dir / "batch_results.json", batch)
    title = f"{label}: {len(summary)} experiments" + (f" on {trials['dataset'].iloc[0]}" if trials["dataset"].nunique() == 1 else "")
    _atomic(exp_dir / "experiment_comparison.png",
            lambda tmp: plot_comparison(summary, history, title, tmp))
    search_files = {}
    for run_dir in searches:
        search_files[run_dir.name] = export_search(run_dir, trials[trials["run"] == run_dir.name], output_dir)
    return {"searches": search_files, "refused": refused, "csv": exp_dir / "experiment_comparison.csv", "table": format_table(summary, searched),
            "summary": summary, "trials": trials, "history": history}


def with_searched_columns(table: pd.DataFrame, trials: pd.DataFrame, searched: list[str]) -> pd.DataFrame:
    """`table` (one row per experiment or trial) with a column per searched setting, from each
    experiment's sampled values; a setting that is already a column keeps its column."""
    new = [k for k in searched if k not in table.columns]
    if not new:
        return table
    values = {e: (s if isinstance(s, dict) else {}) for e, s in zip(trials["experiment"], trials["searched"])}
    out = table.copy()
    for k in new:
        out[k] = [values.get(e, {}).get(k) for e in out["experiment"]]
    return out


def format_table(summary: pd.DataFrame, searched: Iterable[str] = ()) -> str:
    cols = ["experiment", "status", "runs", "total_params", "training_time_s", "final_val_loss",
            "best_val_loss", "best_val_bpb", "tokens_per_s"]
    searched = [k for k in searched if k in summary.columns and k not in cols]
    view = summary[cols + searched].copy()
    for k in searched:
        view[k] = view[k].map(lambda v: f"{v:.3g}" if isinstance(v, float) and pd.notna(v) else ("-" if v is None else v))
    view["total_params"] = view["total_params"].map(lambda v: f"{v / 1e6:.2f}M" if pd.notna(v) else "-")
    view["training_time_s"] = view["training_time_s"].map(lambda v: f"{v:.0f}s" if pd.notna(v) else "-")
    view["tokens_per_s"] = view["tokens_per_s"].map(lambda v: f"{v:,.0f}" if pd.notna(v) else "-")
    for c in ("final_val_loss", "best_val_loss", "best_val_bpb"):
        view[c] = view[c].map(lambda v: f"{v:.4f}" if pd.notna(v) else "-")
    if "verdict" in summary:
        view["vs reference (95%)"] = [_difference_text(r) for _, r in summary.iterrows()]
        view["verdict"] = summary["verdict"].fillna("-")
    table = view.sort_values("best_val_bpb").to_string(index=False)
    return table + ("\n" + significance_note(summary) if "verdict" in summary else "")


def _difference_text(row: pd.Series) -> str:
    if row.get("verdict") == "reference":
        return "reference"
    if pd.isna(row.get("diff_bpb")):
        return "-"
    interval = f" [{row['diff_low']:+.4f}, {row['diff_high']:+.4f}]" if pd.notna(row.get("diff_low")) else ""
    return f"{row['diff_bpb']:+.4f}{interval}"


def significance_note(summary: pd.DataFrame) -> str:
    """What the verdicts rest on, in a sentence."""
    compared = summary[pd.to_numeric(summary["p_holm"], errors="coerce").notna()]  # Holm's family: the verdicts given
    noise = set(summary.loc[summary["verdict"] != "reference", "noise"].dropna())
    ref = summary["reference"].dropna().iloc[0] if summary["reference"].notna().any() else "-"
    text = (f"differences in best val bits per byte from {ref}, with 95% intervals; verdicts at 5% after Holm's "
            f"correction over {len(compared)} comparison(s)")
    if any("unfinished runs left out" in n for n in noise) or (summary["verdict"] == UNFINISHED_VERDICT).any():
        text += ("; runs that did not end (interrupted or errored) are left out where their experiment has runs "
                 "that ended, and a comparison with no run that ended on a side gives no verdict")
    if any(NO_FIGURE in n for n in noise):
        text += ("; a run that diverged before its first evaluation has no figure: it is left out of its side's "
                 "mean, which then rests on the runs that scored (the noise column says which; a setting that "
                 "diverges for some seeds is riskier than its mean shows)")
    if any("seed sd from" in n for n in noise):
        text += ("; rows with one run on a side take the seed standard deviation of the other side's runs, as if "
                 "the single run varied with its seed as they do (Student's t on their degrees of freedom)")
    if any(n.startswith("evaluation") for n in noise):
        text += ("; 'evaluation' rows have no seed spread: their intervals measure the evaluation's noise alone "
                 "(paired over shared windows where they can be) and leave out seed-to-seed noise, usually the "
                 "larger part (add seeds with --resume --repeats 3)")
    return text


def export_study(results, output_dir: Path, study: str, command: Iterable[str] | None = None,
                 reference: str | None = None) -> dict[str, Any]:
    """The layout for one finished (or stopped) study run, from its ResultGrid (a run in object
    storage is read from the local mirror the study made of it)."""
    run = local_run(results.experiment_path, output_dir, results.filesystem)
    return export_runs(with_added_runs(run), output_dir, study, command, reference)


def compare(output_dir: Path, studies: list[str] | None = None, storage_path: str | None = None,
            reference: str | None = None) -> dict[str, Any]:
    """Rebuild the batch files from every study stored under OUTPUT_DIR, or in a storage path
    (object storage is mirrored first); no Ray cluster needed."""
    runs = find_runs(output_dir, studies, storage_path)
    if not runs:
        which = f" for {', '.join(studies)}" if studies else ""
        raise UserError(f"no stored studies{which} under {storage_path or output_dir}; run one first (e.g. "
                        "`python studies.py quick`) or point --output-dir (or --storage-path) at where you ran it")
    label = ",".join(studies) if studies else "compare"
    return export_runs(runs, output_dir, label, reference=reference)


def export_live(run_dir: Path, experiment: str, view: dict[str, dict[str, Any]], output_dir: Path) -> list[Path]:
    """One experiment's files while its study runs (slm_tune's ResultsExporter calls it when the
    experiment's trial ends), from Ray's live view of its trials; the files written."""
    for v in view.values():
        v["error"] = first_error_line(Path(v["log_dir"])) if v["ray_status"] == "ERROR" else None
    done, history = load_run(run_dir, experiments=[experiment], ray_view=view)
    if not len(done):
        return []
    export_experiment(experiment, done, history, output_dir)
    exp_dir = output_dir / "experiments"
    return [exp_dir / f"{experiment}_results.json", exp_dir / f"{experiment}_training_losses.png"]


def __getattr__(name: str):
    """Studies stored before the live export moved to slm_tune/tune/callbacks name it here (Ray
    pickles a study's callbacks with it): found for them, so that they resume."""
    if name == "ResultsExporter":
        from slm_tune.tune.callbacks.live_export import ResultsExporter

        return ResultsExporter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
