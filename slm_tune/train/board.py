"""TensorBoard event files, written by the trial itself (tensorboardX: it comes with Ray Tune and
needs no TensorFlow), so the study's driver never imports torch for them.

Each trial writes into its own directory of the study's storage, so `tensorboard --logdir
OUTPUT_DIR/ray_results` shows every trial of every study as `STUDY/TRIAL`: training loss at every
log interval, validation loss and bits per byte at every eval, learning rate and tokens per
second; and when the trial ends, its settings and final metrics in the HParams table.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

SCALARS = {  # report key -> TensorBoard tag
    "train_loss": "loss/train", "val_loss": "loss/val", "val_bpb": "val_bpb", "best_val_bpb": "best_val_bpb",
    "val_bpb_context": "val_bpb_context", "lr": "lr", "tokens_per_s": "tokens_per_s",
    "val_loss_se": "loss/val_se", "val_bpb_se": "val_bpb_se",
}
EVAL_ONLY = ("val_loss", "val_bpb", "best_val_bpb", "val_bpb_context", "val_loss_se", "val_bpb_se")  # training-loss reports carry the last eval's
FINAL = ("best_val_bpb", "best_val_loss", "val_bpb", "val_loss", "train_loss", "tokens_per_s", "elapsed_s")


class TrialBoard:
    def __init__(self, directory: Path):
        from tensorboardX import SummaryWriter

        self.directory = Path(directory)
        self.writer = SummaryWriter(logdir=str(self.directory), flush_secs=30)

    def log(self, metrics: Mapping[str, Any]) -> None:
        step = int(metrics.get("iteration", 0))
        is_eval = metrics.get("kind", "eval") == "eval"
        for key, tag in SCALARS.items():
            value = metrics.get(key)
            if key in EVAL_ONLY and not is_eval:
                continue
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(tag, value, step)
        if is_eval:
            self.writer.flush()

    def close(self, config: Mapping[str, Any], final: Mapping[str, Any] | None) -> None:
        """The HParams row: the trial's settings (numbers, text, true/false) and final metrics."""
        try:
            if final:
                hparams = {k: v for k, v in config.items() if isinstance(v, (int, float, str, bool))
                           and k not in ("description",)}
                metrics = {f"final/{k}": float(final[k]) for k in FINAL
                           if isinstance(final.get(k), (int, float)) and math.isfinite(final[k])}
                self.writer.add_hparams(hparams, metrics, name="hparams")
        finally:
            self.writer.close()
