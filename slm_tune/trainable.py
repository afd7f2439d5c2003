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
from typing import Any, Callable, Mapping

import ray
from ray import tune

from slm_tune.checkpoints import (CHECKPOINT_FILE, UnsafeFileError, checkpoint_iteration, load_state, read_history,
                                  read_owner, write_owner)
from slm_tune.config import ExperimentConfig
from slm_tune.search import SearchSpace
from slm_tune.storage import Storage, is_remote


def trial_config(point: Mapping[str, Any], configs: Mapping[str, ExperimentConfig],
                 search: SearchSpace | None = None, name: str | None = None) -> ExperimentConfig:
    """The experiment a grid point names, with the grid's seed when the study repeats runs; in a
    search, the experiment the sampled point stands for, named after its trial."""
    if search is not None:
        return search.config_for(point, name)
    c = configs[point["experiment"]]
    return c.replace(seed=point["seed"]) if "seed" in point else c


def trial_label(point: Mapping[str, Any]) -> str:
    """Readable trial names and directories: the experiment, plus the seed when repeated."""
    return f"{point['experiment']}_seed{point['seed']}" if "seed" in point else str(point["experiment"])


def _continues(candidate: Path, known: Path) -> bool:
    """True if `candidate`'s loss history extends `known`'s: the same run, further on."""
    mine, theirs = read_history(candidate), read_history(known)
    if mine is None or theirs is None:
        return True  # checkpoints from before history.json: as before, newest wins
    return mine[:len(theirs)] == theirs


def newest_checkpoint(trial_dir: Path | None, known: Path | None, config: ExperimentConfig | None = None,
                      fetch: Callable[[Path], Any] | None = None) -> Path | None:
    """The checkpoint to start from: Ray's, or a newer one of the same run in the trial's directory.

    After the driver is killed, Ray restores from the checkpoint in its last experiment-state
    snapshot, which can lag several reports behind what is stored (see ray-tune-notes); a newer
    one of the same run (same trial and config, its history extending Ray's) is taken instead,
    if its state loads: a copy cut short is passed over. `fetch(d)` first brings a candidate's
    state where it is kept elsewhere (object storage). A checkpoint of another trial is PBT
    handing over its weights: it is used as given.
    """
    name = config.name if config is not None else None
    if known is not None:
        owner = read_owner(known)
        if owner and name and owner.get("trial") != name:
            return known  # an exploit: continue from the donor's weights, whatever is on our disk
    known_it = -1
    if known is not None:
        try:
            known_it = checkpoint_iteration(known)
        except UnsafeFileError:
            raise
        except Exception:
            known = None
    newer = []
    if trial_dir is not None and trial_dir.is_dir():
        for d in trial_dir.glob("checkpoint_*"):
            owner = read_owner(d)
            if owner and config is not None and owner.get("config") != config.to_dict():
                continue  # another run's weights (another config, or from before a PBT exploit)
            if known is not None and not _continues(d, known):
                continue
            try:
                it = checkpoint_iteration(d)
            except UnsafeFileError:
                raise
            except Exception:
                continue
            if it > known_it:
                newer.append((it, d))
    for _, d in sorted(newer, reverse=True):
        try:
            if fetch is not None:
                fetch(d)
            load_state(d / CHECKPOINT_FILE)
        except UnsafeFileError:
            raise  # refused, not passed over: nothing in it runs, and the user hears of it
        except Exception:
            continue
        return d
    return known


def run_trial(
    point: dict[str, Any],
    configs: Mapping[str, ExperimentConfig],
    cache_dir: str | None,
    threads: int,
    trial_root: str | None = None,
    search: SearchSpace | None = None,
    tensorboard: bool = False,
) -> None:
    """The function trainable (bind the keyword arguments with tune.with_parameters)."""
    import torch

    from slm_tune.data.cache import prepare_tokens
    from slm_tune.train import train

    name = tune.get_context().get_trial_name() if search is not None else None
    c = trial_config(point, configs, search, name)
    torch.set_num_threads(threads)
    # Built by the driver before the study starts; a node without it builds it under the lock.
    data = prepare_tokens(c.dataset, c.vocab_size, c.data_fraction, cache_dir=cache_dir)

    last: dict[str, Any] = {}

    def report(metrics: dict[str, Any], save_checkpoint) -> None:
        last.clear()
        last.update(metrics)
        if board is not None:
            board.log(metrics)
        if save_checkpoint is None:  # a training-loss report between evals
            tune.report({**metrics, "experiment": c.name, "seed": c.seed, "node_id": node_id})
            return
        with tempfile.TemporaryDirectory(prefix="slm-ckpt-") as tmp:
            save_checkpoint(Path(tmp))
            write_owner(Path(tmp), c.name, c.to_dict())
            tune.report({**metrics, "experiment": c.name, "seed": c.seed, "node_id": node_id},
                        checkpoint=tune.Checkpoint.from_directory(tmp))

    node_id = ray.get_runtime_context().get_node_id()
    ray_checkpoint = tune.get_checkpoint()
    label = c.name if search is not None else trial_label(point)
    remote = trial_root is not None and is_remote(trial_root)
    trial_dir = Path(trial_root) / label if trial_root and not remote else None
    board = None
    if tensorboard and trial_dir is not None:
        from slm_tune.tensorboard import TrialBoard

        board = TrialBoard(trial_dir)
    try:
        with contextlib.ExitStack() as stack:
            known = stack.enter_context(ray_checkpoint.as_directory()) if ray_checkpoint else None
            if remote:  # the trial's checkpoints in the bucket, their small files only
                storage = Storage(trial_root)
                shadow = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="slm-ckpts-")))
                trial_dir = storage.mirror(label, shadow, skip=lambda rel: not rel.startswith("checkpoint_")
                                           or rel.endswith(CHECKPOINT_FILE))
            fetch = (lambda d: storage.mirror(f"{label}/{d.name}", d)) if remote else None  # its state, fetched
            start = newest_checkpoint(trial_dir, Path(known) if known else None, c, fetch)
            train(c, data, report=report, resume_from=start, threads=threads)
    finally:  # also when a scheduler stops the trial early: its last report is its result
        if board is not None:
            board.close(c.to_dict(), last if last.get("kind") == "eval" or last.get("status") == "diverged" else None)

