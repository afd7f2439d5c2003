"""Named studies as data: which experiments a study compares, and its study-wide defaults.

A study becomes a Ray Tune param_space whose ``experiment`` key is a grid over these names (and
whose ``seed`` key is a grid over seeds with ``--repeats``). Adding a study is adding an entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ray import tune

from slm_tune.config import EXPERIMENT_CONFIGS
from slm_tune.errors import UserError, closest


@dataclass(frozen=True)
class Study:
    name: str
    description: str
    experiments: tuple[str, ...]
    overrides: dict[str, Any] = field(default_factory=dict)  # applied to every experiment


STUDIES: dict[str, Study] = {
    s.name: s
    for s in [
        Study(
            "quick",
            "Try the tool: three 10k-vocabulary experiments, short runs (a few minutes on 2 cores)",
            ("optimal_fast", "vocab_small", "optimal_small"),
            {"max_iters": 150, "batch_size": 16, "eval_interval": 50, "warmup_iters": 15, "eval_iters": 8},
        ),
        Study("vocab", "Vocabulary size: 50,257 vs 25,000 vs 10,000 tokens",
              ("baseline", "vocab_small", "vocab_medium")),
        Study("embedding", "Embedding width: 128, 256, 512, 768",
              ("baseline", "embd_small", "embd_large", "embd_xlarge")),
        Study("architecture", "Depth and heads: 4 vs 8 layers, 4 vs 8 heads",
              ("baseline", "arch_deep", "arch_wide")),
        Study("data", "Training data: 100%, 50% and 10% of the corpus",
              ("baseline", "data_medium", "data_small")),
        Study("lr", "Learning rate: 1e-4 vs 5e-4 vs 5e-5", ("baseline", "lr_high", "lr_low")),
        Study("optimal", "The tuned configurations against baseline",
              ("baseline", "optimal_small", "optimal_fast")),
        Study("all", "Every named experiment once", tuple(EXPERIMENT_CONFIGS)),
    ]
}


def get_study(name: str) -> Study:
    if name not in STUDIES:
        raise UserError(
            f"unknown study {name!r}{closest(name, STUDIES)}; studies: {', '.join(STUDIES)}"
        )
    return STUDIES[name]


def seeds_for(base_seed: int, repeats: int) -> list[int]:
    """The seeds of `repeats` runs: the experiment's own seed first, then the next ones."""
    return [base_seed + i for i in range(repeats)]


def param_space(experiments: list[str] | tuple[str, ...], repeats: int = 1, base_seed: int = 1337) -> dict:
    """The Ray Tune param_space: a grid over experiment names (and seeds when repeated)."""
    space: dict[str, Any] = {"experiment": tune.grid_search(list(experiments))}
    if repeats > 1:
        space["seed"] = tune.grid_search(seeds_for(base_seed, repeats))
    return space
