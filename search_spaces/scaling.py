"""The `scaling` study's family: model sizes x token budgets, one vocabulary and one corpus, so that
only N (non-embedding parameters) and D (training tokens) move between runs.

Five sizes span 63x in non-embedding parameters (50k to 3.2M), each trained for three token
budgets (1.2M, 2.5M and 4.9M tokens: a quarter, a half and one pass over storyworld's training
split), 15 runs in all. Every run evaluates 8 times and warms up for a tenth of its iterations.
torch.compile is off: its 10 to 20 s per trial would be a large share of the shortest runs.

Each size trains at its own peak learning rate, the best of a sweep at its shortest budget
(bench/scaling_lr.py and hand runs of the same; best val bits per byte after 600 iterations,
measured 2026-11-27; the rate used is the lowest figure in each row):

    size  1e-3   2e-3   3e-3   4e-3   8e-3   1e-2   1.6e-2  2e-2   4e-2
    s1    1.047         0.522                0.387          0.391  0.403
    s2    0.620                0.370  0.362         0.360
    s3    0.488  0.378         0.344  0.312         0.364
    s4    0.372                0.278  0.281         0.371
    s5    0.323  0.288  0.272  0.279  0.332

The 1e-3 column is the study's earlier single rate (its full run, two trials at a time).

A scaling law describes models trained well for their size: at one rate for all (1e-3, as
before) the small models were far from their best, the fit took that for a steep data term
(beta 2.3) and missed the held-out largest model by 23% of its gap to the floor.
"""

from __future__ import annotations

from typing import Any

# (name, n_layer, n_embd, n_head, learning_rate): non-embedding parameters 50k, 224k, 397k, 1.3M, 3.2M
SIZES = (("s1", 1, 64, 2, 1e-2), ("s2", 2, 96, 2, 1.6e-2), ("s3", 2, 128, 4, 8e-3), ("s4", 3, 192, 4, 4e-3),
         ("s5", 4, 256, 4, 3e-3))
ITERATIONS = (600, 1200, 2400)  # x 2,048 tokens per iteration: 1.2M, 2.5M, 4.9M tokens
COMMON = {"vocab_size": 2000, "batch_size": 16, "block_size": 128, "min_lr_ratio": 0.1,
          "dropout": 0.0, "compile": False, "eval_iters": 16}
EVALS = 8
WARMUP_SHARE = 0.1


def scaling_family(longest: int | None = None) -> dict[str, dict[str, Any]]:
    """name -> settings (over baseline's). `longest` (from --max-iters) shrinks the whole family in
    proportion: the longest runs train that many iterations, the others keep their ratio to it."""
    scale = (longest / max(ITERATIONS)) if longest else 1.0
    family = {}
    for name, layers, width, heads, lr in SIZES:
        for base_iters in ITERATIONS:
            iters = max(1, round(base_iters * scale))
            family[f"scaling_{name}_{base_iters}"] = {
                **COMMON, "n_layer": layers, "n_embd": width, "n_head": heads, "learning_rate": lr, "max_iters": iters,
                "eval_interval": max(1, iters // EVALS), "warmup_iters": round(iters * WARMUP_SHARE),
                "description": f"scaling family: {layers} layer(s) x {width} wide, {base_iters} iterations "
                               f"({base_iters * 2048 / 1e6:.1f}M tokens at full size)",
            }
    return family
