"""A study: a search space run by a Ray Tune Tuner, CPU-only, resumable, with ASHA or PBT.

Two fronts share everything else. A study is a grid over named experiments. A search samples a
SearchSpace (slm_tune/search.py) with Ray's own search algorithms (Optuna's TPE behind a
ConcurrencyLimiter, or random) and schedulers (ASHA, PBT); its trials are named
`{search}_{index}` and are otherwise experiments like any other.

The driver tokenizes every corpus the grid needs before Ray starts (with progress), so no trial
tokenizes what another already did; trials then only open the shared token cache.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import ray
from filelock import FileLock, Timeout
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

from slm_tune.checkpoint_files import CHECKPOINT_FILE
from slm_tune.config import ExperimentConfig
from slm_tune.data.cache import check_data, prepare_tokens
from slm_tune.errors import UserError
from slm_tune.files import STUDY_FILE, read_json, write_json
from slm_tune.legacy import old_module_names
from slm_tune.tune.local_ray import check_reachable, start_local_ray
from slm_tune.space import SearchSpace, clip_to_space
from slm_tune.storage import Storage, mirror_root, read_study_file
from slm_tune.study_file import stored_configs, stored_search, trial_label
from slm_tune.tune.resources import default_cpus_per_trial, speedup, threads_that_pay
from slm_tune.tune.trainable import run_trial
from slm_tune.tune.callbacks.loggers import CSVLogger, JsonLogger
from slm_tune.tune.worker_env import scoped_environ, trial_env

Log = Callable[[str], None]
SCHEDULERS = ("fifo", "asha", "pbt")
SEARCH_ALGS = ("optuna", "random")


class StudyInterrupted(Exception):
    """The study stopped before every trial finished (Ctrl-C); it can be resumed."""

    def __init__(self, results: tune.ResultGrid, pending: list[str]):
        super().__init__(f"{len(pending)} trial(s) unfinished: {', '.join(pending)}")
        self.results = results
        self.pending = pending


@dataclass
class StudyRun:
    """Everything a study run needs; the CLI fills it from its flags."""

    study: str
    configs: Mapping[str, ExperimentConfig]  # the experiments to run, study overrides applied
    output_dir: Path = Path(".")
    storage_path: str | None = None  # default: OUTPUT_DIR/ray_results
    repeats: int = 1
    cpus_per_trial: int | None = None  # default: threads.default_cpus_per_trial
    max_concurrent: int | None = None  # default: available CPUs // cpus_per_trial
    scheduler: str = "fifo"
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
    search_alg: str = "optuna"
    sampler_seed: int | None = None
    metric: str = "best_val_bpb"
    time_budget_s: float | None = None
    tensorboard: bool = True  # trials write TensorBoard event files into their directories (local storage)

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


@contextlib.contextmanager
def study_lock(output_dir: Path):
    """One study at a time per output directory: a second one refuses instead of racing it for
    the same result files. The OS releases the lock if the holder dies, even by SIGKILL."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(output_dir / ".slm-tune.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UserError(
            f"another study is running with --output-dir {str(output_dir)!r}; wait for it to finish "
            "or give this one another --output-dir"
        ) from None
    try:
        yield
    finally:
        lock.release()


def run_names(names: list[str], study: str) -> list[str]:
    """The runs of `study` among folder names, oldest first: STUDY, STUDY-2, STUDY-3..."""
    pattern = re.compile(rf"^{re.escape(study)}(?:-(\d+))?$")
    found = [(int(m.group(1) or 1), n) for n in names if (m := pattern.match(n))]
    return [n for _, n in sorted(found)]


def _is_state_file(rel: str) -> bool:
    return rel.endswith(CHECKPOINT_FILE)


def unfinished_trials(run_dir: Path, count_unsampled: bool = True) -> list[str]:
    """Names of the trials a stored run has not run to their end (errored ones did: --resume
    retries them, but a study whose trials all ended is not unfinished); for a search that has
    not ended, also the trials it has yet to sample."""
    if not tune.Tuner.can_restore(str(run_dir)):
        return []
    analysis = tune.ExperimentAnalysis(str(run_dir))
    pending = [str(t) for t in analysis.trials if t.status not in ("TERMINATED", "ERROR")]
    meta = read_study_file(run_dir)
    if count_unsampled and meta.get("search") and not meta.get("ended_at"):
        missing = int(meta.get("n_trials", 0)) - len(analysis.trials)
        if missing > 0:
            pending.append(f"{missing} not yet sampled")
    return pending


def _tune_environ(verbose: bool, resume: bool) -> dict[str, str]:
    """Ray Tune's settings for a study's run (a user's own environment wins). No TensorBoard
    logger: it imports torch into the driver, two seconds before the first trial can start, for
    files slm-tune's plots replace; _fit passes the CSV and JSON loggers analysis reads. A resumed
    study keeps Tune's defaults: one stored before this change has no loggers of its own."""
    env = {} if resume else {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}
    if not verbose:  # with verbose=0 the legacy reporter is silent
        env.update(RAY_AIR_NEW_OUTPUT="0", TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S="0")
    return {k: v for k, v in env.items() if k not in os.environ}


class _DropMessages(logging.Filter):
    def __init__(self, starts: str):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


def _quiet_ray(verbose: bool) -> None:
    """Our progress lines instead of Ray's banner, tables and INFO logs (--verbose shows them)."""
    if verbose:
        return
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    logging.getLogger("ray.tune").setLevel(logging.WARNING)
    logging.getLogger("ray.tune.tune").setLevel(logging.ERROR)  # its Ctrl-C advice names the Python API
    # A failed trial: the progress lines give its reason in one line, the CLI its count; Ray's
    # traceback stays in the trial's error.txt.
    for name, starts in (("ray.tune.execution.tune_controller", "Trial task failed"),
                         ("ray.tune.tune", "Trials did not complete")):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) and f.starts == starts for f in logger.filters):
            logger.addFilter(_DropMessages(starts))
    # PBT warns once that a training-loss report has no eval_iteration: by design (evals decide)
    logging.getLogger("ray.tune.schedulers.pbt").setLevel(logging.ERROR)


def _available_cpus(address: str | None) -> int:
    if address:
        return int(ray.cluster_resources().get("CPU", 1))
    return os.cpu_count() or 1


def _horizon(run: StudyRun) -> tuple[str, float, float]:
    """(time attribute, longest run, shortest report interval) in which schedulers count: FLOPs
    spent when a search gives every trial the same compute (trials differ in iterations), else
    iterations. Both are in eval reports only, so schedulers decide on evals, not on the
    training-loss reports between them."""
    if run.search is None:
        return ("eval_iteration", max(c.max_iters for c in run.configs.values()),
                min(c.eval_interval for c in run.configs.values()))
    space = run.search
    if space.flops_budget:
        reports = max(1, round(space.base.max_iters / space.base.eval_interval))
        return "train_flops", space.flops_budget, space.flops_budget / reports
    smallest = min(space.dists["eval_interval"].probes()) if "eval_interval" in space.dists else space.base.eval_interval
    return "eval_iteration", space.largest("max_iters"), smallest


def _scheduler(run: StudyRun) -> tuple[Any, str | None, str | None]:
    metric = run.metric if run.search is not None else "val_loss"
    if run.scheduler == "fifo":
        return FIFOScheduler(), (metric if run.search is not None else None), ("min" if run.search is not None else None)
    time_attr, max_t, interval = _horizon(run)
    if run.scheduler == "asha":
        grace = max(interval, (max_t // 8) // interval * interval)
        return (ASHAScheduler(time_attr=time_attr, max_t=max_t, grace_period=grace, reduction_factor=2),
                metric, "min")
    if run.scheduler == "pbt":
        return (PopulationBasedTraining(
            time_attr=time_attr, perturbation_interval=interval,
            hyperparam_mutations=run.search.pbt_mutations(), require_attrs=False,
            custom_explore_fn=functools.partial(clip_to_space, run.search)), metric, "min")
    raise UserError(f"unknown scheduler {run.scheduler!r}; use one of {', '.join(SCHEDULERS)}")


def _search_alg(run: StudyRun, concurrent: int):
    """Ray's search algorithm for a search: Optuna's TPE behind a ConcurrencyLimiter, or random."""
    if run.search_alg == "random":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        return BasicVariantGenerator(random_state=run.sampler_seed)
    if run.search_alg == "optuna":
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch
        import optuna

        if not run.verbose:  # optuna sets its logger's level when first imported: "A new study created..."
            optuna.logging.set_verbosity(optuna.logging.WARNING)

        sampler = optuna.samplers.TPESampler(seed=run.sampler_seed, **tpe_settings(run.num_samples))
        return ConcurrencyLimiter(OptunaSearch(sampler=sampler), max_concurrent=concurrent)
    raise UserError(f"unknown search algorithm {run.search_alg!r}; use one of {', '.join(SEARCH_ALGS)}")


def tpe_settings(num_samples: int) -> dict[str, Any]:
    """Optuna's TPE as a search of a few dozen trials needs it. Its default samples the first 10
    trials at random, which is all of a 10-trial search and most of a 16-trial one: here the
    first quarter (2 to 10 trials) explores at random. Multivariate TPE models the settings
    jointly (learning rate and depth interact); constant liar keeps concurrent trials apart."""
    return {"n_startup_trials": min(10, max(2, num_samples // 4)), "multivariate": True, "constant_liar": True}


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
    if run.search.has_grid and run.search_alg == "optuna":
        grid = [k for k, d in run.search.dists.items() if d.kind == "grid"]
        raise UserError(f"{', '.join(grid)}: grid entries need --search-alg random (Optuna samples; write "
                        "choice = [...] to let it choose among the values)")
    if run.repeats != 1:
        raise UserError("--repeats applies to studies of named experiments; a search samples one seed per trial "
                        "(put seed = { choice = [...] } in the space to search over seeds)")


def search_trial_name(search: str, offset: int, trial) -> str:
    """`lr_0007`: the search and the trial's number, which Ray's search generators count (and
    keep across a resume) at the head of the experiment tag."""
    head = str(trial.experiment_tag).split("_", 1)[0]
    index = int(head) + offset if head.isdigit() else trial.trial_id
    return f"{search}_{index:04d}" if isinstance(index, int) else f"{search}_{index}"


DATA_KEYS = ("dataset", "vocab_size", "data_fraction")


def data_configs(run: StudyRun) -> dict[str, ExperimentConfig]:
    """The configs whose token data the study needs: each experiment's; for a search, one per
    combination of the corpora, vocabularies and fractions it can sample (a continuous one is
    tokenized by the trials that sample it, under the cache's lock)."""
    if run.search is None:
        return dict(run.configs)
    space = run.search
    options = []
    for key in DATA_KEYS:
        values = space.dists[key].candidates() if key in space.dists else None
        options.append([(key, v) for v in values] if values else [])
    out = {}
    for combo in itertools.product(*[o or [None] for o in options]):
        point = dict(kv for kv in combo if kv is not None)
        # the probe with the largest shape checks the corpus is big enough for every trial
        for k in ("block_size", "batch_size"):
            if k in space.dists:
                point[k] = space.largest(k)
        c = space.config_for(point)
        out[f"{c.dataset}|{c.vocab_size}|{c.data_fraction}"] = c
    return out


def prepare_data(run: StudyRun) -> dict[str, dict[str, Any]]:
    """Tokenize what the grid needs, once, before any trial starts; check it fits the configs."""
    info = {}
    for name, c in data_configs(run).items():
        data = prepare_tokens(c.dataset, c.vocab_size, c.data_fraction, cache_dir=run.cache_dir, log=run.log)
        check_data(c, data)
        info[name] = {"tokenizer": data.meta["tokenizer"], "entropy_bpb": data.entropy_bpb,
                      "train_tokens": data.meta["splits"]["train"]["tokens"],
                      **{k: getattr(c, k) for k in DATA_KEYS}}
    return info


def _stored_search(run: StudyRun, doc: Mapping[str, Any]) -> StudyRun:
    """A resumed search keeps the space, sampler and budget it started with, whatever the flags say."""
    search = stored_search(doc)
    if search is None:
        return run
    return replace(run, search=search, configs={search.base.name: search.base},
                   search_alg=doc.get("search_alg", run.search_alg), sampler_seed=doc.get("sampler_seed"),
                   metric=doc.get("metric", run.metric), num_samples=doc.get("num_samples", run.num_samples),
                   scheduler=doc.get("scheduler", run.scheduler))


def machine_info() -> dict[str, Any]:
    import platform
    from importlib.metadata import version  # torch's version without importing it (1.6 s)

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": version("torch"), "ray": ray.__version__}


def write_study_file(run: StudyRun, run_dir: Path, data_info: dict[str, dict[str, Any]],
                     storage: Storage | None = None) -> None:
    """study.json in the run directory: what analysis needs without our registry or a cluster
    (and, for object storage, in the run there too, so any machine can read the run)."""
    path = run_dir / STUDY_FILE
    previous = read_json(path)
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    doc = {
        "study": run.study, "run": run_dir.name, "command": run.command,
        "started_at": previous.get("started_at", now),
        "resumed_at": previous.get("resumed_at", []) + ([now] if run.resume else []),
        "ended_at": None, "machine": machine_info(), "repeats": run.repeats,
        "scheduler": run.scheduler, "cpus_per_trial": run.cpus_per_trial,
        "configs": {n: c.to_dict() for n, c in run.configs.items()} if run.search is None else {},
        "tokenizers": {n: d["tokenizer"] for n, d in data_info.items()},
        "entropy_bpb": {n: d["entropy_bpb"] for n, d in data_info.items()},
        "data": list(data_info.values()), "n_trials": run.n_trials,
    }
    if run.search is not None:
        doc.update(search=run.search.to_dict(), search_alg=run.search_alg, sampler_seed=run.sampler_seed,
                   sampler=tpe_settings(run.num_samples) if run.search_alg == "optuna" else {},
                   metric=run.metric, num_samples=run.num_samples, time_budget_s=run.time_budget_s)
    _publish(write_json(path, doc), storage)


def _publish(path: Path, storage: Storage | None) -> None:
    if storage is not None and storage.remote:
        storage.write_bytes(path.read_bytes(), path.parent.name, path.name)


def mark_study_ended(run_dir: Path, storage: Storage | None = None) -> None:
    path = run_dir / STUDY_FILE
    doc = read_json(path)
    if not doc:
        return
    doc["ended_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    _publish(write_json(path, doc), storage)


def _resolve_resources(run: StudyRun, cpus: int) -> tuple[int, int]:
    """(CPUs per trial, trials at once) for this machine, or a one-line error for impossible flags."""
    per_trial = run.cpus_per_trial
    if per_trial is None:
        per_trial = default_cpus_per_trial(run.n_trials, cpus, run.max_concurrent)
    if per_trial < 1 or per_trial > cpus:
        raise UserError(f"--cpus-per-trial {per_trial} is beyond this machine's {cpus} CPUs; use 1 to {cpus}")
    pays = threads_that_pay(cpus)
    if run.cpus_per_trial is not None and per_trial > pays:
        run.log(f"note: {per_trial} threads per trial is past what pays: a trial is at most "
                f"{speedup(per_trial) / speedup(pays) - 1:.0%} faster than on {pays} (slm_tune/threads.py); "
                "more trials at once would use these CPUs better")
    most = max(1, cpus // per_trial)
    if run.max_concurrent is None:
        return per_trial, most
    if not 1 <= run.max_concurrent <= most:
        raise UserError(
            f"--max-concurrent {run.max_concurrent} with {per_trial} CPU(s) per trial needs "
            f"more than this machine's {cpus} CPUs; use 1 to {most}"
        )
    return per_trial, run.max_concurrent


def _runtime_env() -> dict[str, Any] | None:
    env = trial_env()
    return {"env_vars": env} if env else None


def run_study(run: StudyRun) -> tune.ResultGrid:
    """Run (or resume) a study and return its ResultGrid: announce it, connect to Ray, size its
    trials, find or make its run directory, prepare its data, fit, and finish."""
    run = _announce(run)
    _quiet_ray(run.verbose)
    started_ray = _connect(run)
    try:
        cpus = _available_cpus(run.address)
        per_trial, concurrent = _resolve_resources(run, cpus)
        run = replace(run, cpus_per_trial=per_trial)  # a resolved copy: the caller's run is left as given
        schedule = _scheduler(run)
        storage = Storage(run.storage)
        storage.check()  # object storage: reachable, its bucket there, writable; before anything runs
        run, name = _resume_target(run, storage) if run.resume else (run, _new_run_name(run, storage))
        run_dir = run.local_root / name
        write_study_file(run, run_dir, prepare_data(run), storage)
        if not run.address and not ray.is_initialized():
            start_local_ray(cpus, run.verbose)
            started_ray = True
        return _fit_to_end(run, name, storage, concurrent, schedule)
    finally:
        if started_ray:
            ray.shutdown()  # only disconnects from a cluster we did not start


def _announce(run: StudyRun) -> StudyRun:
    """Check the run's flags and say what it will do; a new search's sampler seed is chosen here
    and recorded, so that any search can be repeated."""
    check_search(run)
    if run.search is None:
        run.log(f"study {run.study}: {', '.join(run.configs)}"
                + (f" x {run.repeats} seeds" if run.repeats > 1 else ""))
    elif not run.resume:
        if run.sampler_seed is None:
            run = replace(run, sampler_seed=int.from_bytes(os.urandom(3), "little"))
        run.log(f"search {run.study}: {run.n_trials} trials of {', '.join(run.search.searched)} from "
                f"{run.search.base.name}, {run.search_alg} sampler (seed {run.sampler_seed}), {run.scheduler} "
                f"scheduler, metric {run.metric}")
    return run


def _connect(run: StudyRun) -> bool:
    """Connect to the cluster at --address (True: connected), or leave Ray to start later (False)."""
    if not run.address:
        return False
    check_reachable(run.address)
    try:
        ray.init(address=run.address, log_to_driver=run.verbose, runtime_env=_runtime_env(),
                 logging_level=logging.INFO if run.verbose else logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot connect to the Ray cluster at {run.address!r} ({first}); check "
                        "--address (e.g. ray://head:10001 or auto), or leave it out to run locally") from None
    return True


def _resume_target(run: StudyRun, storage: Storage) -> tuple[StudyRun, str]:
    """The stored run to resume (the study's newest), with the settings it started with."""
    names = run_names(storage.list_dirs(), run.study)
    if storage.remote and names:  # the newest run's small files, to read its state and settings
        storage.mirror(names[-1], run.local_root / names[-1], skip=_is_state_file)
    name = names[-1] if names else run.study
    if not tune.Tuner.can_restore(storage.uri(name)):
        raise UserError(f"--resume: there is no stored study {run.study!r} under {storage.where}; "
                        f"start it with `python studies.py {run.study}` (without --resume)")
    doc = read_study_file(run.local_root / name)
    stored = stored_configs(doc)
    if stored:  # a resumed study keeps the settings it started with, whatever the flags say now
        run = replace(run, configs=stored)
    if run.search is not None:
        asked = run.num_samples
        run = _stored_search(run, doc)
        if asked != run.num_samples:
            run.log(f"resuming with the search's stored --num-samples {run.num_samples} (not {asked})")
    return run, name


def _new_run_name(run: StudyRun, storage: Storage) -> str:
    """A new run's directory: STUDY, or STUDY-2, STUDY-3... after finished ones; refused while the
    newest has unfinished trials (it should be resumed, not shadowed)."""
    names = run_names(storage.list_dirs(), run.study)
    if storage.remote and names:
        storage.mirror(names[-1], run.local_root / names[-1], skip=_is_state_file)
    if names:
        pending = unfinished_trials(run.local_root / names[-1])
        if pending:
            raise UserError(f"study {run.study!r} in {run.local_root / names[-1]} has unfinished trials "
                            f"({', '.join(pending)}); add --resume to continue it, or use another --output-dir "
                            "to start afresh")
    local = run.local_root
    taken = set(names) | ({p.name for p in local.iterdir()} if storage.remote and local.is_dir() else set())
    return next(n for i in itertools.count(len(names) + 1)
                if (n := run.study if i == 1 else f"{run.study}-{i}") not in taken)


def _fit_to_end(run: StudyRun, name: str, storage: Storage, concurrent: int, schedule: tuple) -> tune.ResultGrid:
    """Fit, bring a bucket's run home for the files, and mark the study ended, or raise
    StudyInterrupted when trials are left (Ctrl-C): the study resumes from there."""
    run_dir = run.local_root / name
    scheduler, metric, mode = schedule
    started = time.time()
    with scoped_environ(_tune_environ(run.verbose, run.resume)):
        results = _fit(run, name, storage, concurrent, scheduler, metric, mode)
    if storage.remote:  # the run as Ray left it in the bucket, for the files and plots
        run.log(f"copying {storage.uri(name)} to {run_dir}")
        storage.mirror(name, run_dir)
    # a search that spent its --time-budget has ended, with fewer trials than it asked for
    budget_spent = bool(run.time_budget_s) and time.time() - started >= run.time_budget_s
    pending = unfinished_trials(run_dir, count_unsampled=not budget_spent)
    if pending:
        raise StudyInterrupted(results, pending)
    mark_study_ended(run_dir, storage)
    return results


def _fit(run: StudyRun, name: str, storage: Storage, concurrent: int, scheduler, metric: str | None,
         mode: str | None) -> tune.ResultGrid:
    """The Tuner for a new study, or the stored one resumed, run to its end."""
    trial_root = storage.uri(name)
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, configs=dict(run.configs), cache_dir=run.cache_dir,
                             threads=run.cpus_per_trial, trial_root=trial_root, search=run.search,
                             tensorboard=run.tensorboard and not storage.remote),
        {"cpu": run.cpus_per_trial},
    )
    if run.resume:
        run.log(f"resuming {storage.uri(name)}")
        with old_module_names():  # a study stored before modules moved pickles their old names
            tuner = tune.Tuner.restore(storage.uri(name), trainable=trainable,
                                       resume_unfinished=True, resume_errored=True)
            return tuner.fit()
    if run.search is None:
        base_seed = next(iter(run.configs.values())).seed
        space = grid_space(list(run.configs), run.repeats, base_seed)
        naming = dict(trial_dirname_creator=lambda t: trial_label(t.config),
                      trial_name_creator=lambda t: trial_label(t.config))
        search = dict(max_concurrent_trials=concurrent)
    else:
        space = run.search.param_space()
        # Ray's generators count trials from 1 (a searcher) or 0 (random): number them from 1.
        namer = functools.partial(search_trial_name, run.study, 1 if run.search_alg == "random" else 0)
        naming = dict(trial_dirname_creator=namer, trial_name_creator=namer)
        search = dict(search_alg=_search_alg(run, concurrent), num_samples=run.num_samples,
                      max_concurrent_trials=concurrent, time_budget_s=run.time_budget_s)
    keep = max(run.checkpoints_to_keep, 4) if run.scheduler == "pbt" else run.checkpoints_to_keep
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            scheduler=scheduler, metric=metric, mode=mode,
            # A worker trains trial after trial: no fresh process and imports per trial.
            reuse_actors=True, **naming, **search,
        ),
        run_config=tune.RunConfig(
            name=name, storage_path=storage.uri(), verbose=2 if run.verbose else 0,
            callbacks=[*run.callbacks, CSVLogger(), JsonLogger()],
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=keep, checkpoint_score_attribute="val_loss", checkpoint_score_order="min"),
            failure_config=tune.FailureConfig(max_failures=run.max_failures),
        ),
    )
    return tuner.fit()


def seeds_for(base_seed: int, repeats: int) -> list[int]:
    """The seeds of `repeats` runs: the experiment's own seed first, then the next ones."""
    return [base_seed + i for i in range(repeats)]


def grid_space(experiments: list[str], repeats: int = 1, base_seed: int = 1337) -> dict[str, Any]:
    """The Ray Tune param_space of a study: a grid over experiment names (and seeds when repeated)."""
    space: dict[str, Any] = {"experiment": tune.grid_search(list(experiments))}
    if repeats > 1:
        space["seed"] = tune.grid_search(seeds_for(base_seed, repeats))
    return space


def study_configs(
    experiments: list[str] | tuple[str, ...],
    registry: Mapping[str, ExperimentConfig],
    overrides: Mapping[str, Any],
) -> dict[str, ExperimentConfig]:
    """The study's experiments with its overrides applied (one validated config per name)."""
    return {name: ExperimentConfig.from_name(name, registry, **overrides) for name in experiments}


__all__ = ["StudyInterrupted", "StudyRun", "run_study", "study_configs", "study_lock", "run_names",
           "unfinished_trials"]
