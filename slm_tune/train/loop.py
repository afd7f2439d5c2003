"""The training loop. It knows nothing of Ray: it takes a config, tokens and a report callback.

At every eval interval (and at the end) it calls ``report(metrics, save_checkpoint)``; the caller
may call ``save_checkpoint(directory)`` to write the full training state there. Every
``log_interval`` iterations between evals it calls ``report(metrics, None)`` with the recent
training loss, learning rate and speed (``kind`` "train"; evals are ``kind`` "eval" and alone
carry ``eval_iteration``, which schedulers count in, so they decide on evals only). ``train(...,
resume_from=directory)`` continues from such a state exactly as if the run had never stopped:
model, optimizer, iteration, loss history and every random-number state are restored, so the
losses that follow are the same, bit for bit, on the same machine and thread count.

A run is a `Run` (its model, optimizer, random generators and state) and `train` drives it
through named steps: restore, step, log, evaluate, report, done.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from slm_tune.checkpoint_files import CHECKPOINT_FILE, HISTORY_FILE
from slm_tune.config import ARCHITECTURE, ExperimentConfig
from slm_tune.data.cache import TokenData, check_data
from slm_tune.errors import UserError
from slm_tune.model.checkpoints import load_state
from slm_tune.model.compiling import PROBE_STEPS, CompileCosts, CompiledOrEager, CompilePlan, shape_key
from slm_tune.model.generation import ms_per_token
from slm_tune.model.gpt import GPT
from slm_tune.train.evaluate import EvalResult, Evaluator, batch
from slm_tune.train.optimizer import follow_new_config, load_optimizer_state, lr_at, make_optimizer, set_lr
from slm_tune.train.reports import Reporter

SaveCheckpoint = Callable[[Path], None]


def check_same_architecture(c: ExperimentConfig, saved: dict[str, Any], directory: Path) -> None:
    """A checkpoint continues only under the model shape it was trained with (a setting missing
    from an older checkpoint's config has its default)."""
    default = ExperimentConfig()
    for key in ARCHITECTURE:
        before = saved.get(key, getattr(default, key))
        if before != getattr(c, key):
            raise UserError(f"{directory} holds a model with {key}={before!r}, but this run has {key}="
                            f"{getattr(c, key)!r}; a checkpoint continues only with the model shape it was "
                            "trained at (start a new run to change it)")


Report = Callable[[dict[str, Any], SaveCheckpoint | None], None]


@dataclass
class TrainResult:
    status: str  # finished | diverged
    history: list[dict[str, Any]] = field(default_factory=list)
    compile: dict[str, Any] = field(default_factory=dict)  # compiled?, and why (slm_tune/model/compiling.py)

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


def bf16_supported() -> bool:
    """True where the CPU does bfloat16 matmuls natively (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str) -> str:
    if precision == "auto":
        return "bfloat16" if bf16_supported() else "float32"
    return precision


class Run:
    """One training run: the model, its optimizer, the batch generator and the state a
    checkpoint keeps (iteration, best loss, history, timings)."""

    def __init__(self, c: ExperimentConfig, data: TokenData, precision: str):
        self.c, self.data, self.precision = c, data, precision
        self.autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bfloat16"
                         else contextlib.nullcontext())
        torch.manual_seed(c.seed)
        self.model = GPT(c)
        self.optimizer = make_optimizer(self.model, c)
        self.batch_gen = torch.Generator().manual_seed(c.seed)
        # trained_iterations: the steps this trial itself trained (after a PBT exploit, not the donor's)
        self.state: dict[str, Any] = {"iteration": 0, "best_val_loss": math.inf, "history": [],
                                      "elapsed_s": 0.0, "train_s": 0.0, "eval_s": 0.0, "trained_iterations": 0}
        self.train_high = len(data.train) - c.block_size - 1

    def restore(self, directory: Path, own_iterations: int | None = None) -> None:
        """Continue from a checkpoint: weights, optimizer, random states and the run's state. A
        checkpoint of another trial (PBT's exploit) brings its weights, not its compute: the run
        counts `own_iterations`, the steps this trial trained before (0 when not given)."""
        saved = load_state(Path(directory) / CHECKPOINT_FILE)
        check_same_architecture(self.c, saved.get("config", {}), directory)
        self.model.load_state_dict(saved["model"])
        load_optimizer_state(self.optimizer, saved["optimizer"])
        self.batch_gen.set_state(saved["batch_rng"])
        torch.set_rng_state(saved["torch_rng"])
        self.state = saved["state"]
        donor = saved.get("config", {}).get("name", self.c.name) != self.c.name
        if donor:
            self.state["trained_iterations"] = int(own_iterations or 0)
        elif "trained_iterations" not in self.state:  # a checkpoint from before the count
            self.state["trained_iterations"] = self.state["iteration"]
        follow_new_config(self.c, saved.get("config", {}), self.state)

    def save_checkpoint(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        torch.save({
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "batch_rng": self.batch_gen.get_state(), "torch_rng": torch.get_rng_state(),
            "state": self.state, "config": self.c.to_dict(), "tokenizer": self.data.meta["tokenizer"],
        }, directory / CHECKPOINT_FILE)
        # The loss history, readable without torch: a report that a stopping driver never logged
        # is still in the history of the checkpoint the trial resumes from.
        (directory / HISTORY_FILE).write_text(json.dumps(self.state["history"]), encoding="utf-8")

    def step(self, forward: CompiledOrEager) -> tuple[float, float]:
        """One optimisation step: (its training loss, its seconds)."""
        t0 = time.perf_counter()
        it = self.state["iteration"]
        set_lr(self.optimizer, lr_at(self.c, it))
        offsets = torch.randint(0, self.train_high, (self.c.batch_size,), generator=self.batch_gen).numpy()
        x, y = batch(self.data.train, offsets, self.c.block_size)
        with self.autocast:
            loss = forward(x, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.c.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.c.grad_clip)
        self.optimizer.step()
        loss_value = loss.item()
        self.state["iteration"] = it + 1
        self.state["trained_iterations"] += 1
        dt = time.perf_counter() - t0
        self.state["train_s"] += dt
        self.state["elapsed_s"] += dt
        return loss_value, dt

    def evaluate(self, evaluator: Evaluator) -> EvalResult:
        t1 = time.perf_counter()
        result = evaluator(self.model)
        dt = time.perf_counter() - t1
        self.state["eval_s"] += dt
        self.state["elapsed_s"] += dt
        return result


class CompileWatch:
    """compile="auto" deciding as the run goes: it times eager steps (after the first), starts
    compiling when that pays, and times the first compiled steps for the machine's record."""

    def __init__(self, plan: CompilePlan, forward: CompiledOrEager, max_iters: int):
        self.plan, self.forward, self.max_iters = plan, forward, max_iters
        self.compiled_steps: list[float] = []  # the first compiled step (it compiles), then PROBE_STEPS more

    def observe(self, seconds: float, iteration: int, first_step: bool) -> None:
        if self.forward.active and len(self.compiled_steps) <= PROBE_STEPS:
            self.compiled_steps.append(seconds)
            if len(self.compiled_steps) == PROBE_STEPS + 1:
                self.plan.compiled_steps(self.compiled_steps)
        elif not self.forward.active and not first_step and not self.plan.decided:
            if self.plan.observe_eager_step(seconds, self.max_iters - iteration):
                self.forward.start()

    def done(self) -> dict[str, Any]:
        """The plan's record, once the run has ended."""
        self.plan.too_short()
        if self.forward.failed and self.plan.compiled:
            self.plan.compiled, self.plan.why = False, f"{self.plan.why}; compiling failed ({self.forward.failed}), so it ran eager"
        self.plan.finish()
        return self.plan.summary()


def train(
    c: ExperimentConfig,
    data: TokenData,
    report: Report | None = None,
    resume_from: Path | None = None,
    threads: int | None = None,
    own_iterations: int | None = None,
) -> TrainResult:
    """Train `c` on `data`, reporting at every eval interval; see the module docstring.
    `own_iterations`: the steps this trial trained before, when `resume_from` is another trial's
    checkpoint (PBT)."""
    check_data(c, data)
    if threads:
        torch.set_num_threads(threads)
    run = Run(c, data, resolve_precision(c.precision))
    if resume_from is not None:
        run.restore(Path(resume_from), own_iterations)
    plan = CompilePlan(c.compile, shape_key(c, run.precision), CompileCosts(data.path.parent.parent))
    forward = CompiledOrEager(run.model, plan.compiled)
    watch = CompileWatch(plan, forward, c.max_iters)
    reporter = Reporter(c, run, plan, report)
    evaluator = Evaluator(c, data.validation, run.autocast)
    run.model.train()
    status = "finished"
    while run.state["iteration"] < c.max_iters:
        loss, dt = run.step(forward)
        it = run.state["iteration"]
        watch.observe(dt, it, reporter.first_step)
        if not math.isfinite(loss):
            reporter.eval_report(loss, EvalResult(math.nan, math.nan, math.nan), "diverged")
            status = "diverged"
            break
        is_eval = it % c.eval_interval == 0 or it == c.max_iters
        reporter.after_step(loss, dt, is_eval)
        if is_eval and not _evaluate(run, evaluator, reporter, plan):
            status = "diverged"
            break
    return TrainResult(status, run.state["history"], watch.done())


def _evaluate(run: Run, evaluator: Evaluator, reporter: Reporter, plan: CompilePlan) -> bool:
    """An eval and its report; False if the model has diverged."""
    result = run.evaluate(evaluator)
    train_loss = reporter.interval_train_loss()
    if not math.isfinite(result.loss):
        reporter.eval_report(train_loss, result, "diverged")
        return False
    finished = run.state["iteration"] == run.c.max_iters
    if finished:
        plan.too_short()
        run.state["ms_per_token"] = ms_per_token(run.model, run.autocast)
    reporter.eval_report(train_loss, result, "finished" if finished else "running")
    return True
