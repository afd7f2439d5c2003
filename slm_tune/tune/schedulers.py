"""A study's scheduler (FIFO, ASHA, PBT) and a search's algorithm (Optuna's TPE, random), as Ray
Tune builds them, with the combinations Ray would refuse deep inside fit() checked first.

Several objectives go to Ray's OptunaSearch as lists of metrics and modes, sampled by Optuna's
multi-objective TPE: at a few dozen trials it models the front from the first trials on, where
NSGA-II's default population (50) is more than the whole search. ASHA and PBT rank trials on one
metric, so a multi-objective search refuses them. A search with constraints on figures the config
decides samples through slm_tune.tune.constrained (random search then through Optuna's
RandomSampler, which can draw again)."""

from __future__ import annotations

import functools
import warnings
from typing import Any

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule, PopulationBasedTraining

from slm_tune.errors import UserError
from slm_tune.objectives import directions, report_keys
from slm_tune.space import clip_to_space
from slm_tune.tune.study_run import StudyRun

from slm_tune.search_options import SCHEDULERS, SEARCH_ALGS




def horizon(run: StudyRun) -> tuple[str, float, float]:
    """(time attribute, longest run, shortest report interval) in which schedulers count: FLOPs
    when a search gives every trial the same compute (trials differ in iterations), else
    iterations. Both are in eval reports only, so schedulers decide on evals, not on the
    training-loss reports between them. The FLOPs are the weights' (eval_flops: iterations x
    tokens x FLOPs per token, the donor's steps included after a PBT exploit, as PBT's clock
    expects), not the trial's own spend (train_flops)."""
    if run.search is None:
        return ("eval_iteration", max(c.max_iters for c in run.configs.values()),
                min(c.eval_interval for c in run.configs.values()))
    space = run.search
    if space.flops_budget:
        reports = max(1, round(space.base.max_iters / space.base.eval_interval))
        return "eval_flops", space.flops_budget, space.flops_budget / reports
    # a fixed eval_interval is the space's, not its base experiment's
    smallest = min(space.dists["eval_interval"].probes()) if "eval_interval" in space.dists else space.largest("eval_interval")
    return "eval_iteration", space.largest("max_iters"), smallest


def make_scheduler(run: StudyRun) -> tuple[Any, str | None, str | None]:
    """(scheduler, metric, mode) for Tune's config: a multi-objective search gives its metrics to
    its searcher instead (Tune's own metric is one name)."""
    if run.search is None:
        metric, mode = "val_loss", "min"
    elif len(run.goals) > 1:
        metric, mode = None, None
    else:
        metric, mode = report_keys(run.goals)[0], directions(run.goals)[0]
    if run.scheduler == "fifo":
        return FIFOScheduler(), (metric if run.search is not None else None), (mode if run.search is not None else None)
    time_attr, max_t, interval = horizon(run)
    grace = max(interval, (max_t // 8) // interval * interval)
    if run.scheduler in ("asha", "hyperband"):  # hyperband: Ray's asynchronous HyperBand, ASHA in 3 brackets
        return (ASHAScheduler(time_attr=time_attr, max_t=max_t, grace_period=grace, reduction_factor=2,
                              brackets=3 if run.scheduler == "hyperband" else 1), metric, mode)
    if run.scheduler == "median":
        return (MedianStoppingRule(time_attr=time_attr, grace_period=grace, min_samples_required=3), metric, mode)
    if run.scheduler == "pbt":
        return (PopulationBasedTraining(
            time_attr=time_attr, perturbation_interval=interval,
            hyperparam_mutations=run.search.pbt_mutations(), require_attrs=False,
            custom_explore_fn=functools.partial(clip_to_space, run.search)), metric, mode)
    raise UserError(f"unknown scheduler {run.scheduler!r}; use one of {', '.join(SCHEDULERS)}")


def make_search_alg(run: StudyRun, concurrent: int):
    """Ray's search algorithm for a search: an Optuna sampler (make_sampler) behind a
    ConcurrencyLimiter, or Ray's random search."""
    if run.search_alg not in SEARCH_ALGS:
        raise UserError(f"unknown search algorithm {run.search_alg!r}; use one of {', '.join(SEARCH_ALGS)}")
    if run.search_alg == "random" and not run.early_constraints:
        from ray.tune.search.basic_variant import BasicVariantGenerator

        return BasicVariantGenerator(random_state=run.sampler_seed)
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    several = len(run.goals) > 1
    searcher = OptunaSearch(sampler=make_sampler(run), metric=report_keys(run.goals) if several else None,
                            mode=directions(run.goals) if several else None)
    if run.early_constraints:
        from slm_tune.tune.constrained import ConstrainedSearcher

        searcher = ConstrainedSearcher(searcher, run.search, run.early_constraints)
    return ConcurrencyLimiter(searcher, max_concurrent=concurrent)


def make_sampler(run: StudyRun):
    """The Optuna sampler of a search (also what a replay asks and tells: slm_tune.tune.replay)."""
    import optuna

    if not run.verbose:  # optuna sets its logger's level when first imported: "A new study created..."
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    seed = run.sampler_seed
    if run.search_alg == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if run.search_alg == "optuna":
        return optuna.samplers.TPESampler(seed=seed, **tpe_settings(run.num_samples))
    if run.search_alg == "tpe-independent":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials(run.num_samples), multivariate=False,
                                          constant_liar=True)
    if run.search_alg == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup_trials(run.num_samples))
    if run.search_alg == "qmc":
        with warnings.catch_warnings():  # "QMCSampler is experimental": it is what was asked for
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(seed=seed, scramble=True)
    if run.search_alg == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, startup_trials(run.num_samples)))
    if run.search_alg == "cmaes":  # categorical settings fall to its independent sampler: that is what was asked
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=startup_trials(run.num_samples),
                                            independent_sampler=optuna.samplers.RandomSampler(seed=seed),
                                            warn_independent_sampling=False)
    raise UserError(f"unknown search algorithm {run.search_alg!r}; use one of {', '.join(SEARCH_ALGS)}")


def sampler_name(run: StudyRun) -> str:
    """The sampler, as a search's first line names it."""
    if run.search_alg == "random":
        return "random sampler" + (" (Optuna's, redrawing for the constraints)" if run.early_constraints else "")
    if run.search_alg == "optuna":
        return "Optuna's multi-objective TPE sampler" if len(run.goals) > 1 else "Optuna's TPE sampler"
    return SEARCH_ALGS[run.search_alg].split(" (")[0]


def sampler_settings(run: StudyRun) -> dict[str, Any]:
    """The sampler's settings, as study.json records them."""
    return tpe_settings(run.num_samples) if run.search_alg == "optuna" else {}


def tpe_settings(num_samples: int) -> dict[str, Any]:
    """Optuna's TPE as a search of a few dozen trials needs it. Its default samples the first 10
    trials at random, which is all of a 10-trial search and most of a 16-trial one: here the
    first quarter (2 to 10 trials) explores at random. Multivariate TPE models the settings
    jointly (learning rate and depth interact); constant liar keeps concurrent trials apart."""
    return {"n_startup_trials": startup_trials(num_samples), "multivariate": True, "constant_liar": True}


def startup_trials(num_samples: int) -> int:
    """The random trials a model-based sampler starts from: a quarter of the search, 2 to 10."""
    return min(10, max(2, num_samples // 4))


def check_search(run: StudyRun) -> None:
    """Combinations Ray would refuse deep inside fit(), as one line before anything runs."""
    if run.scheduler == "pbt" and (run.search is None or not run.search.mutable):
        raise UserError("--scheduler pbt perturbs a search's optimisation settings (learning_rate, weight_decay, "
                        "min_lr_ratio, ...) mid-run; use it with a search that samples one of them, e.g. "
                        "`python studies.py search lr --scheduler pbt`")
    if run.search is None:
        return
    if run.search_alg not in SEARCH_ALGS:
        raise UserError(f"unknown search algorithm {run.search_alg!r}; use one of {', '.join(SEARCH_ALGS)}")
    if run.scheduler == "pbt" and run.search_alg != "random":
        raise UserError("PBT evolves its own population and cannot be combined with a search algorithm (Ray's rule); "
                        "use --search-alg random with --scheduler pbt")
    if run.search.has_grid and run.search_alg != "random":
        grid = [k for k, d in run.search.dists.items() if d.kind == "grid"]
        raise UserError(f"{', '.join(grid)}: grid entries need --search-alg random (Optuna samples; write "
                        "choice = [...] to let it choose among the values)")
    if run.repeats != 1:
        raise UserError("--repeats applies to studies of named experiments; a search samples one seed per trial "
                        "(put seed = { choice = [...] } in the space to search over seeds)")
    _check_objectives(run)


def _check_objectives(run: StudyRun) -> None:
    if len(run.goals) > 1 and run.search_alg == "cmaes":
        raise UserError(f"--search-alg cmaes optimises one objective, and this search has {len(run.goals)} "
                        f"({', '.join(run.goals)}); use --search-alg optuna, nsga2, gp, qmc or random with several "
                        "--objective, or give one")
    if len(run.goals) > 1 and run.scheduler != "fifo":
        raise UserError(f"--scheduler {run.scheduler} stops or copies trials by one metric, and this search has "
                        f"{len(run.goals)} objectives ({', '.join(run.goals)}); use --scheduler fifo (the default) "
                        "with several --objective, or give one")
    if run.early_constraints and run.scheduler == "pbt":
        raise UserError("--constraint on parameters or FLOPs redraws points that break it, which PBT's own "
                        "population cannot; use --scheduler fifo or asha with it")
    if run.early_constraints and run.search.has_grid:
        raise UserError("--constraint on parameters or FLOPs redraws sampled points, and a grid entry is not "
                        "sampled; write choice = [...] instead of grid = [...]")


def search_trial_name(search: str, offset: int, trial) -> str:
    """`lr_0007`: the search and the trial's number, which Ray's search generators count (and
    keep across a resume) at the head of the experiment tag."""
    head = str(trial.experiment_tag).split("_", 1)[0]
    index = int(head) + offset if head.isdigit() else trial.trial_id
    return f"{search}_{index:04d}" if isinstance(index, int) else f"{search}_{index}"
