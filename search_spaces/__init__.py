"""Named studies and searches as data.

A study is a list of experiments and its study-wide defaults: the driver turns it into a Ray Tune
param_space whose ``experiment`` key is a grid over these names (and whose ``seed`` key is a grid
over seeds with ``--repeats``; slm_tune/tune/run.py). Adding a study is adding an entry. Nothing
here imports Ray, so listing and describing studies costs none.

A search is a space file in ``search_spaces/searches/`` (lr, shape, compute): a base experiment
and a distribution per searched setting, in the format a user's own ``--space FILE`` uses
(slm_tune/space.py). Adding a search is adding a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from slm_tune.config import EXPERIMENT_CONFIGS, ExperimentConfig
from search_spaces.equal_flops import equal_flops_family
from search_spaces.scaling import scaling_family
from search_spaces.tabular import tabular_family
from slm_tune.errors import UserError, closest


@dataclass(frozen=True)
class Study:
    name: str
    description: str
    experiments: tuple[str, ...]
    overrides: dict[str, Any] = field(default_factory=dict)  # applied to every experiment
    # a study of its own experiments (not the registry's): longest max_iters -> {name: settings}
    family: Callable[[int | None], dict[str, dict[str, Any]]] | None = None

    def configs(self, longest: int | None = None) -> dict[str, ExperimentConfig]:
        """A family study's experiments, shrunk in proportion for --max-iters (see scaling.py)."""
        if self.family is None:
            return {}
        base = EXPERIMENT_CONFIGS["baseline"]
        return {name: base.replace(name=name, **settings) for name, settings in self.family(longest).items()}


MODERN = ("baseline", "arch_llama", "arch_gqa", "arch_deep_thin", "arch_untied")

STUDIES: dict[str, Study] = {
    s.name: s
    for s in [
        Study(
            "quick",
            "Try the tool: three 10k-vocabulary experiments, short runs (1 to 3 minutes on 2 cores)",
            ("optimal_fast", "vocab_small", "optimal_small"),
            {"max_iters": 100, "batch_size": 8, "eval_interval": 25, "warmup_iters": 10, "eval_iters": 8},
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
        Study("modern", "Block designs at baseline's parameters and training FLOPs: Llama-style, grouped-query "
              "attention, deep and thin (MobileLLM), an untied head", MODERN, family=equal_flops_family(MODERN)),
        Study("scaling", "Scaling laws: 5 sizes (50k to 3.2M non-embedding parameters) x 3 token budgets, one "
              "vocabulary; `fit` fits L(N, D) (36 minutes on 2 cores; --max-iters 40 rehearses it in minutes)",
              tuple(scaling_family()), family=scaling_family),
        Study("tabular", "The replay benchmark's table: 288 tiny configurations (rate, warmup, decay, beta2, batch, "
              "width, depth, positions) with their learning curves, 4 at 3 seeds (bench/tabular.py; about an hour "
              "on 2 cores)", tuple(tabular_family()), family=tabular_family),
    ]
}


def get_study(name: str) -> Study:
    if name not in STUDIES:
        raise UserError(
            f"unknown study {name!r}{closest(name, STUDIES)}; studies: {', '.join(STUDIES)}"
        )
    return STUDIES[name]


SEARCH_DIR = Path(__file__).resolve().parent / "searches"


def search_files() -> dict[str, Path]:
    """The named searches: name -> space file."""
    return {p.stem: p for p in sorted(SEARCH_DIR.glob("*.toml"))}


def search_description(name: str) -> str:
    import tomllib

    return str(tomllib.loads(search_files()[name].read_text(encoding="utf-8")).get("description", ""))


def get_search(name: str, registry: Mapping[str, ExperimentConfig] | None = None,
               overrides: Mapping[str, Any] | None = None, defaults: Mapping[str, Any] | None = None):
    """The named search's SearchSpace, with study-wide overrides applied to its base."""
    from slm_tune.space import load_space_file

    files = search_files()
    if name not in files:
        raise UserError(f"unknown search {name!r}{closest(name, files)}; searches: {', '.join(files)} "
                        "(or give your own with --space FILE)")
    return load_space_file(files[name], EXPERIMENT_CONFIGS if registry is None else registry, overrides, defaults)
