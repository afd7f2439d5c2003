"""`studies.py build`: from a compute budget to the best model it buys, in stages.

1. search   the muP base settings at a narrow proxy (a share of the budget, Tune's FLOPs stopper)
2. sweep    three sizes (up to the size the compute left suits, 12x or more in N) x three
            token counts at the search's best settings, under muP (with
            --horizon-exponent above 0, the rate moved to each longer run's length: build_plan.at_horizon)
   (fit)    L(N, D) on the sweep (the corpus's entropy as E where known); the target shape and
            token count the law predicts lowest for the compute left (or a stated fallback)
3. target   that shape trained (--repeats seeds), exported to the Hugging Face format, sampled
4. simple   with --against-simple: the whole budget spent two simple ways, for verdicts

Each stage is a stored study; with --resume a finished stage is kept, an interrupted one resumes
and the decisions between them are made again from what is stored (the fit is seeded), so a
build cut off anywhere finishes with the same choices. The stages run through `Stages`, which the
command line provides (Ray, progress, exports): this module decides, it does not run Ray.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import pandas as pd

from slm_tune.config import ExperimentConfig
from slm_tune.space import SearchSpace
from workflows import build_plan as plan
from workflows.build_plan import Shares

STUDIES = {"search": "build_search", "sweep": "build_sweep", "target": "build_target", "simple": "build_simple"}


class Stages(Protocol):
    """How a stage runs (the CLI: a Ray study with its progress and files; resumed, kept or
    started as --resume says). Each returns the study's exit code."""

    def search(self, space: SearchSpace, flops_budget: float, num_samples: int) -> int: ...

    def train(self, study: str, configs: dict[str, ExperimentConfig], repeats: int) -> int: ...


@dataclass
class BuildSettings:
    output_dir: Path
    budget: float
    space: SearchSpace  # the proxy's search space, the user's overrides applied
    baseline: ExperimentConfig  # (a): the seed's baseline, on the build's corpus
    default: ExperimentConfig  # (b): the default settings Chinchilla's rule sizes
    shares: Shares = dataclasses.field(default_factory=Shares)
    repeats: int = 1
    against_simple: bool = False
    samples: int = plan.SEARCH_SAMPLES  # trials the proxy search may sample
    min_iters: int = plan.MIN_ITERS
    storage_path: str | None = None  # where the stages' runs are kept, when not OUTPUT_DIR/ray_results
    horizon_exponent: float = plan.HORIZON_EXPONENT  # the rate's move with a run's length (build_plan.at_horizon)
    sweep_design: str = plan.SWEEP_DESIGN  # how the sweep's sizes are chosen (build_plan.sweep_sizes)

    @property
    def target_seeds(self) -> int:
        """Verdicts against the simple ways need 2 or more seeds of the target too."""
        return max(2, self.repeats) if self.against_simple else self.repeats

    def trials(self, stage: str):
        """The stage's newest run's trials (analysis.load's table)."""
        from analysis.transfer import study_trials

        return study_trials(self.output_dir, STUDIES[stage], self.storage_path)


@dataclass
class Built:
    """What a build decided and where its stages are: the report's input."""

    settings: BuildSettings
    proxy: ExperimentConfig
    best: ExperimentConfig | None = None
    choice: plan.Choice | None = None
    fit: Any = None  # analysis.scaling.ScalingFit, or None when it refused
    fit_refused: str | None = None
    spent_before_target: float = 0.0
    code: int = 0


def run_build(s: BuildSettings, stages: Stages, log: Callable[[str], None]) -> Built:
    """Every stage in order; stops at the first that fails (its code in Built.code)."""
    proxy = plan.proxy_for(s.space.config_for({}), s.budget, s.shares, s.samples)
    built = Built(s, proxy)
    _say(log, 1, "search", s.shares.search, s.budget, f"{s.space.name} at {proxy.n_layer} x {proxy.n_embd}, "
         f"{proxy.max_iters} iterations a trial")
    built.code = stages.search(_proxy_space(s.space, proxy), s.budget * s.shares.search, s.samples)
    if built.code:
        return built
    from analysis.transfer import best_config

    built.best = best_config(s.output_dir, STUDIES["search"], s.storage_path,
                             f"the proxy search {STUDIES['search']} has no finished trial; see its trials' error.txt "
                             "files, then run the build again with --resume")
    sweep = plan.sweep_configs(built.best, s.budget, s.shares, s.horizon_exponent, s.sweep_design)
    sizes = sorted({(c.n_layer, c.n_embd) for c in sweep.values()}, key=lambda ld: ld[0] * ld[1] ** 2)
    _say(log, 2, "sweep", s.shares.sweep, s.budget, f"{len(sweep)} runs: sizes "
         + ", ".join(f"{n_layer} x {n_embd}" for n_layer, n_embd in sizes) + f" x {len(plan.TOKEN_STEPS)} token counts")
    built.code = stages.train(STUDIES["sweep"], sweep, 1)
    if built.code:
        return built
    _choose(built, log)
    target = built.choice.config.replace(name=STUDIES["target"], description=f"build's target: {built.choice.how}")
    left = s.budget - built.spent_before_target
    _say(log, 3, "target", left / s.budget, s.budget, f"{target.n_layer} x {target.n_embd} for {target.max_iters} "
         "iterations" + (f", {s.target_seeds} seeds (the build's spend counts one)" if s.target_seeds > 1 else ""))
    built.code = stages.train(STUDIES["target"], {STUDIES["target"]: target}, s.target_seeds)
    if built.code or not s.against_simple:
        return built
    simple = simple_alternatives(s)
    _say(log, 4, "simple", 1.0, s.budget, "the whole budget spent two simple ways, "
         f"{s.target_seeds} seeds each (not part of the build's spend)")
    built.code = stages.train(STUDIES["simple"], simple, s.target_seeds)
    return built


BEFORE = {"horizon_exponent": 0.0, "sweep": "fixed"}  # what plans stored before a setting existed ran with: the
# search's rate throughout (before the rate rule), the sweep's fixed sizes (before the budget-grown sweep)


def plan_changes(stored: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    """The keys of experiments/build_plan.json in which a --resume's plan differs from the stored
    one (a key the stored plan lacks counts as what builds did before it existed, BEFORE; one that
    has no such value, such as the sweep's sizes, is compared only when stored)."""
    return [k for k in plan if (k in stored or k in BEFORE) and stored.get(k, BEFORE.get(k)) != plan[k]]


def simple_alternatives(s: BuildSettings) -> dict[str, ExperimentConfig]:
    a = plan.baseline_alternative(s.baseline, s.budget)
    b = plan.chinchilla_alternative(s.default, s.budget)
    return {a.name: a, b.name: b}


def _proxy_space(space: SearchSpace, proxy: ExperimentConfig) -> SearchSpace:
    """The search at the proxy's horizon, named build_search."""
    horizon = {k: getattr(proxy, k) for k in ("max_iters", "eval_interval", "warmup_iters")}
    return dataclasses.replace(space, name=STUDIES["search"], base=proxy, fixed={**space.fixed, **horizon},
                               flops_budget=None)


def _choose(built: Built, log: Callable[[str], None]) -> None:
    """The fit of the sweep and the target it chooses for the compute the stages left."""
    from analysis.transfer import trained_flops
    from slm_tune.errors import UserError

    s = built.settings
    frames = {k: s.trials(k) for k in ("search", "sweep")}
    built.spent_before_target = sum(trained_flops(f) for f in frames.values())
    left = s.budget - built.spent_before_target
    if left <= 0:
        raise UserError(f"the search and the sweep spent {built.spent_before_target:.3g} FLOPs, all of --budget "
                        f"{s.budget:.3g}: nothing is left for the target; give a larger budget or smaller --shares")
    built.fit, built.fit_refused = fit_sweep(frames["sweep"])
    if built.fit_refused:
        fallback = _best_sweep_size(frames["sweep"])
        edge = _largest_of_sweep(fallback, frames["sweep"])
        log(f"build: the scaling fit refused ({built.fit_refused}); falling back to the sweep's best size"
            + (f"; {EDGE}" if edge else ""))
        built.choice = plan.choose_target(built.best, left, None, None, fallback, built.fit_refused, s.min_iters,
                                          s.horizon_exponent)
        if edge:
            built.choice.how += f"; {EDGE}"
        return
    built.choice = plan.choose_target(built.best, left, built.fit.predict, built.fit.band, min_iters=s.min_iters,
                                      exponent=s.horizon_exponent)


def fit_sweep(sweep):
    """The scaling fit of the sweep's trials (analysis.scaling), and why the build refuses it (None
    when it does not): a fit that failed, or one that leaves A, alpha, B or beta undetermined."""
    from analysis.scaling import fit_scaling, scaling_runs
    from slm_tune.errors import UserError

    try:
        fit = fit_scaling(scaling_runs(sweep), bootstrap=200, seed=0)
    except UserError as e:
        return None, str(e)
    blocking = [k for k in ("A", "alpha", "B", "beta") if k in fit.undetermined]
    return fit, (f"the sweep does not determine {', '.join(blocking)}" if blocking else None)


def _measured(sweep, metric: str = "best_val_bpb_context"):
    """The sweep's finished runs that have the fit's metric."""
    return sweep[(sweep["status"] == "finished") & pd.to_numeric(sweep[metric], errors="coerce").notna()]


def _best_sweep_size(sweep, metric: str = "best_val_bpb_context") -> ExperimentConfig | None:
    """The sweep's size whose longest run ended lowest on the fit's metric (the fallback when the
    fit refuses)."""
    done = _measured(sweep, metric)
    if done.empty:
        return None
    longest = done[done["iterations"] == done.groupby(done["experiment"].str.rsplit("_", n=1).str[0])["iterations"]
                   .transform("max")]
    return ExperimentConfig(**longest.loc[pd.to_numeric(longest[metric]).idxmin(), "config"])


EDGE = "it is the largest size the sweep measured, so the sweep cannot tell whether a larger model would do better"


def _largest_of_sweep(chosen: ExperimentConfig | None, sweep) -> bool:
    """Whether the fallback's size is the largest the sweep measured (finished, with the fit's
    metric): its choice then sits at the edge of what was measured (at 1e14 FLOPs on storyworld
    version 2 it did, and a larger model sized by Chinchilla's rule beat it on whole windows:
    docs/bench/build.md)."""
    from slm_tune.model.counts import param_counts

    done = _measured(sweep)
    if chosen is None or done.empty:
        return False
    return param_counts(chosen)[1] >= max(param_counts(ExperimentConfig(**c))[1] for c in done["config"])


def _say(log: Callable[[str], None], number: int, stage: str, share: float, budget: float, what: str) -> None:
    log(f"build stage {number} ({stage}): {share:.0%} of the budget, {share * budget:.3g} FLOPs: {what}")
