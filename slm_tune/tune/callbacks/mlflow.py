"""MLflow tracking of a study, through MLflow's own client (no REST calls by hand).

One MLflow experiment per study run (named like its directory: `quick`, `lr`, `quick-2`), one
MLflow run per trial (named like the trial) with the trial's settings as params, every report as
metrics (step = iteration: training loss at each log interval, validation figures at each eval),
and the trial's results JSON and loss plot as artifacts when its files are written. A resumed
study finds each trial's run again by its `slm_tune.trial_id` tag and logs only steps after the
last one it holds, so there are no duplicate runs and no repeated steps.

Ray's MLflowLoggerCallback was not used: it starts a new MLflow run whenever a trial starts,
so a resumed study would duplicate every unfinished trial's run.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any, Iterable

from ray import tune

from slm_tune.errors import UserError
from slm_tune.metrics import tracked
from slm_tune.study_file import stored_trial_config, trial_study_file

TRAIN_METRICS = tracked("train")
EVAL_METRICS = tracked("eval")


def default_tracking_uri(output_dir: Path) -> str:
    """A SQLite database under the output directory: `mlflow ui --backend-store-uri sqlite:///mlflow.db`."""
    return "sqlite:///" + (Path(output_dir).resolve() / "mlflow.db").as_posix()


def check_mlflow() -> None:
    import importlib.util

    if importlib.util.find_spec("mlflow") is None:
        raise UserError("--mlflow needs MLflow, an optional extra: pip install -e .[mlflow] (or pip install mlflow)")


class MlflowTracker(tune.Callback):
    """A Tune callback that mirrors the study into MLflow; see the module docstring."""

    def __init__(self, tracking_uri: str | None, output_dir: Path):
        self.tracking_uri = tracking_uri  # None: the default, a SQLite file in the study's output directory
        self.output_dir = Path(output_dir).resolve()
        self._reset()

    def _reset(self) -> None:
        self._client = None
        self._experiments: dict[str, str] = {}  # study run name -> experiment id
        self._runs: dict[str, str] = {}  # trial id -> MLflow run id
        self._last_step: dict[str, int] = {}  # MLflow run id -> last step logged
        self._plans: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()  # the exporter's writer thread logs artifacts

    def __getstate__(self) -> dict[str, Any]:  # Tune stores callbacks with the study
        return {"tracking_uri": self.tracking_uri, "output_dir": self.output_dir}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    @property
    def uri(self) -> str:
        return self.tracking_uri or default_tracking_uri(self.output_dir)

    def _open(self, trial) -> None:
        """The client, at the first event: the output directory is the one the study's newest
        driver writes to (its study.json), so a study moved or resumed elsewhere keeps its default
        database, and its artifacts, beside its files."""
        if self._client is None:
            from mlflow.tracking import MlflowClient

            where = trial_study_file(trial).get("output_dir")
            if where:
                self.output_dir = Path(where)
            self._client = MlflowClient(tracking_uri=self.uri)

    @property
    def client(self):
        if self._client is None:
            raise RuntimeError("MlflowTracker.client before its first trial event")
        return self._client

    # ------------------------------------------------------------------ runs

    def _experiment_id(self, run_dir: Path) -> str:
        name = run_dir.name
        if name not in self._experiments:
            found = self.client.get_experiment_by_name(name)
            if found is not None:
                self._experiments[name] = found.experiment_id
            else:
                local = self.uri.startswith(("sqlite:", "file:")) or "://" not in self.uri
                location = (self.output_dir / "mlartifacts" / name).as_uri() if local else None
                self._experiments[name] = self.client.create_experiment(
                    name, artifact_location=location, tags={"slm_tune.study_dir": str(run_dir)})
        return self._experiments[name]

    def _params(self, trial) -> dict[str, Any]:
        """The trial's full settings, from its run's stored study.json (read where Ray stores the
        run: a local folder or a bucket) and its point."""
        key = str(Path(trial.path).parent)
        if key not in self._plans:
            self._plans[key] = trial_study_file(trial)
        config = stored_trial_config(self._plans[key], trial.config, str(trial))
        return config.to_dict() if config is not None else dict(trial.config)

    def _run_id(self, trial) -> str:
        self._open(trial)
        if trial.trial_id in self._runs:
            return self._runs[trial.trial_id]
        run_dir = Path(trial.path).parent
        experiment_id = self._experiment_id(run_dir)
        found = self.client.search_runs([experiment_id], f"tags.`slm_tune.trial_id` = '{trial.trial_id}'",
                                        max_results=1)
        if found:  # a resumed study: the same run, from the step after its last one
            run_id = found[0].info.run_id
            history = self.client.get_metric_history(run_id, "train_loss")
            self._last_step[run_id] = max((m.step for m in history), default=-1)
        else:
            run = self.client.create_run(experiment_id, run_name=str(trial), tags={
                "slm_tune.trial_id": trial.trial_id, "slm_tune.study": run_dir.name})
            run_id = run.info.run_id
            from mlflow.entities import Param

            params = [Param(k, str(v)[:6000]) for k, v in self._params(trial).items()]
            for i in range(0, len(params), 100):
                self.client.log_batch(run_id, params=params[i:i + 100])
            self._last_step[run_id] = -1
        self._runs[trial.trial_id] = run_id
        return run_id

    # ------------------------------------------------------------------ Tune's events

    def on_trial_start(self, iteration, trials, trial, **info):
        with self._lock:
            run_id = self._run_id(trial)
            if self.client.get_run(run_id).info.status != "RUNNING":  # a resumed trial's run, reopened
                self.client.update_run(run_id, status="RUNNING")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        from mlflow.entities import Metric

        step = int(result.get("iteration", 0))
        with self._lock:
            run_id = self._run_id(trial)
            if step <= self._last_step.get(run_id, -1):
                return  # logged before the study was interrupted
            keys = EVAL_METRICS if result.get("kind", "eval") == "eval" else TRAIN_METRICS
            now = int(time.time() * 1000)
            metrics = [Metric(k, float(result[k]), now, step) for k in keys
                       if isinstance(result.get(k), (int, float)) and math.isfinite(result[k])]
            if metrics:
                self.client.log_batch(run_id, metrics=metrics)
            self._last_step[run_id] = step

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._end(trial, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial, "FAILED")

    def _end(self, trial, status: str) -> None:
        with self._lock:
            run_id = self._run_id(trial)
            self.client.set_terminated(run_id, status=status)

    def log_files(self, trials: Iterable, files: Iterable[Path]) -> None:
        """Artifacts for these trials' runs (the exporter calls it once it has written them). A
        trial that ended before a resume has its run found again by its tag."""
        with self._lock:
            for trial in trials:
                run_id = self._run_id(trial)
                for f in files:
                    if Path(f).is_file():
                        self.client.log_artifact(run_id, str(f))
