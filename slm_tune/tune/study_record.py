"""The driver's writing of study.json: the study's settings, plan, data and machine, at its start,
and its end (slm_tune/study_file.py and slm_tune/storage.py read it)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import ray

from slm_tune.files import STUDY_FILE, write_json
from slm_tune.storage import Storage, read_study_file
from slm_tune.tune.schedulers import sampler_settings
from slm_tune.tune.study_run import StudyRun


def machine_info() -> dict[str, Any]:
    import platform
    from importlib.metadata import version  # torch's version without importing it (1.6 s)

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": version("torch"), "ray": ray.__version__}


def write_study_file(run: StudyRun, run_dir: Path, data_info: dict[str, dict[str, Any]],
                     storage: Storage | None = None) -> None:
    """study.json in the run directory: what analysis needs without our registry or a cluster
    (and, for object storage, in the run there too, so any machine can read the run)."""
    path = run_dir / STUDY_FILE
    previous = read_study_file(run_dir)
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    doc = {
        "study": run.study, "run": run_dir.name, "command": run.command,
        # where this run's driver writes the layout: the newest driver's (a resumed study's callbacks,
        # pickled with it, follow this, not the directory they were made for)
        "output_dir": str(Path(run.output_dir).resolve()),
        "started_at": previous.get("started_at", now),
        "resumed_at": previous.get("resumed_at", []) + ([now] if run.resume else []),
        "ended_at": None, "machine": machine_info(), "repeats": run.repeats, "first_seed": run.first_seed,
        "adds_to": run.adds_to,
        "scheduler": run.scheduler, "cpus_per_trial": run.cpus_per_trial,
        "configs": {n: c.to_dict() for n, c in run.configs.items()} if run.search is None else {},
        "tokenizers": {n: d["tokenizer"] for n, d in data_info.items()},
        "entropy_bpb": {n: d["entropy_bpb"] for n, d in data_info.items()},
        "data": list(data_info.values()), "n_trials": run.n_trials,
    }
    if run.search is not None:
        doc.update(search=run.search.to_dict(), search_alg=run.search_alg, sampler_seed=run.sampler_seed,
                   sampler=sampler_settings(run),
                   metric=run.metric, objectives=run.goals, constraints=[k.to_dict() for k in run.constraints],
                   num_samples=run.num_samples, time_budget_s=run.time_budget_s, flops_budget=run.flops_budget,
                   optuna_storage=run.optuna_url, optuna_study=run_dir.name if run.optuna_url else None)
    _publish(write_json(path, doc), storage)


def _publish(path: Path, storage: Storage | None) -> None:
    if storage is not None and storage.remote:
        storage.write_bytes(path.read_bytes(), path.parent.name, path.name)


def mark_study_ended(run_dir: Path, storage: Storage | None = None) -> None:
    path = run_dir / STUDY_FILE
    doc = read_study_file(run_dir)
    if not doc:
        return
    doc["ended_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    _publish(write_json(path, doc), storage)
