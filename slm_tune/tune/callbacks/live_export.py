"""The live export: an experiment's files (results JSON, loss plot, best model) written as soon as
its trial ends, not only at the end of the study.

The writing itself is analysis's (`analysis.export.export_live`), handed in by whoever starts the
study (the CLI), so that the library's driver side never imports analysis: it sits above it.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from ray import tune

from slm_tune.study_file import trial_study_file
from slm_tune.tune.callbacks.progress import to_stderr

# (run_dir, experiment, Ray's live view of its trials, output_dir) -> the files written
WriteExperiment = Callable[[Path, str, dict[str, dict[str, Any]], Path], list[Path]]


def _experiment_of(trial) -> str:
    """The experiment a live trial reports as: its grid point's name, or (a search) its own name."""
    return trial.config.get("experiment") or Path(trial.path).name


class ResultsExporter(tune.Callback):
    """Writes an experiment's files as soon as its trial ends, not only at the end of the study.

    The writing (a best model, a text sample, a plot: about a second, more for big models) runs on
    a thread of its own, so Tune starts the next trial meanwhile; the experiment's end waits for it.
    A failure is reported in one line and does not stop the study: its final export writes every
    file again.
    """

    def __init__(self, output_dir: Path, study: str, tracker=None, write: WriteExperiment | None = None,
                 emit: Callable[[str], None] = to_stderr):
        self.output_dir = Path(output_dir).resolve()
        self.study = study
        self.tracker = tracker  # an MlflowTracker: gets each experiment's files as artifacts
        self.write = write  # None (a study stored before it was handed in): only the final export writes
        self.emit = emit
        self._writer: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles its callbacks with the study's state
        return {"output_dir": self.output_dir, "study": self.study, "tracker": self.tracker,
                "write": self.write, "emit": self.emit}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["output_dir"], state["study"], state.get("tracker"), state.get("write"),
                      state.get("emit", to_stderr))

    def _submit(self, trial, trials, status: str) -> None:
        """Snapshots Ray's live view of this experiment's trials (statuses, and the logs not yet
        synced to storage) now, in Tune's thread; reads and writes files on the writer thread.
        Only this experiment is read: the cost of a trial's export does not grow with the study."""
        if self.write is None or not trial.path:
            return
        experiment = _experiment_of(trial)
        mine = [t for t in trials if t.path and _experiment_of(t) == experiment]
        view = {Path(t.path).name: {"ray_status": status if t is trial else t.status, "trial_id": t.trial_id,
                                    "log_dir": t.local_path} for t in mine}
        ended = [t for t in mine if t is trial or t.status in ("TERMINATED", "ERROR")]  # the files describe them
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slm-tune-export")
        self._pending.append(self._writer.submit(self._write, Path(trial.path).parent, experiment, view,
                                                 self._output_dir(trial), ended))

    def _output_dir(self, trial) -> Path:
        """Where the study's driver writes now: its study.json says (a study moved, or resumed with
        another --output-dir, writes there), else where this callback was made for."""
        where = trial_study_file(trial).get("output_dir")
        return Path(where) if where else self.output_dir

    def _write(self, run_dir: Path, experiment: str, view: dict[str, dict[str, Any]], output_dir: Path,
               ended: list) -> None:
        try:
            files = self.write(run_dir, experiment, view, output_dir)
            if files and self.tracker is not None:
                self.tracker.log_files(ended, files)
        except Exception as e:  # reported, never raised: a study is not stopped for its live files
            self.emit(f"warning: the files of {experiment} could not be written yet ({type(e).__name__}: "
                      f"{str(e)[:200]}); the study's final export writes them")

    def wait(self) -> None:
        """Until every export submitted so far is written."""
        for f in self._pending:
            f.result()
        self._pending.clear()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._submit(trial, trials, "TERMINATED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._submit(trial, trials, "ERROR")

    def on_experiment_end(self, trials, **info):
        self.wait()
        if self._writer is not None:
            self._writer.shutdown()
            self._writer = None
