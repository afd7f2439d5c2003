"""A search's trials kept in an Optuna RDB storage, so that optuna-dashboard shows it live:

    optuna-dashboard sqlite:///experiments/optuna.db

Every trial of the search is one Optuna trial of a study named after the run (`shape`,
`shape-2`, ...): its sampled settings as params, its name as the user attribute `trial`, each
eval's value of the first objective as an intermediate value (at its iteration), and its
objectives' final values when it ends. The study's metric names are the objectives'.

The callback runs in the driver, the storage's one writer; SQLite is put in WAL mode, in which
readers (the dashboard) never block it, and it waits for a lock rather than failing ("database is
locked" is a known pitfall of Optuna on SQLite). Trials are found again by name, so a resumed
search (its callback is pickled with it) updates its trials rather than adding them twice.
"""

from __future__ import annotations

import math
import sqlite3
import warnings
from pathlib import Path
from typing import Any

from ray import tune

from slm_tune.metrics import METRICS
from slm_tune.space import SearchSpace
from slm_tune.tune.callbacks.progress import to_stderr

DEFAULT_FILE = Path("experiments") / "optuna.db"


def default_storage_url(output_dir: Path) -> str:
    return "sqlite:///" + (Path(output_dir).resolve() / DEFAULT_FILE).as_posix()


def open_storage(url: str):
    """Optuna's RDB storage at `url`; a SQLite file is created, in WAL mode, with its folder."""
    import optuna

    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(path) as db:  # WAL persists in the file: readers never block the writer
            db.execute("PRAGMA journal_mode=WAL")
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    return optuna.storages.RDBStorage(url)


class OptunaStudyMirror(tune.Callback):
    def __init__(self, url: str, study_name: str, space: SearchSpace, objectives: list[str], emit=to_stderr):
        self.url, self.study_name, self.space, self.objectives, self.emit = url, study_name, space, objectives, emit
        self._storage = None
        self._study_id: int | None = None
        self._ids: dict[str, int] = {}  # trial name -> Optuna trial id
        self._with_params: set[str] = set()  # trials whose params this driver has written
        self._broken = False

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles its callbacks with the study's state
        return {k: getattr(self, k) for k in ("url", "study_name", "space", "objectives", "emit")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    def _open(self) -> None:
        import optuna

        self._storage = open_storage(self.url)
        before = optuna.logging.get_verbosity()  # "A new study created in RDB": the mirror's, not news
        optuna.logging.set_verbosity(max(before, optuna.logging.WARNING))
        try:
            study = optuna.create_study(storage=self._storage, study_name=self.study_name, load_if_exists=True,
                                        directions=["minimize" if METRICS[o].direction == "min" else "maximize"
                                                    for o in self.objectives])
        finally:
            optuna.logging.set_verbosity(before)
        with warnings.catch_warnings():  # experimental since Optuna 3.2, and what the dashboard labels axes with
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(self.objectives))
        self._study_id = self._storage.get_study_id_from_name(self.study_name)
        for t in self._storage.get_all_trials(self._study_id, deepcopy=False):
            if "trial" in t.user_attrs:
                self._ids[t.user_attrs["trial"]] = t._trial_id

    def _write(self, action, *args) -> None:
        """One write; a failing storage is said once and then left alone: the search goes on."""
        if self._broken:
            return
        import optuna
        import sqlalchemy.exc

        try:
            if self._storage is None:
                self._open()
            action(*args)
        except (optuna.exceptions.OptunaError, sqlalchemy.exc.SQLAlchemyError, OSError, ValueError) as e:
            self._broken = True
            self.emit(f"warning: the search's Optuna study at {self.url} is no longer written "
                      f"({type(e).__name__}: {str(e).splitlines()[0][:160]}); the search goes on")

    def _trial_id(self, trial) -> int:
        """The Optuna trial of a Ray trial, created (running, with its params) when it is new."""
        name = Path(trial.path).name if trial.path else str(trial)
        if name not in self._ids:
            tid = self._storage.create_new_trial(self._study_id)
            self._storage.set_trial_user_attr(tid, "trial", name)
            self._ids[name] = tid
        tid = self._ids[name]
        if name not in self._with_params and not self._storage.get_trial(tid).state.is_finished():
            for key, dist in ((k, self.space.dists[k].optuna()) for k in self.space.searched):
                if key in trial.config:  # a resumed trial's params are written again: the point Ray ran
                    self._storage.set_trial_param(tid, key, dist.to_internal_repr(trial.config[key]), dist)
            self._with_params.add(name)
        return tid

    def on_trial_start(self, iteration, trials, trial, **info):
        self._write(self._trial_id, trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("kind") == "eval":
            self._write(self._intermediate, trial, result)

    def _intermediate(self, trial, result) -> None:
        value = _finite(result.get(METRICS[self.objectives[0]].report_key))
        tid = self._trial_id(trial)
        if value is not None and not self._storage.get_trial(tid).state.is_finished():
            self._storage.set_trial_intermediate_value(tid, int(result.get("eval_iteration", 0)), value)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._write(self._finish, trial, False)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._write(self._finish, trial, True)

    def _finish(self, trial, errored: bool) -> None:
        from optuna.trial import TrialState

        tid = self._trial_id(trial)
        if self._storage.get_trial(tid).state.is_finished():
            return  # a trial Ray ran again after a resume: its first ending stands
        self._fill_gaps(trial, tid)
        last = trial.last_result or {}
        values = [_finite(last.get(METRICS[o].report_key)) for o in self.objectives]
        if errored or any(v is None for v in values):
            self._storage.set_trial_state_values(tid, TrialState.FAIL)
        else:
            self._storage.set_trial_state_values(tid, TrialState.COMPLETE, values)


    def _fill_gaps(self, trial, tid: int) -> None:
        """Evals the callback never saw: a driver killed after it logged a report (or before, with
        the report's checkpoint on disk) resumes the trial after that eval, which is not reported
        again. They are read back from the driver's result.json and the newest local checkpoint."""
        key = METRICS[self.objectives[0]].report_key
        seen = self._storage.get_trial(tid).intermediate_values
        for report in _logged_evals(trial):
            value, step = _finite(report.get(key)), int(report.get("eval_iteration", report.get("iteration", 0)))
            if value is not None and step not in seen:
                self._storage.set_trial_intermediate_value(tid, step, value)
                seen = {**seen, step: value}


def _logged_evals(trial) -> list[dict[str, Any]]:
    """The eval reports of a trial in its driver's result.json, then its newest local checkpoint's history."""
    import json

    from slm_tune.checkpoint_files import read_history

    reports = []
    for d in (trial.local_path, trial.path):
        try:
            lines = Path(d, "result.json").read_text(encoding="utf-8").splitlines() if d else []
        except OSError:
            lines = []
        for line in lines:
            try:
                r = json.loads(line)
            except ValueError:
                continue  # a line cut short by a kill
            if r.get("kind", "eval") == "eval":
                reports.append(r)
    checkpoints = sorted(Path(trial.path).glob("checkpoint_*")) if trial.path and Path(trial.path).is_dir() else []
    return reports + (read_history(checkpoints[-1]) or [] if checkpoints else [])


def _finite(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None
