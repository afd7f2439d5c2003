"""The trial side's training loop: torch only, no Ray. `train(config, tokens, report)`.

loop.py (the run and its named steps), optimizer.py (AdamW's groups, the schedule), evaluate.py
(batches and the evaluation), reports.py (what a run reports), resume.py (which checkpoint a
trial continues from), board.py (the trial's TensorBoard files).
"""

from slm_tune.train.loop import TrainResult, resolve_precision, train
from slm_tune.train.optimizer import lr_at, make_optimizer

__all__ = ["TrainResult", "lr_at", "make_optimizer", "resolve_precision", "train"]
