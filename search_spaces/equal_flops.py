"""A study whose experiments all spend the same training FLOPs: each trains for as many iterations
as the first one's FLOPs buy at its own FLOPs per token (the `modern` study). --max-iters sets the
first experiment's length; the others keep their ratio to it, and every one evaluates at the
same interval."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from slm_tune.config import EXPERIMENT_CONFIGS
from slm_tune.model.counts import flops_per_token, tokens_per_iter


def equal_flops_family(names: Sequence[str]) -> Callable[[int | None], dict[str, dict[str, Any]]]:
    """name -> settings (over baseline's) for a study of registry experiments at equal training FLOPs."""

    def family(longest: int | None = None) -> dict[str, dict[str, Any]]:
        reference = EXPERIMENT_CONFIGS[names[0]]
        iters = longest or reference.max_iters
        budget = flops_per_token(reference) * tokens_per_iter(reference) * iters
        timing = {"warmup_iters": min(reference.warmup_iters, iters // 10),
                  "eval_interval": min(reference.eval_interval, max(1, iters // 2))}
        out = {}
        for name in names:
            c = EXPERIMENT_CONFIGS[name]
            own = max(1, round(budget / (flops_per_token(c) * tokens_per_iter(c))))
            settings = {k: v for k, v in c.to_dict().items() if k not in ("name", "max_iters")}
            out[name] = {**settings, **timing, "max_iters": own,
                         "description": f"{c.description}; {own} iterations for {names[0]}'s training FLOPs"}
        return out

    return family
