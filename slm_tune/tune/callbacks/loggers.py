"""Ray Tune's CSV and JSON loggers, minus one step that loses reports.

When a trial (re)starts from a checkpoint, Ray 2.60's loggers copy the trial's result.json and
progress.csv from the storage path over the driver's own copy before appending. Within a running
study the storage copy lags behind (it is synced from the driver's copy only now and then), so a
trial that restarts mid-study, as every trial PBT exploits does, lost the reports made since the
last sync (seen here: a PBT trial's result.json ended at its exploit, 30 of its 60 iterations).
These loggers copy from storage only when the driver has no copy of its own: a resumed study's
new driver, whose staging directory starts empty.
"""

from __future__ import annotations

from pathlib import Path

from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback


class _KeepDriverCopy:
    def _restore_from_remote(self, file_name: str, trial) -> None:
        if Path(trial.local_path, file_name).is_file():
            return  # the driver's copy is the newest: it wrote every line
        super()._restore_from_remote(file_name, trial)


class JsonLogger(_KeepDriverCopy, JsonLoggerCallback):
    """result.json and params.json, as Ray writes them."""


class CSVLogger(_KeepDriverCopy, CSVLoggerCallback):
    """progress.csv, as Ray writes it."""
