"""What a run reports: a training-loss report every log_interval, an eval report (with a
checkpoint to save) at every eval, and the run's loss history that checkpoints keep."""

from __future__ import annotations

import math

import numpy as np

from slm_tune.config import ExperimentConfig
from slm_tune.model.counts import flops_per_token, param_counts
from slm_tune.train.optimizer import lr_at

HISTORY_KEYS = ("iteration", "train_loss", "val_loss", "val_bpb", "best_val_bpb", "val_bpb_context", "lr", "elapsed_s", "val_loss_se",
                "val_bpb_se")
# the last eval's, in training reports: Tune wants a searcher's metrics (every --objective) in every report
CARRIED = ("val_loss", "best_val_loss", "val_bpb", "best_val_bpb", "best_val_bpb_context")


class Reporter:
    """Turns a run's steps and evals into reports for `report(metrics, save_checkpoint)`."""

    def __init__(self, c: ExperimentConfig, run, plan, report):
        self.c, self.run, self.plan, self.report = c, run, plan, report
        self.tokens_per_iter = c.batch_size * c.block_size
        self.total_params, self.non_embedding = param_counts(c)
        self.flops_per_token = flops_per_token(c)
        self.sizes = {"total_params": self.total_params, "non_embedding_params": self.non_embedding,
                      "flops_per_token": self.flops_per_token}
        self.tokens_per_byte = run.data.tokens_per_byte("validation")
        self.interval_losses: list[float] = []
        self._reset_log()
        self.first_step = True  # a run's first step compiles: left out of the recent speed
        state = run.state
        self.last_eval: dict[str, float] = {}
        if state["history"]:
            self.last_eval = {k: state["history"][-1].get(k, math.nan) for k in ("val_loss", "val_bpb")}
            self.last_eval.update(best_val_loss=state["best_val_loss"], best_val_bpb=self.bpb(state["best_val_loss"]),
                                  best_val_bpb_context=self.best_context())

    def bpb(self, loss: float) -> float:
        """Nats per token -> bits per byte of validation text."""
        return loss * self.tokens_per_byte / math.log(2)

    def best_context(self, current: float = math.nan) -> float:
        """The best val_bpb_context over the run's evals (and the current one's)."""
        values = [h.get("val_bpb_context", math.nan) for h in self.run.state["history"]] + [current]
        return min((v for v in values if math.isfinite(v)), default=math.nan)

    def _reset_log(self) -> None:
        self.log_losses: list[float] = []
        self.log_seconds, self.log_timed = 0.0, 0

    def after_step(self, loss: float, seconds: float, is_eval: bool) -> None:
        """Count a finished step; a training-loss report when a log interval ends between evals."""
        self.interval_losses.append(loss)
        self.log_losses.append(loss)
        if not self.first_step:
            self.log_seconds += seconds
            self.log_timed += 1
        self.first_step = False
        logs = bool(self.c.log_interval) and self.run.state["iteration"] % self.c.log_interval == 0
        if logs and not is_eval and self.report is not None:
            self._train_report()
        if logs or is_eval:
            self._reset_log()

    def interval_train_loss(self) -> float:
        """The recent training loss: the last quarter of the interval, so that it describes (nearly)
        the model being evaluated rather than lagging behind it. Starts the next interval."""
        losses, self.interval_losses = self.interval_losses, []
        return float(np.mean(losses[-max(1, len(losses) // 4):]))

    def _train_report(self) -> None:
        """No checkpoint; the last eval's values carried (Tune wants the searcher's metric in every
        report; NaN before the first eval)."""
        state, it = self.run.state, self.run.state["iteration"]
        speed = self.log_timed * self.tokens_per_iter / self.log_seconds if self.log_seconds > 0 and self.log_timed else 0.0
        self.report({
            "iteration": it, "kind": "train", "train_loss": float(np.mean(self.log_losses)),
            "lr": lr_at(self.c, it - 1), "tokens_seen": it * self.tokens_per_iter, "elapsed_s": state["elapsed_s"],
            "tokens_per_s": speed, "status": "running", "max_iters": self.c.max_iters, **self.sizes,
            "train_flops": self.train_flops(),
            "ms_per_token": state.get("ms_per_token", math.nan),
            **{k: self.last_eval.get(k, math.nan) for k in CARRIED},
        }, None)

    def train_flops(self) -> float:
        """The training FLOPs this trial has spent: the steps it trained itself (after a PBT
        exploit the donor's steps are not counted again) x tokens per step x FLOPs per token."""
        return self.run.state["trained_iterations"] * self.tokens_per_iter * self.flops_per_token

    def eval_report(self, train_loss: float, result, status: str) -> None:
        """The report of an eval (`result`: slm_tune.train.evaluate.EvalResult), with its checkpoint."""
        state, it = self.run.state, self.run.state["iteration"]
        val_loss, val_context = result.loss, result.context_loss
        improved = math.isfinite(val_loss) and val_loss < state["best_val_loss"]
        if improved:
            state["best_val_loss"] = val_loss
        best = state["best_val_loss"] if math.isfinite(state["best_val_loss"]) else val_loss
        metrics = {
            "iteration": it, "kind": "eval", "eval_iteration": it, "train_loss": train_loss, "val_loss": val_loss,
            "best_val_loss": best, "val_bpb": self.bpb(val_loss), "val_bpb_context": self.bpb(val_context),
            "best_val_bpb": self.bpb(best), "best_val_bpb_context": self.best_context(self.bpb(val_context)),
            "val_loss_se": result.loss_se, "val_bpb_se": self.bpb(result.loss_se),
            "val_bpb_context_se": self.bpb(result.context_loss_se),
            "lr": lr_at(self.c, max(it - 1, 0)),
            "tokens_seen": it * self.tokens_per_iter, "elapsed_s": state["elapsed_s"], "eval_s": state["eval_s"],
            "tokens_per_s": it * self.tokens_per_iter / state["train_s"] if state["train_s"] else 0.0,
            "status": status, "precision": self.run.precision, **self.sizes,
            # timed once training has ended (slm_tune.model.generation); NaN until then
            "ms_per_token": state.get("ms_per_token", math.nan),
            "train_flops": self.train_flops(), "trained_iterations": state["trained_iterations"],
            "eval_flops": it * self.tokens_per_iter * self.flops_per_token,  # the weights' FLOPs: schedulers' clock
            "max_iters": self.c.max_iters,
            **(self.plan.summary() if self.plan.decided else {"compiled": False, "compile_note": "auto: timing eager steps"}),
        }
        if state.get("config_changes"):
            metrics["config_changes"] = state["config_changes"]
        if result.windows:
            metrics["eval_windows"] = result.windows
        if improved and result.window_losses is not None:  # the best eval's, for paired comparisons (a few KB)
            metrics["window_bpb"] = [round(self.bpb(float(v)), 5) for v in result.window_losses]
        state["history"].append({k: metrics[k] for k in HISTORY_KEYS})
        self.last_eval.update({k: metrics[k] for k in CARRIED})
        if self.report is not None:
            self.report(metrics, self.run.save_checkpoint)
