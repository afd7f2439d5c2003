"""The training loop. It knows nothing of Ray: it takes a config, tokens and a report callback.

At every eval interval (and at the end) it calls ``report(metrics, save_checkpoint)``; the caller
may call ``save_checkpoint(directory)`` to write the full training state there. Every
``log_interval`` iterations between evals it calls ``report(metrics, None)`` with the recent
training loss, learning rate and speed (``kind`` "train"; evals are ``kind`` "eval" and alone
carry ``eval_iteration``, which schedulers count in, so they decide on evals only). ``train(...,
resume_from=directory)`` continues from such a state exactly as if the run had never stopped:
model, optimizer, iteration, loss history and every random-number state are restored, so the
losses that follow are the same, bit for bit, on the same machine and thread count.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from slm_tune.config import ExperimentConfig
from slm_tune.checkpoints import CHECKPOINT_FILE, HISTORY_FILE, load_state
from slm_tune.data.cache import TokenData, check_data
from slm_tune.compiling import PROBE_STEPS, CompileCosts, CompilePlan, shape_key
from slm_tune.counts import flops_per_token, param_counts
from slm_tune.model import GPT

log = logging.getLogger(__name__)
EVAL_SEED = 1234  # the validation batches depend only on the data and the batch shape
SaveCheckpoint = Callable[[Path], None]
Report = Callable[[dict[str, Any], SaveCheckpoint], None]


@dataclass
class TrainResult:
    status: str  # finished | diverged
    history: list[dict[str, Any]] = field(default_factory=list)
    compile: dict[str, Any] = field(default_factory=dict)  # compiled?, and why (slm_tune/compiling.py)

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


class CompiledOrEager:
    """The model through torch.compile, falling back to eager where compiling fails (a machine
    without a working C++ compiler, say): a slower run beats a crashed one.

    Each run compiles as in a fresh process. Dynamo keys its caches by GPT.forward's code, which
    every model shares, so in a process that trains one model after another (a reused Ray
    worker) each new shape would be a recompile, and past torch's recompile limit (8 graphs,
    4 runs) the rest would silently run eager.
    """

    def __init__(self, model: GPT, compile_model: bool):
        self.model = model
        self.compiled = None
        self.failed: str | None = None
        if compile_model:
            self.start()

    def start(self) -> None:
        """Compile from the next call on (compile="auto" decides after a few eager steps)."""
        torch.compiler.reset()
        self.compiled = torch.compile(self.model)

    @property
    def active(self) -> bool:
        return self.compiled is not None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.compiled is not None:
            try:
                return self.compiled(x, y)
            except Exception as e:  # inductor/dynamo errors come in many types
                self.compiled, self.failed = None, f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
                log.warning("torch.compile failed (%s); training in eager mode", self.failed)
        return self.model(x, y)


def lr_at(c: ExperimentConfig, it: int) -> float:
    """Linear warmup, then cosine decay to learning_rate * min_lr_ratio at max_iters."""
    if it < c.warmup_iters:
        return c.learning_rate * (it + 1) / (c.warmup_iters + 1)
    span = max(1, c.max_iters - c.warmup_iters)
    progress = min(1.0, (it - c.warmup_iters) / span)
    return c.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (c.learning_rate - c.min_lr)


def make_optimizer(model: GPT, c: ExperimentConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on biases and LayerNorm gains)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": c.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=c.learning_rate, betas=(c.beta1, c.beta2), fused=True)


def _batch(tokens: np.ndarray, offsets: np.ndarray, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.from_numpy(tokens[offsets[:, None] + np.arange(block_size + 1)].astype(np.int64))
    return rows[:, :-1], rows[:, 1:]


def eval_offsets(c: ExperimentConfig, n_tokens: int) -> np.ndarray:
    rng = np.random.default_rng(EVAL_SEED)
    return rng.integers(0, n_tokens - c.block_size - 1, size=(c.eval_iters, c.batch_size))


def _follow_new_config(c: ExperimentConfig, saved: dict[str, Any], state: dict[str, Any],
                       optimizer: torch.optim.AdamW) -> None:
    """Continue another config's weights under `c` (PBT's exploit: a trial takes a better trial's
    checkpoint with perturbed settings). The schedule already follows `c` (lr_at reads it); the
    optimizer's own copies of the settings are set from it here, and the change is recorded:
    the list is the weights' lineage (a donor's own earlier exploits come with its checkpoint)."""
    changes = {k: [saved[k], v] for k, v in c.to_dict().items()
               if k not in ("name", "description") and k in saved and saved[k] != v}
    if not changes and saved.get("name", c.name) == c.name:
        return
    for group in optimizer.param_groups:
        group["betas"] = (c.beta1, c.beta2)
    optimizer.param_groups[0]["weight_decay"] = c.weight_decay  # the matrices (make_optimizer)
    state.setdefault("config_changes", []).append(
        {"iteration": state["iteration"], "trial": c.name, "from": saved.get("name"), "changes": changes})


def train(
    c: ExperimentConfig,
    data: TokenData,
    report: Report | None = None,
    resume_from: Path | None = None,
    threads: int | None = None,
) -> TrainResult:
    """Train `c` on `data`, reporting at every eval interval; see the module docstring."""
    check_data(c, data)
    if threads:
        torch.set_num_threads(threads)
    precision = resolve_precision(c.precision)
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bfloat16"
                else contextlib.nullcontext())

    torch.manual_seed(c.seed)
    model = GPT(c)
    optimizer = make_optimizer(model, c)
    batch_gen = torch.Generator().manual_seed(c.seed)
    state: dict[str, Any] = {"iteration": 0, "best_val_loss": math.inf, "history": [],
                             "elapsed_s": 0.0, "train_s": 0.0, "eval_s": 0.0}
    if resume_from is not None:
        saved = load_state(Path(resume_from) / CHECKPOINT_FILE)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        batch_gen.set_state(saved["batch_rng"])
        torch.set_rng_state(saved["torch_rng"])
        state = saved["state"]
        _follow_new_config(c, saved.get("config", {}), state, optimizer)
    plan = CompilePlan(c.compile, shape_key(c, precision), CompileCosts(data.path.parent.parent))
    forward = CompiledOrEager(model, plan.compiled)

    total_params, non_embedding = param_counts(c)
    tokens_per_iter = c.batch_size * c.block_size
    val_offsets = eval_offsets(c, len(data.validation))
    train_high = len(data.train) - c.block_size - 1
    tokens_per_byte = data.tokens_per_byte("validation")

    def save_checkpoint(directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        torch.save({
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "batch_rng": batch_gen.get_state(), "torch_rng": torch.get_rng_state(),
            "state": state, "config": c.to_dict(), "tokenizer": data.meta["tokenizer"],
        }, directory / CHECKPOINT_FILE)
        # The loss history, readable without torch: a report that a stopping driver never logged
        # is still in the history of the checkpoint the trial resumes from.
        (directory / HISTORY_FILE).write_text(json.dumps(state["history"]), encoding="utf-8")

    context = c.block_size // 2

    @torch.no_grad()
    def evaluate() -> tuple[float, float]:
        """Validation loss over whole windows, and over their second halves (each prediction
        there sees at least half a block before it: val_bpb_context, what the corpus's entropy
        bounds). Eager: a compiled eval graph would cost a compile of its own for little."""
        model.eval()
        whole, late = [], []
        with autocast:
            for offsets in val_offsets:
                x, y = _batch(data.validation, offsets, c.block_size)
                a, b = model.eval_losses(x, y, context)
                whole.append(a)
                late.append(b)
        model.train()
        return float(np.mean(whole)), float(np.mean(late))

    last_eval = {k: state["history"][-1].get(k, math.nan) for k in ("val_loss", "val_bpb")} if state["history"] else {}
    if state["history"]:
        last_eval.update(best_val_loss=state["best_val_loss"],
                         best_val_bpb=state["best_val_loss"] * tokens_per_byte / math.log(2))

    def log_report(losses: list[float], seconds: float, timed: int) -> None:
        """A training-loss report between evals: no checkpoint, the last eval's values carried
        (Tune wants the searcher's metric in every report; NaN before the first eval)."""
        it = state["iteration"]
        metrics = {
            "iteration": it, "kind": "train", "train_loss": float(np.mean(losses)), "lr": lr_at(c, it - 1),
            "tokens_seen": it * tokens_per_iter, "elapsed_s": state["elapsed_s"],
            "tokens_per_s": timed * tokens_per_iter / seconds if seconds > 0 and timed else 0.0,
            "status": "running", "max_iters": c.max_iters, "flops_per_token": flops_per_token(c),
            **{k: last_eval.get(k, math.nan) for k in ("val_loss", "best_val_loss", "val_bpb", "best_val_bpb")},
        }
        report(metrics, None)

    def emit(train_loss: float, val_loss: float, status: str, val_context: float = math.nan) -> None:
        it = state["iteration"]
        finite = math.isfinite(val_loss)
        if finite and val_loss < state["best_val_loss"]:
            state["best_val_loss"] = val_loss
        best = state["best_val_loss"]
        metrics = {
            "iteration": it, "kind": "eval", "eval_iteration": it, "train_loss": train_loss, "val_loss": val_loss,
            "best_val_loss": best if math.isfinite(best) else val_loss,
            "val_bpb": val_loss * tokens_per_byte / math.log(2),
            "val_bpb_context": val_context * tokens_per_byte / math.log(2),
            "best_val_bpb": (best if math.isfinite(best) else val_loss) * tokens_per_byte / math.log(2),
            "lr": lr_at(c, max(it - 1, 0)), "tokens_seen": it * tokens_per_iter,
            "elapsed_s": state["elapsed_s"], "eval_s": state["eval_s"],
            "tokens_per_s": it * tokens_per_iter / state["train_s"] if state["train_s"] else 0.0,
            "status": status, "precision": precision, "total_params": total_params,
            "non_embedding_params": non_embedding, "flops_per_token": flops_per_token(c),
            "train_flops": it * tokens_per_iter * flops_per_token(c), "max_iters": c.max_iters,
        }
        metrics.update(plan.summary() if plan.decided else {"compiled": False, "compile_note": "auto: timing eager steps"})
        if state.get("config_changes"):
            metrics["config_changes"] = state["config_changes"]
        state["history"].append({k: metrics[k] for k in (
            "iteration", "train_loss", "val_loss", "val_bpb", "val_bpb_context", "lr", "elapsed_s")})
        last_eval.update({k: metrics[k] for k in ("val_loss", "best_val_loss", "val_bpb", "best_val_bpb")})
        if report is not None:
            report(metrics, save_checkpoint)

    model.train()
    interval_losses: list[float] = []
    log_losses: list[float] = []
    log_seconds, log_timed = 0.0, 0
    first_step = True  # a run's first step compiles: left out of the recent speed
    compiled_steps: list[float] = []  # the first compiled step (it compiles), then PROBE_STEPS more

    def done(status: str) -> TrainResult:
        plan.too_short()
        if forward.failed and plan.compiled:
            plan.compiled, plan.why = False, f"{plan.why}; compiling failed ({forward.failed}), so it ran eager"
        plan.finish()
        return TrainResult(status, state["history"], plan.summary())

    while state["iteration"] < c.max_iters:
        t0 = time.perf_counter()
        it = state["iteration"]
        lr = lr_at(c, it)
        for group in optimizer.param_groups:
            group["lr"] = lr
        offsets = torch.randint(0, train_high, (c.batch_size,), generator=batch_gen).numpy()
        x, y = _batch(data.train, offsets, c.block_size)
        with autocast:
            loss = forward(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if c.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip)
        optimizer.step()
        loss_value = loss.item()
        state["iteration"] = it + 1
        dt = time.perf_counter() - t0
        state["train_s"] += dt
        state["elapsed_s"] += dt
        if forward.active and len(compiled_steps) <= PROBE_STEPS:
            compiled_steps.append(dt)
            if len(compiled_steps) == PROBE_STEPS + 1:
                plan.compiled_steps(compiled_steps)
        elif not forward.active and not first_step and not plan.decided:
            if plan.observe_eager_step(dt, c.max_iters - state["iteration"]):
                forward.start()
        if not math.isfinite(loss_value):
            emit(loss_value, math.nan, "diverged")
            return done("diverged")
        interval_losses.append(loss_value)
        log_losses.append(loss_value)
        if not first_step:
            log_seconds += dt
            log_timed += 1
        first_step = False
        is_eval = state["iteration"] % c.eval_interval == 0 or state["iteration"] == c.max_iters
        if c.log_interval and state["iteration"] % c.log_interval == 0 and not is_eval and report is not None:
            log_report(log_losses, log_seconds, log_timed)
        if c.log_interval and state["iteration"] % c.log_interval == 0 or is_eval:
            log_losses, log_seconds, log_timed = [], 0.0, 0
        if is_eval:
            t1 = time.perf_counter()
            val_loss, val_context = evaluate()
            dt = time.perf_counter() - t1
            state["eval_s"] += dt
            state["elapsed_s"] += dt
            # The recent training loss: the last quarter of the interval, so that it describes
            # (nearly) the model being evaluated rather than lagging behind it.
            train_loss = float(np.mean(interval_losses[-max(1, len(interval_losses) // 4):]))
            interval_losses = []
            finished = state["iteration"] == c.max_iters
            if not math.isfinite(val_loss):
                emit(train_loss, val_loss, "diverged")
                return done("diverged")
            if finished:
                plan.too_short()
            emit(train_loss, val_loss, "finished" if finished else "running", val_context)
    return done("finished")
