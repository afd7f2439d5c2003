"""The `tabular` study's family: the replay benchmark's configurations (bench/tabular.py).

What people tune in small LMs, at a few levels each: peak learning rate (log spaced), warmup,
weight decay, Adam's beta2, batch size, width (head size 16), depth and positions. The full
product is 5,832 points; the table trains a seeded sample of 288 distinct ones, each once, with
its whole learning curve (10 evals), and 4 of them at two more seeds for the seed noise (the
sample's first 4 at the middle rates, 4e-3 and 8e-3: the noise that matters is near the best, not
at a rate where some seeds diverge). Every
run is tiny (vocabulary 2,000, 64-token windows, 240 iterations, compile off): 5 to 60 s here.

A searcher replayed against the table proposes a point of the space (search_spaces/searches/
tiny_lm.toml, the same levels as ranges) and gets the nearest trained configuration's curve
(slm_tune.tune.replay), so every searcher sees one fixed, piecewise-constant objective.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

LEVELS: dict[str, tuple] = {
    "learning_rate": (1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2),
    "warmup_iters": (0, 24, 72),
    "weight_decay": (0.0, 0.1, 0.3),
    "beta2": (0.9, 0.95, 0.99),
    "batch_size": (8, 16),
    "n_head": (2, 4, 8),  # x head size 16: 32, 64 or 128 wide
    "n_layer": (1, 2, 4),
    "pos": ("learned", "rope"),
}
HEAD_SIZE = 16
CONFIGS = 288
NOISE_CONFIGS = 4  # the sample's first ones at NOISE_RATES, at NOISE_SEEDS too
NOISE_RATES = (4e-3, 8e-3)
NOISE_SEEDS = (1338, 1339)
SAMPLE_SEED = 0
ITERATIONS = 240
EVALS = 10
COMMON = {"vocab_size": 2000, "block_size": 64, "min_lr_ratio": 0.1, "dropout": 0.0, "compile": False,
          "eval_iters": 8, "log_interval": 0, "grad_clip": 1.0, "beta1": 0.9}


def table_points() -> list[dict[str, Any]]:
    """The trained points, in table order: a seeded sample without replacement from the product."""
    product = list(itertools.product(*LEVELS.values()))
    picked = np.random.default_rng(SAMPLE_SEED).choice(len(product), size=CONFIGS, replace=False)
    return [dict(zip(LEVELS, product[int(i)])) for i in picked]


def settings_of(point: dict[str, Any], iters: int) -> dict[str, Any]:
    """A point's experiment settings (over baseline's) at `iters` iterations."""
    scale = iters / ITERATIONS
    return {**COMMON, **point, "n_embd": point["n_head"] * HEAD_SIZE, "max_iters": iters,
            "warmup_iters": round(point["warmup_iters"] * scale), "eval_interval": max(1, iters // EVALS)}


def noise_points(points: list[dict[str, Any]]) -> list[int]:
    """The points trained at NOISE_SEEDS too."""
    return [i for i, p in enumerate(points) if p["learning_rate"] in NOISE_RATES][:NOISE_CONFIGS]


def tabular_family(longest: int | None = None) -> dict[str, dict[str, Any]]:
    """name -> settings: tab_000 .. tab_287, and tab_NNN_s1338 ... for the seed noise. `longest`
    (--max-iters) shortens every run, for a rehearsal."""
    iters = longest or ITERATIONS
    family = {}
    points = table_points()
    for i, point in enumerate(points):
        family[f"tab_{i:03d}"] = {**settings_of(point, iters), "description": f"tabular benchmark point {i}"}
    for i in noise_points(points):
        for seed in NOISE_SEEDS:
            family[f"tab_{i:03d}_s{seed}"] = {**settings_of(points[i], iters), "seed": seed,
                                              "description": f"tabular benchmark point {i} at seed {seed}"}
    return family
