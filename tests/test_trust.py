"""Files slm-tune reads are data, never code; a local study's Ray listens on loopback only."""

import json
import os
from pathlib import Path

import pytest

from conftest import LONG, LONG_ITERS, _evals, _lines, copy_study, run_cli
import torch

from analysis.load import load_run
from slm_tune.checkpoint_files import UnsafeFileError
from slm_tune.model.checkpoints import load_state


class _RunsACommand:
    """What a hostile model file holds: unpickling it calls os.system."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _evil_file(path: Path, marker: Path) -> None:
    """A file shaped like slm-tune's (model, config, state, ...) whose model runs a command."""
    torch.save({"model": _RunsACommand(f"touch {marker}"), "config": {"vocab_size": 2000},
                "state": {"iteration": 1, "history": []}, "tokenizer": {}}, path)


def test_a_crafted_file_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "pwned"
    _evil_file(tmp_path / "evil.pt", marker)
    with pytest.raises(UnsafeFileError, match=r"was refused: .*posix\.system|was refused: .*system"):
        load_state(tmp_path / "evil.pt")
    assert not marker.exists()


def test_an_interrupted_study_compares_and_refuses_crafted_files(tmp_path, killed_study, local_ray):
    marker = tmp_path / "pwned"
    tmp_path = copy_study(killed_study, tmp_path / "study")  # its own copy: every file in it is about to be crafted
    run = tmp_path / "ray_results" / "run_optimal_fast"
    # compare works on what the killed study left
    out = run_cli("compare", "--output-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr[-2000:]
    trials, _ = load_run(run)
    assert sorted(trials["status"]) == ["finished", "interrupted"]
    record = json.loads((tmp_path / "experiments" / "optimal_fast_results.json").read_text())
    assert record["runs"] == 2 and record["status"] == "finished/interrupted" and record["best_checkpoint"]
    finished = trials[trials["status"] == "finished"]  # its figure is the run that ended, not a mean with the cut one
    assert record["best_val_bpb"] == pytest.approx(float(finished["best_val_bpb"].iloc[0]))

    # then every checkpoint in it is replaced by one whose unpickling would run a command
    planted = sorted(run.glob("*/checkpoint_*/state.pt"))
    assert planted
    for state in planted:  # every checkpoint of the study, the history.json beside it left as it was
        _evil_file(state, marker)

    # sample: a shared best_model file
    _evil_file(tmp_path / "best_model_evil.pt", marker)
    out = run_cli("sample", "evil", "--output-dir", str(tmp_path))
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "was refused" in last and "could run code" in last
    assert not marker.exists()

    # compare: every checkpoint is refused and named; the other files are still written
    out = run_cli("compare", "--output-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr[-2000:]
    warnings = [line for line in out.stderr.splitlines() if line.startswith("warning: ") and "was refused" in line]
    assert warnings and "Traceback" not in out.stderr
    record = json.loads((tmp_path / "experiments" / "optimal_fast_results.json").read_text())
    assert record["best_checkpoint"] is None and record["runs"] == 2
    assert not marker.exists()

    # --resume: the unfinished trial would restart from a checkpoint; it is refused, not run
    out = run_cli("run", "optimal_fast", "--repeats", "2", "--max-concurrent", "1", "--output-dir", str(tmp_path),
                  *LONG, "--resume")
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    # issue 20, bug 6: a study in which a trial errored exits 1 once every file is written (it was 0)
    assert out.returncode == 1 and "1 of 2 trial(s) errored" in out.stderr, out.stderr[-2000:]
    assert (tmp_path / "experiments" / "experiment_comparison.csv").is_file()
    assert not marker.exists()
    second = _evals(_lines(run / "optimal_fast_seed1338" / "result.json"))
    assert second[-1]["iteration"] < LONG_ITERS  # it did not carry on from the crafted state
    trials, _ = load_run(run)
    error = trials.loc[trials["seed"] == 1338, "error"].iloc[0]
    assert error and "was refused" in error, error


def test_a_local_study_listens_on_loopback_only_with_token_auth(tmp_path):
    import psutil
    from ray import tune

    from slm_tune.tune.run import StudyRun, run_study
    from conftest import tiny

    seen: dict = {}

    class ListSockets(tune.Callback):
        """While a trial runs: every listening socket of this process's descendants (Ray's GCS,
        raylet, agents and workers, all started by this driver)."""

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if seen:
                return
            me = psutil.Process()
            procs = {p.pid: p for p in me.children(recursive=True)}
            seen["sockets"] = [(procs[c.pid].name(), c.laddr.ip, c.laddr.port)
                               for c in psutil.net_connections(kind="inet")
                               if c.status == psutil.CONN_LISTEN and c.pid in procs]
            seen["auth"] = {p.name(): p.environ().get("RAY_AUTH_MODE") for p in procs.values()
                            if p.name() in ("gcs_server", "raylet")}

    import ray

    ray.shutdown()  # another test's local Ray: the study starts its own, as a user's does
    run_study(StudyRun("closed", {"t": tiny(name="t", max_iters=40, eval_interval=10)}, output_dir=tmp_path,
                       callbacks=[ListSockets()]))
    names = {name for name, _, _ in seen["sockets"]}
    assert {"gcs_server", "raylet"} <= names, seen["sockets"]  # Ray's own servers were found...
    loopback = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
    assert all(ip in loopback for _, ip, _ in seen["sockets"]), seen["sockets"]  # ...on loopback only
    assert seen["auth"] == {"gcs_server": "token", "raylet": "token"}, seen["auth"]


def test_files_written_before_still_load(tmp_path):
    """A best_model file as every earlier slm-tune wrote it (its config from before compile="auto",
    when compile was a bool) loads with the weights-only loader and samples."""
    from analysis.samples import sample_from_file
    from conftest import tiny
    from slm_tune.model.gpt import GPT

    c = tiny()
    config = {**c.to_dict(), "compile": True}
    torch.save({"model": GPT(c).state_dict(), "config": config, "tokenizer": "gpt2-1000", "vocab_size": 1000,
                "iteration": 20, "val_loss": 6.5, "val_bpb": 3.1, "checkpoint": "somewhere/checkpoint_000001"},
               tmp_path / "best_model_old.pt")
    assert load_state(tmp_path / "best_model_old.pt")["config"]["compile"] is True
    assert isinstance(sample_from_file(tmp_path / "best_model_old.pt", max_new_tokens=5), str)
