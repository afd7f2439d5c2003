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

from slm_tune.checkpoint_files import CHECKPOINT_FILE, read_owner, write_owner
from slm_tune.config import ExperimentConfig
from slm_tune.space import SearchSpace
from slm_tune.storage import Storage, is_remote
from slm_tune.study_file import trial_config, trial_label


class TuneReporter:
    """The training loop's `report`, into Ray Tune: every report to tune.report (an eval's with its
    checkpoint and the trial that wrote it), and to the trial's TensorBoard files when it has them."""

    def __init__(self, c: ExperimentConfig, board=None):
        self.c, self.board = c, board
        self.node_id = ray.get_runtime_context().get_node_id()
        self.last: dict[str, Any] = {}

    def __call__(self, metrics: dict[str, Any], save_checkpoint) -> None:
        self.last = dict(metrics)
        if self.board is not None:
            self.board.log(metrics)
        tagged = {**metrics, "experiment": self.c.name, "seed": self.c.seed, "node_id": self.node_id}
        if save_checkpoint is None:  # a training-loss report between evals
            tune.report(tagged)
            return
        with tempfile.TemporaryDirectory(prefix="slm-ckpt-") as tmp:
            save_checkpoint(Path(tmp))
            write_owner(Path(tmp), self.c.name, self.c.to_dict(), metrics.get("trained_iterations"))
            tune.report(tagged, checkpoint=tune.Checkpoint.from_directory(tmp))

    def close(self) -> None:
        """The TensorBoard run's hyperparameters and final figures (its last eval, or a divergence)."""
        if self.board is not None:
            last = self.last if self.last.get("kind") == "eval" or self.last.get("status") == "diverged" else None
            self.board.close(self.c.to_dict(), last)


def _start_point(stack: contextlib.ExitStack, c: ExperimentConfig, label: str,
                 trial_root: str | None) -> tuple[Path | None, int | None]:
    """The checkpoint the trial continues from: Ray's, or a newer one of the same run in its
    directory (for object storage, found in the bucket and fetched); and, where it is another
    trial's (PBT's exploit), the steps this trial had trained itself."""
    from slm_tune.train.resume import newest_checkpoint, own_iterations

    ray_checkpoint = tune.get_checkpoint()
    known = stack.enter_context(ray_checkpoint.as_directory()) if ray_checkpoint else None
    remote = trial_root is not None and is_remote(trial_root)
    trial_dir, fetch = (Path(trial_root) / label if trial_root and not remote else None), None
    if remote:  # the trial's checkpoints in the bucket, their small files only; a state when chosen
        storage = Storage(trial_root)
        shadow = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="slm-ckpts-")))
        trial_dir = storage.mirror(label, shadow, skip=lambda rel: not rel.startswith("checkpoint_")
                                   or rel.endswith(CHECKPOINT_FILE))
        fetch = lambda d: storage.mirror(f"{label}/{d.name}", d)  # noqa: E731
    start = newest_checkpoint(trial_dir, Path(known) if known else None, c, fetch)
    owner = read_owner(start) if start is not None else None
    donor = owner is not None and owner.get("trial") != c.name
    return start, own_iterations(trial_dir, c.name) if donor else None


def run_trial(
    point: dict[str, Any],
    configs: Mapping[str, ExperimentConfig],
    cache_dir: str | None,
    threads: int,
    trial_root: str | None = None,
    search: SearchSpace | None = None,
    tensorboard: bool = False,
) -> None:
    """The function trainable (bind the keyword arguments with tune.with_parameters). The trial
    side (torch, the training loop) is imported here, where a trial runs, and never in the driver."""
    import torch

    from slm_tune.data.cache import prepare_tokens
    from slm_tune.train import train
    from slm_tune.train.board import TrialBoard

    name = tune.get_context().get_trial_name() if search is not None else None
    c = trial_config(point, configs, search, name)
    torch.set_num_threads(threads)
    # Built by the driver before the study starts; a node without it builds it under the lock.
    data = prepare_tokens(c.dataset, c.vocab_size, c.data_fraction, cache_dir=cache_dir)
    label = c.name if search is not None else trial_label(point)
    local = trial_root is not None and not is_remote(trial_root)
    reporter = TuneReporter(c, TrialBoard(Path(trial_root) / label) if tensorboard and local else None)
    try:
        with contextlib.ExitStack() as stack:
            start, own = _start_point(stack, c, label, trial_root)
            train(c, data, report=reporter, resume_from=start, threads=threads, own_iterations=own)
    finally:  # also when a scheduler stops the trial early: its last report is its result
        reporter.close()
