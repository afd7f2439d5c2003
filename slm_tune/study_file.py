"""What a study run records about itself in study.json, and the one way a trial's stored point
becomes its experiment.

study.json (written by the driver, slm_tune/tune/run.py) holds the study's resolved experiment
configs, or for a search its space, with the command line, machine and data. Everything that
reads a run afterwards (the trainable, progress, MLflow, analysis) rebuilds a trial's full config
from it and the point Ray stored for the trial, here, so all of them agree.

A point is what Ray keeps as a trial's config: `{"experiment": NAME}` (with `"seed"` when the
study repeats runs) for a study of named experiments, or the sampled values for a search.
"""

from __future__ import annotations

from typing import Any, Mapping

from slm_tune.config import ExperimentConfig
from slm_tune.space import SearchSpace
from slm_tune.storage import read_study_file


def trial_study_file(trial) -> dict[str, Any]:
    """study.json of a running trial's run, through the filesystem Ray stores the run on (a local
    folder or a bucket), so that callbacks read it the same way for both."""
    try:
        storage = trial.storage
        return read_study_file(storage.experiment_fs_path, storage.storage_filesystem)
    except AttributeError:  # a trial without storage yet (Ray sets it when the trial starts)
        return {}


def stored_configs(doc: Mapping[str, Any]) -> dict[str, ExperimentConfig]:
    """The study's experiments as it ran them ({} for a search, or a study.json this version cannot read)."""
    try:
        return {n: ExperimentConfig(**d) for n, d in doc.get("configs", {}).items()}
    except (TypeError, ValueError):
        return {}


def stored_search(doc: Mapping[str, Any]) -> SearchSpace | None:
    """The search's space as it ran; None for a study of named experiments (or one unreadable here)."""
    if not doc.get("search"):
        return None
    try:
        return SearchSpace.from_dict(doc["search"])
    except (KeyError, TypeError, ValueError):
        return None


def trial_config(point: Mapping[str, Any], configs: Mapping[str, ExperimentConfig],
                 search: SearchSpace | None = None, name: str | None = None) -> ExperimentConfig:
    """The experiment a trial's point stands for: a named experiment, with the grid's seed when
    the study repeats runs; in a search, the sampled point's experiment, named after its trial."""
    if search is not None:
        return search.config_for(point, name)
    c = configs[point["experiment"]]
    return c.replace(seed=point["seed"]) if "seed" in point else c


def stored_trial_config(doc: Mapping[str, Any], point: Mapping[str, Any], name: str) -> ExperimentConfig | None:
    """A stored trial's config from its run's study.json and its point; None when this version
    cannot rebuild it (a point of another version's space, a study.json without its configs)."""
    try:
        return trial_config(point, stored_configs(doc), stored_search(doc), name)
    except (KeyError, TypeError, ValueError):
        return None


def trial_label(point: Mapping[str, Any]) -> str:
    """Readable trial names and directories: the experiment, plus the seed when repeated."""
    return f"{point['experiment']}_seed{point['seed']}" if "seed" in point else str(point["experiment"])
