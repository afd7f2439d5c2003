"""A study run: a search space run by a Ray Tune Tuner, CPU-only, resumable, with ASHA or PBT.

Two fronts share everything else. A study is a grid over named experiments. A search samples a
SearchSpace (slm_tune/space.py) with Ray's own search algorithms (Optuna's TPE behind a
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
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import ray
from filelock import FileLock, Timeout
from ray import tune

from slm_tune.checkpoint_files import CHECKPOINT_FILE
from slm_tune.config import ExperimentConfig
from slm_tune.errors import UserError
from slm_tune.legacy import old_module_names
from slm_tune.objectives import check_possible, constraints_from
from slm_tune.storage import Storage, read_study_file
from slm_tune.study_file import stored_configs, stored_search, trial_label
from slm_tune.tune.budget import FlopsBudget, spent_flops
from slm_tune.tune.callbacks.loggers import CSVLogger, JsonLogger
from slm_tune.tune.callbacks.optuna_study import OptunaStudyMirror
from slm_tune.tune.data_prep import prepare_data
from slm_tune.tune.killed_state import (is_whole, newest_state, repair_results, repair_state,
                                        restore_missing_checkpoints)
from slm_tune.tune.local_ray import check_reachable, start_local_ray
from slm_tune.tune.resources import default_cpus_per_trial, speedup, threads_that_pay
from slm_tune.tune.schedulers import check_search, make_scheduler, make_search_alg, sampler_name, search_trial_name
from slm_tune.tune.study_record import mark_study_ended, write_study_file
from slm_tune.tune.study_run import StudyRun
from slm_tune.tune.trainable import run_trial
from slm_tune.tune.worker_env import scoped_environ, trial_env


class StudyInterrupted(Exception):
    """The study stopped before every trial finished (Ctrl-C); it can be resumed."""

    def __init__(self, results: tune.ResultGrid, pending: list[str]):
        super().__init__(f"{len(pending)} trial(s) unfinished: {', '.join(pending)}")
        self.results = results
        self.pending = pending


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


def resumable(run_dir: Path) -> bool:
    """Whether Tune can restore the stored run: False for one killed before Tune wrote its first
    whole record (the study never properly started: a new run of it may start)."""
    return bool(tune.Tuner.can_restore(str(run_dir)) and is_whole(newest_state(run_dir)))


def unfinished_trials(run_dir: Path, count_unsampled: bool = True) -> list[str]:
    """Names of the trials a stored run has not run to their end (errored ones did: --resume
    retries them, but a study whose trials all ended is not unfinished); for a search that has
    not ended, also the trials it has yet to sample."""
    if not resumable(run_dir):
        return []  # a record cut off by a kill: the study cannot be resumed, a new run may start
    drop_unstarted_warnings()  # a search its budget ended leaves trials that never started
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


class _DropGoneCheckpoints(logging.Filter):
    """A resumed study's Ray tries to delete checkpoints its stored state still lists but that were
    deleted before the driver was killed, and logs each with a traceback (ray-tune-notes: the
    study completes): dropped, only for that case, FileNotFoundError while handling a checkpoint."""

    def filter(self, record: logging.LogRecord) -> bool:
        gone = record.exc_info is not None and isinstance(record.exc_info[1], FileNotFoundError)
        return not (gone and "Error handling checkpoint" in str(record.msg))


class _DropUnstarted(logging.Filter):
    """Tune's results warn, one line each, of trials with no result file: those a search's budget
    or a stopper ended before they started (53 of 64 in a `build` search), or before their first
    report. Dropped only when every trial it lists has a folder here holding nothing but Tune's
    event file (_never_reported); a trial that ran and lost its results (its folder holds other
    files), one on object storage, or any other failure keeps the warning whole."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        if not msg.startswith("Failed to fetch metrics"):
            return True
        listed = [line for line in msg.splitlines()[1:] if line.startswith("- ")]
        folders = [re.search(r"were not found at (.+?)'\)$", line) for line in listed]
        return not listed or not all(f and _never_reported(Path(f.group(1))) for f in folders)


def _never_reported(path: Path) -> bool:
    """An unstarted trial's folder (empty), or one started and stopped before its first report
    (TensorBoard's event file alone, made as the trial starts)."""
    return path.is_dir() and all(p.is_file() and p.name.startswith("events.out.tfevents") for p in path.iterdir())


def drop_unstarted_warnings() -> None:
    """Install _DropUnstarted on the logger of Tune's results (once): by _quiet_ray, by
    unfinished_trials, and by analysis/load before it reads a run."""
    results = logging.getLogger("ray.tune.analysis.experiment_analysis")
    if not any(isinstance(f, _DropUnstarted) for f in results.filters):
        results.addFilter(_DropUnstarted())


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
    controller = logging.getLogger("ray.tune.execution.tune_controller")
    if not any(isinstance(f, _DropGoneCheckpoints) for f in controller.filters):
        controller.addFilter(_DropGoneCheckpoints())
    drop_unstarted_warnings()
    # PBT warns once that a training-loss report has no eval_iteration: by design (evals decide)
    logging.getLogger("ray.tune.schedulers.pbt").setLevel(logging.ERROR)


def _available_cpus(address: str | None) -> int:
    if address:
        return int(ray.cluster_resources().get("CPU", 1))
    return os.cpu_count() or 1


def _stored_search(run: StudyRun, doc: Mapping[str, Any]) -> StudyRun:
    """A resumed search keeps the space, sampler and budget it started with, whatever the flags say."""
    search = stored_search(doc)
    if search is None:
        return run
    return replace(run, search=search, configs={search.base.name: search.base},
                   search_alg=doc.get("search_alg", run.search_alg), sampler_seed=doc.get("sampler_seed"),
                   metric=doc.get("metric", run.metric), num_samples=doc.get("num_samples", run.num_samples),
                   objectives=tuple(doc.get("objectives", ())), constraints=tuple(constraints_from(doc.get("constraints", []))),
                   optuna_storage=doc.get("optuna_storage") or "none",
                   scheduler=doc.get("scheduler", run.scheduler),
                   flops_budget=doc.get("flops_budget", run.flops_budget))  # the restored Tuner's stopper has it


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
                f"{speedup(per_trial) / speedup(pays) - 1:.0%} faster than on {pays} (slm_tune/tune/resources.py); "
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
        schedule = make_scheduler(run)
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
                f"{run.search.base.name}, {sampler_name(run)} (seed {run.sampler_seed}), {run.scheduler} "
                f"scheduler, {'objectives' if len(run.goals) > 1 else 'metric'} {', '.join(run.goals)}"
                + (f", constraints {', '.join(k.text for k in run.constraints)}" if run.constraints else ""))
        if run.early_constraints:
            share = check_possible(run.search, run.early_constraints, run.sampler_seed)
            run.log(f"{share:.0%} of the space's points meet {', '.join(k.text for k in run.early_constraints)}: "
                    "the sampler draws again until one does, so no trial is spent on the others")
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


def _stored_runs(run: StudyRun, storage: Storage) -> list[str]:
    """The study's stored runs, oldest first; for object storage the newest one's small files are
    mirrored, so that its state and settings can be read here."""
    names = run_names(storage.list_dirs(), run.study)
    if storage.remote and names:
        storage.mirror(names[-1], run.local_root / names[-1], skip=_is_state_file)
    return names


def _resume_target(run: StudyRun, storage: Storage) -> tuple[StudyRun, str]:
    """The stored run to resume (the study's newest), with the settings it started with."""
    names = _stored_runs(run, storage)
    name = names[-1] if names else run.study
    if not tune.Tuner.can_restore(storage.uri(name)):
        raise UserError(f"--resume: there is no stored study {run.study!r} under {storage.where}; "
                        f"start it with `python studies.py {run.study}` (without --resume)")
    if not storage.remote and (note := repair_state(run.local_root / name)):
        run.log(note)
    if not storage.remote and (repaired := repair_results(run.local_root / name)):
        run.log(f"note: the stored results of {len(repaired)} trial(s) ({', '.join(repaired)}) were cut short by a kill "
                "or behind when the study stopped: taken back from Ray's own copies, or their cut last line dropped")
    if not storage.remote and (replaced := restore_missing_checkpoints(run.local_root / name)):
        run.log(f"note: Ray's record of this study names {len(replaced)} checkpoint(s) deleted before it stopped "
                "(its record lags); each trial continues from its newest checkpoint instead")
    doc = read_study_file(run.local_root / name)
    stored = stored_configs(doc)
    if stored:  # a resumed study keeps the settings it started with, whatever the flags say now
        run = replace(run, configs=stored)
    asked = run.repeats
    if run.search is None and doc:  # and the seeds it started with: its own count, where they start, what it adds to
        run = replace(run, repeats=int(doc.get("repeats") or 1), first_seed=int(doc.get("first_seed") or 0),
                      adds_to=doc.get("adds_to"))
    if run.more_seeds and run.search is None and (added := _added_seeds(run, storage, name, doc, asked)):
        return added
    if run.search is not None:
        asked = run.num_samples
        run = _stored_search(run, doc)
        if asked != run.num_samples:
            run.log(f"resuming with the search's stored --num-samples {run.num_samples} (not {asked})")
    return run, name


def seeds_stored(doc: dict[str, Any]) -> int:
    """How many seeds a stored study run and the runs it adds to have trained (or were asked to)."""
    return int(doc.get("first_seed") or 0) + int(doc.get("repeats") or 1)


def _added_seeds(run: StudyRun, storage: Storage, name: str, doc: dict[str, Any],
                 asked: int) -> tuple[StudyRun, str] | None:
    """--resume --repeats ASKED on a study of named experiments: ASKED seeds in all. One that ended
    with fewer trains the next seeds in a new run beside it (the layout and compare read both);
    None when it has ASKED, which resumes it as it is."""
    have = seeds_stored(doc)
    if asked == have:
        return None
    if asked < have:
        raise UserError(f"--resume --repeats {asked}: study {run.study!r} has {have} seeds already (seeds are "
                        "added, never removed); leave --repeats out to resume it as it is")
    pending = unfinished_trials(run.local_root / name)
    if pending:
        raise UserError(f"--resume --repeats {asked}: study {run.study!r} has unfinished trials "
                        f"({', '.join(pending)}); resume it first without --repeats, then add seeds")
    added = replace(run, repeats=asked - have, first_seed=have, adds_to=name, resume=False)
    new_name = _new_run_name(added, storage)
    base = next(iter(run.configs.values())).seed
    run.log(f"adding seed(s) {', '.join(map(str, seeds_for(base + have, added.repeats)))} to study {run.study!r} "
            f"({have} stored): a new run {new_name} beside {name}, read together with it")
    return added, new_name


def _new_run_name(run: StudyRun, storage: Storage) -> str:
    """A new run's directory: STUDY, or STUDY-2, STUDY-3... after finished ones; refused while the
    newest has unfinished trials (it should be resumed, not shadowed)."""
    names = _stored_runs(run, storage)
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
    # a search that spent its --time-budget or --budget has ended, with fewer trials than it asked for
    budget_spent = (bool(run.time_budget_s) and time.time() - started >= run.time_budget_s) or (
        bool(run.flops_budget) and spent_flops(r.metrics for r in results) >= run.flops_budget)
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
        space = grid_space(list(run.configs), run.repeats, base_seed, run.first_seed)
        naming = dict(trial_dirname_creator=lambda t: trial_label(t.config),
                      trial_name_creator=lambda t: trial_label(t.config))
        search = dict(max_concurrent_trials=concurrent)
    else:
        space = run.search.param_space()
        # Ray's generators count trials from 1 (a searcher) or 0 (random): number them from 1.
        namer = functools.partial(search_trial_name, run.study, 1 if run.search_alg == "random" else 0)
        naming = dict(trial_dirname_creator=namer, trial_name_creator=namer)
        search = dict(search_alg=make_search_alg(run, concurrent), num_samples=run.num_samples,
                      max_concurrent_trials=concurrent, time_budget_s=run.time_budget_s)
    budget = [FlopsBudget(run.flops_budget)] if run.search is not None and run.flops_budget else []
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
            callbacks=[*run.callbacks, CSVLogger(), JsonLogger(), *optuna_mirror(run, name)],
            stop=budget[0] if budget else None,
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=keep, checkpoint_score_attribute="val_loss", checkpoint_score_order="min"),
            failure_config=tune.FailureConfig(max_failures=run.max_failures),
        ),
    )
    return tuner.fit()


def optuna_mirror(run: StudyRun, name: str) -> list[tune.Callback]:
    """The callback that keeps a search's Optuna study for optuna-dashboard, if it has one."""
    url = run.optuna_url
    return [OptunaStudyMirror(url, name, run.search, run.goals)] if url else []


def seeds_for(base_seed: int, repeats: int) -> list[int]:
    """The seeds of `repeats` runs: the experiment's own seed first, then the next ones."""
    return [base_seed + i for i in range(repeats)]


def grid_space(experiments: list[str], repeats: int = 1, base_seed: int = 1337, first: int = 0) -> dict[str, Any]:
    """The Ray Tune param_space of a study: a grid over experiment names (and seeds when repeated,
    from base_seed + first: a run that adds seeds to a stored one)."""
    space: dict[str, Any] = {"experiment": tune.grid_search(list(experiments))}
    if repeats > 1 or first:
        space["seed"] = tune.grid_search(seeds_for(base_seed + first, repeats))
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
