"""compile = "auto": torch.compile a run only where it pays.

Compiling the whole model makes a training step about 7% faster here (bench/README.md: 2,800 ->
2,987 tokens/s for baseline), and costs 10 to 20 s the first time a shape is compiled on a
machine, 2.5 s once inductor's on-disk cache holds it. A quick study's trial trains for about 80
s, so compiling it costs more than it saves; a baseline trial trains for half an hour, so it pays.

So an "auto" run starts eager, times a few steps (after the first), and compiles only if the
time compiling would save over the rest of the run exceeds the compile cost it expects. Both
figures are what was measured for this model shape on this machine before (a file in the token
cache's folder): the saving per step (else 7%), and the compile cost (else the machine's own
first-compile cost of other shapes, else 15 s). Every compiled run records what compiling cost it
and, when it timed eager steps first, what it saved per step, so the estimates follow the
machine. The run's reports say which it chose and why.
"""

from __future__ import annotations

import json
import logging
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

from slm_tune.config import block_design

from slm_tune.files import read_json, write_text

GAIN = 0.07  # a compiled step's time saving for baseline (bench/README.md); learned per shape
COLD_COST_S = 15.0  # compiling a shape the first time on a machine: 10 to 20 s measured here
WARM_COST_S = 4.5  # with inductor's on-disk cache holding it: 3.5 to 5.7 s for the quick study's models
PROBE_STEPS = 3  # eager steps timed, after the first, before an auto run decides
COSTS_FILE = "compile_costs.json"
log = logging.getLogger(__name__)


def shape_key(c, precision: str) -> str:
    """What a compiled graph depends on: the model's shapes, precision and torch's version."""
    return (f"torch{torch.__version__}-v{c.vocab_size}-e{c.n_embd}-l{c.n_layer}-h{c.n_head}-b{c.batch_size}"
            f"x{c.block_size}-{precision}-{'fused' if c.fused_loss else 'plain'}-{'dropout' if c.dropout else 'nodrop'}"
            + ("" if block_design(c) == "gpt2" else f"-{block_design(c)}"))


class CompileCosts:
    """The compile costs measured on this machine, per model shape (a small JSON file)."""

    def __init__(self, folder: Path | None):
        self.path = Path(folder) / COSTS_FILE if folder is not None else None

    def _read(self) -> dict[str, Any]:
        return read_json(self.path) if self.path is not None else {}

    def expected_gain(self, key: str) -> tuple[float, str]:
        """(share of a step's time compiling saves, where that figure comes from)."""
        gains = (self._read().get(key) or {}).get("gains") or []
        if gains:
            return float(statistics.median(gains)), "measured for this shape"
        return GAIN, "baseline's"

    def expected(self, key: str) -> tuple[float, str]:
        """(seconds, where that figure comes from)."""
        known = self._read()
        if "first_s" in known.get(key, {}):
            warm = known[key].get("warm_s") or []
            if warm:
                return float(statistics.median(warm)), "measured for this shape with the compile cache warm"
            return WARM_COST_S, "this shape was compiled here before (cache warm)"
        firsts = [v["first_s"] for v in known.values() if isinstance(v, dict) and "first_s" in v]
        if firsts:
            return float(statistics.median(firsts)), f"this machine's first compile of a shape ({len(firsts)} measured)"
        return COLD_COST_S, "a first compile of this shape (10 to 20 s measured, bench/README.md)"

    def record(self, key: str, seconds: float | None, gain: float | None = None) -> None:
        """What compiling this shape cost (seconds) and saved per step (gain), as measured."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock"):
            known = self._read()
            entry = known.setdefault(key, {})
            if seconds is not None and "first_s" not in entry:
                entry["first_s"] = round(seconds, 2)
            elif seconds is not None:
                entry["warm_s"] = (entry.get("warm_s", []) + [round(seconds, 2)])[-5:]
            if gain is not None:
                entry["gains"] = (entry.get("gains", []) + [round(gain, 4)])[-5:]
            write_text(self.path, json.dumps(known, indent=1))


@dataclass
class CompilePlan:
    """One run's compile choice: made at the start (true/false) or after PROBE_STEPS eager steps
    (auto); `cost_s` is what compiling then cost: the first compiled training step beyond the next
    ones (evals run eager, so they compile nothing)."""

    mode: str
    key: str
    costs: CompileCosts
    compiled: bool = False
    decided: bool = False
    why: str = ""
    eager_steps: list[float] = field(default_factory=list)
    cost_s: float = 0.0
    gain: float | None = None

    def __post_init__(self) -> None:
        if self.mode != "auto":
            self.compiled, self.decided = self.mode == "true", True
            self.why = "compile=true" if self.compiled else "compile=false"

    def observe_eager_step(self, seconds: float, remaining_iters: int) -> bool:
        """Time an eager step (not the first); returns True when the run should compile now."""
        if self.decided:
            return False
        self.eager_steps.append(seconds)
        if len(self.eager_steps) < PROBE_STEPS:
            return False
        step = statistics.median(self.eager_steps)
        left = remaining_iters * step
        cost, basis = self.costs.expected(self.key)
        gain, gain_basis = self.costs.expected_gain(self.key)
        self.decided, self.compiled = True, left * gain > cost
        self.why = (f"auto: {'compiled' if self.compiled else 'eager'}: {remaining_iters:,} iterations left at "
                    f"{step:.3f} s each ({left:,.0f} s); saving {gain:.0%} of that ({gain_basis}) is "
                    f"{left * gain:,.1f} s, {'more' if self.compiled else 'less'} than compiling "
                    f"({cost:.1f} s expected: {basis})")
        return self.compiled

    def too_short(self) -> None:
        """An auto run that ended (or resumed near its end) before it could time its steps."""
        if not self.decided:
            self.decided = True
            self.why = f"auto: eager: fewer than {PROBE_STEPS + 1} iterations to time, too short to pay"

    def add_cost(self, seconds: float) -> None:
        self.cost_s += max(0.0, seconds)

    def compiled_steps(self, seconds: list[float]) -> None:
        """The first compiled steps: the first one's excess over the rest is the compile cost;
        against the eager steps timed before, the rest give the saving per step."""
        self.add_cost(seconds[0] - statistics.median(seconds[1:]))
        if self.eager_steps:
            self.gain = 1 - statistics.median(seconds[1:]) / statistics.median(self.eager_steps)

    def finish(self) -> None:
        """Record what compiling cost and saved, so the next run's estimates follow this machine."""
        if self.compiled and (self.cost_s > 0 or self.gain is not None):
            self.costs.record(self.key, self.cost_s if self.cost_s > 0 else None, self.gain)

    def summary(self) -> dict[str, Any]:
        return {"compiled": self.compiled, "compile_note": self.why
                + (f"; compiling cost {self.cost_s:.1f} s" if self.compiled and self.cost_s else "")}


class CompiledOrEager:
    """The model through torch.compile, falling back to eager where compiling fails (a machine
    without a working C++ compiler, say): a slower run beats a crashed one.

    Each run compiles as in a fresh process. Dynamo keys its caches by GPT.forward's code, which
    every model shares, so in a process that trains one model after another (a reused Ray
    worker) each new shape would be a recompile, and past torch's recompile limit (8 graphs,
    4 runs) the rest would silently run eager.
    """

    def __init__(self, model: torch.nn.Module, compile_model: bool):
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
