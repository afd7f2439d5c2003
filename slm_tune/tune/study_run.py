"""StudyRun: everything a study run needs, in one place; the CLI fills it from its flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from ray import tune

from slm_tune.config import ExperimentConfig
from slm_tune.objectives import Constraint
from slm_tune.space import SearchSpace
from slm_tune.storage import mirror_root

Log = Callable[[str], None]


@dataclass
class StudyRun:
    """Everything a study run needs; the CLI fills it from its flags."""

    study: str
    configs: Mapping[str, ExperimentConfig]  # the experiments to run, study overrides applied
    output_dir: Path = Path(".")
    storage_path: str | None = None  # default: OUTPUT_DIR/ray_results
    repeats: int = 1
    # --resume --repeats N: a study that ended with fewer seeds gets the rest in a new run (run.py)
    more_seeds: bool = False
    first_seed: int = 0  # this run's seeds start at its experiments' seed + first_seed
    adds_to: str | None = None  # the stored run whose seeds this one adds to (read together with it)
    cpus_per_trial: int | None = None  # default: threads.default_cpus_per_trial
    max_concurrent: int | None = None  # default: available CPUs // cpus_per_trial
    scheduler: str | None = None  # None: the measured default for what is run (default_scheduler)
    resume: bool = False
    address: str | None = None
    verbose: bool = False
    cache_dir: str | None = None
    max_failures: int = 2
    checkpoints_to_keep: int = 2  # the best ones by val_loss; Ray always keeps the latest too
    callbacks: list[tune.Callback] = field(default_factory=list)
    command: list[str] = field(default_factory=list)
    log: Log = lambda _msg: None
    # a search (configs then holds only its base, for reference)
    search: SearchSpace | None = None
    num_samples: int = 1
    search_alg: str = "random"  # the measured default (bench/README.md, "Searchers and schedulers replayed")
    sampler_seed: int | None = None
    metric: str = "best_val_bpb"
    objectives: tuple[str, ...] = ()  # two or more: a multi-objective search (metric is the first)
    constraints: tuple[Constraint, ...] = ()
    # the Optuna study optuna-dashboard reads: an RDB URL; None: OUTPUT_DIR/experiments/optuna.db; "none": off
    optuna_storage: str | None = None
    time_budget_s: float | None = None
    flops_budget: float | None = None  # training FLOPs of all trials together (slm_tune/tune/budget.py)
    tensorboard: bool = True  # trials write TensorBoard event files into their directories (local storage)

    def __post_init__(self) -> None:
        if self.scheduler is None:
            self.scheduler = default_scheduler(self)

    @property
    def goals(self) -> list[str]:
        """The search's objectives, in order: --objective's, or --metric alone."""
        return list(self.objectives) or [self.metric]

    @property
    def early_constraints(self) -> list[Constraint]:
        """The constraints checked when a point is sampled (on figures the config decides)."""
        return [k for k in self.constraints if k.before_training]

    @property
    def optuna_url(self) -> str | None:
        """Where a search keeps its Optuna study for optuna-dashboard (None: nowhere)."""
        from slm_tune.tune.callbacks.optuna_study import default_storage_url

        if self.search is None or self.optuna_storage == "none":
            return None
        return self.optuna_storage or default_storage_url(self.output_dir)

    @property
    def n_trials(self) -> int:
        if self.search is None:
            return len(self.configs) * self.repeats
        grid = 1
        for d in self.search.dists.values():
            grid *= len(d.args) if d.kind == "grid" else 1
        return self.num_samples * grid

    @property
    def storage(self) -> str:
        if self.storage_path:
            return self.storage_path if "://" in self.storage_path else str(Path(self.storage_path).resolve())
        return str((Path(self.output_dir) / "ray_results").resolve())

    @property
    def is_local_storage(self) -> bool:
        return "://" not in self.storage

    @property
    def local_root(self) -> Path:
        """Where the driver reads runs: the storage itself, or for object storage its local mirror
        (OUTPUT_DIR/ray_results, the layout of a local study, so analysis reads either alike)."""
        return Path(self.storage) if self.is_local_storage else mirror_root(self.output_dir)


def default_scheduler(run: StudyRun) -> str:
    """ASHA for a search of one objective: on the replay benchmark (bench/README.md) it took every
    sampler to regret 0.01 in about 0.4x random search's compute, with a verdict over 100 seeds.
    FIFO for studies of named experiments (each one is wanted whole) and for several objectives
    (ASHA ranks trials by one metric)."""
    return "asha" if run.search is not None and len(run.goals) == 1 else "fifo"
