"""The Ray Tune function trainable: grid point -> ExperimentConfig -> train -> tune.report.

A thin adapter: everything about training lives in slm_tune.train, which knows nothing of Ray.
The driver imports this module only to hand run_trial to Tune, so torch and the training code
are imported where a trial runs (the worker), not in the driver, whose start-up they would
lengthen by two seconds.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any, Mapping

import ray
from ray import tune

from slm_tune.checkpoints import CHECKPOINT_FILE
from slm_tune.config import ExperimentConfig


def trial_config(point: Mapping[str, Any], configs: Mapping[str, ExperimentConfig]) -> ExperimentConfig:
    """The experiment a grid point names, with the grid's seed when the study repeats runs."""
    c = configs[point["experiment"]]
    return c.replace(seed=point["seed"]) if "seed" in point else c


def trial_label(point: Mapping[str, Any]) -> str:
    """Readable trial names and directories: the experiment, plus the seed when repeated."""
    return f"{point['experiment']}_seed{point['seed']}" if "seed" in point else str(point["experiment"])


def _checkpoint_iteration(directory: Path) -> int:
    import torch

    state = torch.load(directory / CHECKPOINT_FILE, map_location="cpu", weights_only=False)
    return int(state["state"]["iteration"])


def newest_checkpoint(trial_dir: Path | None, known: Path | None) -> Path | None:
    """The newest complete checkpoint: Ray's, or a newer one already in the trial's directory.

    After the driver is killed, Ray restores from the checkpoint in its last experiment-state
    snapshot, which can lag several reports behind what is on disk (see ray-tune-notes). A
    checkpoint that does not load (a copy cut short) is skipped.
    """
    best, best_it = known, -1
    if known is not None:
        try:
            best_it = _checkpoint_iteration(known)
        except Exception:
            best, best_it = None, -1
    if trial_dir is not None and trial_dir.is_dir():
        for d in trial_dir.glob("checkpoint_*"):
            try:
                it = _checkpoint_iteration(d)
            except Exception:
                continue
            if it > best_it:
                best, best_it = d, it
    return best


def run_trial(
    point: dict[str, Any],
    configs: Mapping[str, ExperimentConfig],
    cache_dir: str | None,
    threads: int,
    trial_root: str | None = None,
) -> None:
    """The function trainable (bind the keyword arguments with tune.with_parameters)."""
    import torch

    from slm_tune.data.cache import prepare_tokens
    from slm_tune.train import train

    c = trial_config(point, configs)
    torch.set_num_threads(threads)
    # Built by the driver before the study starts; a node without it builds it under the lock.
    data = prepare_tokens(c.dataset, c.vocab_size, c.data_fraction, cache_dir=cache_dir)

    def report(metrics: dict[str, Any], save_checkpoint) -> None:
        with tempfile.TemporaryDirectory(prefix="slm-ckpt-") as tmp:
            save_checkpoint(Path(tmp))
            tune.report({**metrics, "experiment": c.name, "seed": c.seed, "node_id": node_id},
                        checkpoint=tune.Checkpoint.from_directory(tmp))

    node_id = ray.get_runtime_context().get_node_id()
    ray_checkpoint = tune.get_checkpoint()
    trial_dir = Path(trial_root) / trial_label(point) if trial_root else None
    with ray_checkpoint.as_directory() if ray_checkpoint else contextlib.nullcontext() as known:
        start = newest_checkpoint(trial_dir, Path(known) if known else None)
        train(c, data, report=report, resume_from=start, threads=threads)

