"""Interrupt, crash, fail and misuse a study: nothing computed is lost, errors are one line."""

import hashlib
import json
import os
import re
import shutil
import threading
import signal
import time
from pathlib import Path

import pytest

from analysis.load import load_run
from analysis.export import export_live
from slm_tune.tune.callbacks.live_export import ResultsExporter
from slm_tune.tune.killed_state import newest_state
from slm_tune.tune.run import StudyRun, run_study
from conftest import (LONG, LONG_ITERS, TINY_SETS, _evals, _lines, _start, _wait_mid_second_trial, copy_study,
                      driver_ended, run_cli, tiny)

def _check_resumed(out: Path, killed_at: int, first_pid: int) -> None:
    run = out / "ray_results" / "run_optimal_fast"
    first = _evals(_lines(run / "optimal_fast_seed1337" / "result.json"))
    second = _evals(_lines(run / "optimal_fast_seed1338" / "result.json"))
    # The finished trial was not run again: its reports are exactly the first run's.
    assert [r["iteration"] for r in first] == list(range(20, LONG_ITERS + 1, 20))
    assert {r["pid"] for r in first} == {first_pid}
    # The unfinished one continued from its last checkpoint, redoing at most one interval.
    resumed = [r for r in second if r["pid"] != second[0]["pid"]]
    assert resumed and resumed[0]["iteration"] >= killed_at
    assert second[-1]["iteration"] == LONG_ITERS and second[-1]["status"] == "finished"
    trials, history = load_run(run)
    assert set(trials["status"]) == {"finished"}
    history = history[history["kind"] == "eval"]
    for seed in (1337, 1338):
        its = list(history[history["seed"] == seed]["iteration"])
        assert its == list(range(20, LONG_ITERS + 1, 20))  # the loss history continues, no gaps, no repeats
    record = json.loads((out / "experiments" / "optimal_fast_results.json").read_text())
    assert record["runs"] == 2 and record["status"] == "finished"
    assert all(len(r["history"]) == LONG_ITERS // 20 for r in record["per_run"])


def _interrupt_with_ctrl_c(out: Path) -> tuple[int, int]:
    """Ctrl-C mid-way through the second trial: the driver stops the study, keeps what it has and
    says how to resume. (the first trial's pid, the last eval of the second)"""
    proc = _start(out)
    _wait_mid_second_trial(out, proc)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    driver_ended(proc)  # resumed as after a local study, whose Ray stopped with it
    assert proc.returncode == 130, err[-2000:]
    assert "--resume" in err.splitlines()[-1] and "Traceback" not in err
    run = out / "ray_results" / "run_optimal_fast"
    return (_lines(run / "optimal_fast_seed1337" / "result.json")[0]["pid"],
            _evals(_lines(run / "optimal_fast_seed1338" / "result.json"))[-1]["iteration"])


def _cut_off_record(run: Path, ray_tmp: Path, monkeypatch) -> None:
    """Ray's record of the run cut off half-way, as a SIGKILL during Ray's copy leaves it, and its
    whole staging copy where Ray keeps one (a session of the Ray temporary directory RAY_TMPDIR)."""
    state = newest_state(run)
    staged = ray_tmp / "ray" / "session_x" / "artifacts" / "ts" / run.name / "driver_artifacts" / state.name
    staged.parent.mkdir(parents=True)
    shutil.copyfile(state, staged)
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    monkeypatch.setenv("RAY_TMPDIR", str(ray_tmp))


@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_interrupted_study_resumes(tmp_path, how, killed_study, local_ray, monkeypatch):
    if how == "SIGKILL":  # the driver and its Ray processes died at once, as when a machine goes down
        out = copy_study(killed_study, tmp_path / "study")
        first_pid, killed_at = killed_study["first_pid"], killed_study["killed_at"]
    else:
        out = tmp_path / "study"
        first_pid, killed_at = _interrupt_with_ctrl_c(out)
    assert killed_at < LONG_ITERS

    again = run_cli("run", "optimal_fast", "--repeats", "2", "--max-concurrent", "1", "--output-dir", str(out), *LONG)
    assert again.returncode == 2 and "unfinished trials" in again.stderr and "--resume" in again.stderr
    if how == "SIGKILL":  # killed as Ray copied its record into the run: cut off, whole in Ray's staging copy
        _cut_off_record(out / "ray_results" / "run_optimal_fast", tmp_path / "raytmp", monkeypatch)

    resumed = run_cli("run", "optimal_fast", "--repeats", "2", "--max-concurrent", "1", "--output-dir", str(out),
                      *LONG, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _check_resumed(out, killed_at, first_pid)
    if how == "SIGKILL":
        assert "was cut off when the study was killed" in resumed.stderr, resumed.stderr[-2000:]


def test_crashed_trial_is_retried_from_its_checkpoint(tmp_path, local_ray):
    iters = 300  # its worker is killed at its 5th report (iteration 50)
    configs = {"victim": tiny(name="victim", max_iters=iters, eval_interval=20)}

    killed = {}

    def kill_worker():
        path = tmp_path / "ray_results" / "crash" / "victim" / "result.json"
        deadline = time.time() + 120
        while time.time() < deadline:
            lines = _lines(path)
            if len(lines) >= 5:
                killed["at"] = lines[-1]["iteration"]
                os.kill(lines[-1]["pid"], signal.SIGKILL)
                return
            time.sleep(0.05)

    t = threading.Thread(target=kill_worker)
    t.start()
    results = run_study(StudyRun("crash", configs, output_dir=tmp_path, max_failures=2))
    t.join()
    assert "at" in killed
    lines = _lines(tmp_path / "ray_results" / "crash" / "victim" / "result.json")
    pids = [r["pid"] for r in lines]
    assert len(set(pids)) == 2  # the trial ran in a second process after the crash
    after = [r for r in lines if r["pid"] == pids[-1]]
    assert after[0]["iteration"] >= killed["at"] and after[0]["iteration"] > 20  # not from scratch
    assert results[0].metrics["status"] == "finished" and results[0].metrics["iteration"] == iters


def test_failing_and_diverging_trials_do_not_stop_the_study(tmp_path, local_ray):
    cache = tmp_path / "cache"
    configs = {
        "healthy": tiny(name="healthy", max_iters=100, eval_interval=20),
        "diverges": tiny(name="diverges", learning_rate=1e6, grad_clip=0.0, warmup_iters=0, max_iters=200,
                         eval_interval=20),
        "broken": tiny(name="broken", vocab_size=777, max_iters=100, eval_interval=20),
    }

    class Sabotage(__import__("ray").tune.Callback):
        """After the driver built the token caches, take the broken trial's away for good."""

        def on_trial_start(self, iteration, trials, trial, **info):
            if trial.config["experiment"] == "broken":
                for entry in (cache / "tokens").glob("*gpt2-777*"):
                    if entry.is_dir():
                        shutil.rmtree(entry)
                        entry.write_text("not a directory")  # rebuilding it fails: a persistent fault

    results = run_study(StudyRun("faults", configs, output_dir=tmp_path, cache_dir=str(cache), max_failures=1,
                                 max_concurrent=1, callbacks=[Sabotage(), ResultsExporter(tmp_path, "faults", write=export_live)]))
    assert len(results) == 3
    live = {e: json.loads((tmp_path / "experiments" / f"{e}_results.json").read_text()) for e in configs}
    assert {e: r["status"] for e, r in live.items()} == {"healthy": "finished", "diverges": "diverged",
                                                          "broken": "errored"}
    trials, _ = load_run(tmp_path / "ray_results" / "faults")
    status = dict(zip(trials["experiment"], trials["status"]))
    assert status == {"healthy": "finished", "diverges": "diverged", "broken": "errored"}
    error = trials[trials["experiment"] == "broken"]["error"].iloc[0]
    assert error and "\n" not in error and ("Error" in error or "error" in error)
    from analysis.export import export_runs
    export_runs([tmp_path / "ray_results" / "faults"], tmp_path, "faults")
    broken = json.loads((tmp_path / "experiments" / "broken_results.json").read_text())
    assert broken["status"] == "errored" and broken["error"] == error == live["broken"]["error"]


def test_checkpoints_are_kept_to_the_latest_and_the_best(tmp_path, local_ray):
    configs = {"long": tiny(name="long", max_iters=80, eval_interval=10)}
    run_study(StudyRun("keep", configs, output_dir=tmp_path))
    trial = tmp_path / "ray_results" / "keep" / "long"
    kept = sorted(p.name for p in trial.glob("checkpoint_*"))
    assert 1 <= len(kept) <= 3, kept  # the two best by val_loss, and the latest
    assert "checkpoint_000007" in kept  # the latest of 8 reports


# ------------------------------------------------------------------------------ bad input

def _snapshot(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file() and ".lock" not in p.name}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, local_ray):
    out = tmp_path_factory.mktemp("finished")
    proc = run_cli("run", "vocab_small", "--output-dir", str(out), "--max-iters", "20", *TINY_SETS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _bad_inputs(out: Path, tmp: Path) -> list[tuple[list[str], str]]:
    (tmp / "bad.toml").write_text("[mine]\nn_layer = = 2\n")
    (tmp / "invalid.toml").write_text("[mine]\nn_head = 3\n")
    (tmp / "empty.txt").write_text("")
    (tmp / "afile").write_text("x")
    o = ["--output-dir", str(out)]
    return [
        (["vocabb", *o], "did you mean: vocab"),
        (["run", "basline", *o], "did you mean: baseline"),
        (["run", "baseline", "vocab_smal", *o], "did you mean: vocab_small"),  # several as one study: each checked
        (["run", "baseline", "--set", "n_head=3", *o], "must be divisible by n_head=3"),
        (["run", "baseline", "--set", "dropout=2", *o], "dropout=2.0 is invalid"),
        (["run", "mine", "--experiments-file", str(tmp / "bad.toml"), *o], "bad.toml: invalid TOML"),
        (["run", "mine", "--experiments-file", str(tmp / "invalid.toml"), *o], "[mine]"),
        (["run", "baseline", "--dataset", str(tmp / "missing.txt"), *o], "check the path"),
        (["run", "baseline", "--dataset", str(tmp / "empty.txt"), *o], "has 0 document"),
        (["run", "baseline", "--dataset", "tinystories", *o], "storyworld"),
        (["run", "baseline", "--set", "vocab_size=60000", *o], "the GPT-2 tokenizer gives"),
        (["vocab", "--resume", "--output-dir", str(tmp / "nothing-here")], "no stored study 'vocab'"),
        (["run", "baseline", "--output-dir", str(tmp / "afile" / "sub")], "is not writable"),
        (["run", "baseline", "--max-concurrent", "64", *o], "beyond|needs more than"),
        (["run", "baseline", "--cpus-per-trial", "64", *o], "beyond this machine's"),
        (["run", "baseline", "--max-concurrent", "0", *o], "must be 1 or more"),
        (["sample", "nope", *o], "does not exist"),
    ]


def test_bad_input_is_one_line_exit_2_and_loses_nothing(finished, tmp_path):
    before = _snapshot(finished)
    for args, expected in _bad_inputs(finished, tmp_path):
        proc = run_cli(*args)
        err = proc.stderr.strip()
        assert proc.returncode == 2, (args, err[-1500:])
        assert "Traceback" not in err, (args, err[-1500:])
        last = err.splitlines()[-1]
        assert last.startswith("error: ") and re.search(expected if "|" in expected else re.escape(expected), last), (args, last)
        assert _snapshot(finished) == before, args


def test_damaged_checkpoint_and_model_are_reported_not_used(finished):
    model = finished / "best_model_vocab_small.pt"
    original = model.read_bytes()
    try:
        model.write_bytes(original[: len(original) // 2])
        proc = run_cli("sample", "vocab_small", "--output-dir", str(finished))
        assert proc.returncode == 2 and "is not a readable slm-tune model" in proc.stderr
    finally:
        model.write_bytes(original)
    from analysis.export import best_checkpoint
    trial = finished / "ray_results" / "run_vocab_small" / "vocab_small"
    good = best_checkpoint(trial)
    assert good is not None
    (good[0] / "state.pt").write_bytes(b"garbage")
    other = best_checkpoint(trial)
    assert other is None or other[0] != good[0]


def test_seeds_are_not_added_to_a_study_with_unfinished_trials_nor_taken_away(killed_study, tmp_path):
    """`--resume --repeats N` adds seeds to a study that ended (test_study); the killed two-seed
    study has an unfinished trial, and fewer seeds than stored are never asked: one line each,
    exit 2, no new run."""
    out = copy_study(killed_study, tmp_path / "study")
    more = run_cli("run", "optimal_fast", "--output-dir", str(out), "--resume", "--repeats", "3", *LONG)
    assert more.returncode == 2 and "has unfinished trials" in more.stderr, more.stderr[-2000:]
    assert "resume it first without --repeats" in more.stderr.strip().splitlines()[-1]
    fewer = run_cli("run", "optimal_fast", "--output-dir", str(out), "--resume", "--repeats", "1", *LONG)
    assert fewer.returncode == 2 and "has 2 seeds already" in fewer.stderr, fewer.stderr[-2000:]
    assert sorted(p.name for p in (out / "ray_results").iterdir()) == ["run_optimal_fast"]


def test_a_second_study_on_the_same_output_dir_refuses(killed_study):
    second = killed_study["second"]  # tried while the study ran
    assert second.returncode == 2 and "another study is running" in second.stderr
