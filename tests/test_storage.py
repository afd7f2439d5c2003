"""Studies kept in object storage: a real S3-compatible server (moto) on 127.0.0.1, reached the
way the AWS SDKs and pyarrow reach S3, through the standard AWS variables."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from types import SimpleNamespace

import pytest
from ray.train._internal.storage import StorageContext

from analysis.load import load_run
from conftest import ROOT, TINY_SETS, attached, kill_study, run_cli, serve, start_study
from slm_tune.tune.callbacks.progress import StudyProgress
from test_study import ENV

pafs = pytest.importorskip("pyarrow.fs")
pytest.importorskip("moto")

ITERS = 120  # 6 evals, each a checkpoint uploaded to the bucket; the second trial is killed after 3
LONG = ["--max-iters", str(ITERS), "--set", "eval_interval=20", *TINY_SETS]


def _start_server(extra_env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """moto's S3 server on a free port (conftest.serve), up once its own API answers."""
    return serve(lambda port: [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                 "/moto-api/config", timeout=30, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                 env={**os.environ, **(extra_env or {})})


def test_a_server_whose_port_is_taken_before_it_binds_starts_again_on_another(tmp_path):
    """conftest.serve, which starts this module's S3 server and the MLflow and dashboard servers:
    the free port it finds can be taken before the server binds it (the other worker's Ray); that
    server exits, and serve starts it again on another port. Here the port it finds first is taken
    for real, by a socket listening on it until serve returns."""
    (tmp_path / "ok").write_text("ok")
    given: list[int] = []
    with contextlib.ExitStack() as taken:
        def command(port: int) -> list[str]:
            given.append(port)
            if len(given) == 1:  # another process takes the port between serve's probe and the bind
                sock = taken.enter_context(socket.socket())
                sock.bind(("127.0.0.1", port))
                sock.listen()
            return [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)]

        proc, url = serve(command, "/ok", timeout=30, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        assert len(given) == 2 and given[0] != given[1] and url == f"http://127.0.0.1:{given[1]}"
        with urllib.request.urlopen(url + "/ok", timeout=10) as r:
            assert r.read() == b"ok"
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def s3():
    proc, endpoint = _start_server()
    env = {**ENV, "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    pafs.S3FileSystem(endpoint_override=endpoint, access_key="testing", secret_key="testing", region="us-east-1",
                      allow_bucket_creation=True).create_dir("studies")
    yield env
    proc.kill()
    proc.wait()


def _cli(env, *args, timeout=600):
    """A study's driver as a process, on the session's Ray (`attached`)."""
    args, env = attached(list(args), env)
    return subprocess.run([sys.executable, str(ROOT / "studies.py"), *args], capture_output=True, text=True, env=env,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def _bucket(env) -> "pafs.S3FileSystem":
    return pafs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], access_key="testing", secret_key="testing",
                             region="us-east-1")


def _checkpoints(env, trial: str) -> list[str]:
    infos = _bucket(env).get_file_info(pafs.FileSelector(f"studies/killed/run_optimal_fast/{trial}",
                                                         allow_not_found=True))
    return sorted(i.base_name for i in infos if i.base_name.startswith("checkpoint_"))


def test_study_in_a_bucket_survives_sigkill_and_is_compared_from_the_bucket(s3, tmp_path, monkeypatch):
    storage = "s3://studies/killed"
    cmd = ["run", "optimal_fast", "--repeats", "2", "--max-concurrent", "1", "--storage-path", storage, *LONG]
    proc = start_study([*cmd, "--output-dir", str(tmp_path / "a")], s3)
    deadline = time.time() + 300
    while len(_checkpoints(s3, "optimal_fast_seed1338")) < 3:  # mid-way through the second trial
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.time() < deadline, "the study did not reach its second trial in time"
        time.sleep(0.1)
    kill_study(proc)  # the driver and its Ray at once, and no worker left to upload after it
    trial_dir = "studies/killed/run_optimal_fast/optimal_fast_seed1338"
    bucket = _bucket(s3)  # the kill can cut the newest upload short: the newest with its history
    whole = [c for c in _checkpoints(s3, "optimal_fast_seed1338")
             if bucket.get_file_info(f"{trial_dir}/{c}/history.json").type == pafs.FileType.File]
    newest = json.loads(bucket.open_input_stream(f"{trial_dir}/{whole[-1]}/history.json").read())
    killed_at = newest[-1]["iteration"]
    assert killed_at < ITERS

    resumed = _cli(s3, *cmd, "--output-dir", str(tmp_path / "a"), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Traceback" not in resumed.stderr

    # On another machine (a fresh output directory, nothing mounted): compare from the bucket.
    other = tmp_path / "b"
    for key, value in s3.items():  # compare reads the bucket from the driver: in this process
        if os.environ.get(key) != value:
            monkeypatch.setenv(key, value)
    out = run_cli("compare", "--output-dir", str(other), "--storage-path", storage)
    assert out.returncode == 0, out.stderr[-3000:]
    run = other / "ray_results" / "run_optimal_fast"
    trials, history = load_run(run)
    assert set(trials["status"]) == {"finished"} and len(trials) == 2
    history = history[history["kind"] == "eval"]
    for seed in (1337, 1338):  # every eval once: none lost, none repeated
        assert list(history[history["seed"] == seed]["iteration"]) == list(range(20, ITERS + 1, 20))
    reports = [json.loads(line) for line in (run / "optimal_fast_seed1338" / "result.json").read_text().splitlines()]
    evals = [r for r in reports if r.get("kind") == "eval"]
    pids = list(dict.fromkeys(r["pid"] for r in evals))
    assert len(pids) == 2  # before and after the kill
    after = [r for r in evals if r["pid"] == pids[-1]]
    # it went on from the newest checkpoint in the bucket (or the one before, had the newest been cut short)
    assert killed_at <= after[0]["iteration"] <= killed_at + 20, (killed_at, after[0]["iteration"])
    first = [json.loads(line) for line in (run / "optimal_fast_seed1337" / "result.json").read_text().splitlines()]
    assert len({r["pid"] for r in first}) == 1  # the finished trial was not run again
    record = json.loads((other / "experiments" / "optimal_fast_results.json").read_text())
    assert record["runs"] == 2 and record["status"] == "finished" and record["best_checkpoint"]
    assert (other / "best_model_optimal_fast.pt").is_file()
    assert (other / "experiments" / "optimal_fast_training_losses.png").is_file()
    assert (other / "experiments" / "experiment_comparison.csv").is_file()

    # The live progress line's plan (trial count, FLOPs: the study ETA) is read from the bucket,
    # through the storage Ray gives each trial: trial.path is a path in the bucket.
    ctx = StorageContext("studies/killed", "run_optimal_fast", storage_filesystem=_bucket(s3),
                         trial_dir_name="optimal_fast_seed1337")
    progress = StudyProgress()
    progress._load_plan(SimpleNamespace(path=ctx.trial_fs_path, storage=ctx))
    assert progress._plan["n_trials"] == 2 and progress._plan["flops"]["optimal_fast"] > 0

    # MLflow's params of a trial come from the same study.json in the bucket (issue 20, bug 1:
    # they were read from a local path that does not exist, so a run got no params).
    from slm_tune.tune.callbacks.mlflow import MlflowTracker

    tracker = MlflowTracker("sqlite:///" + (tmp_path / "mlflow.db").as_posix(), tmp_path)
    params = tracker._params(SimpleNamespace(path=ctx.trial_fs_path, storage=ctx,
                                             config={"experiment": "optimal_fast", "seed": 1338}))
    assert params["seed"] == 1338 and params["n_embd"] == 32 and len(params) >= 26


def test_bad_storage_is_one_line_before_any_trial(s3, tmp_path, monkeypatch):
    denied_server, denied = _start_server({"INITIAL_NO_AUTH_ACTION_COUNT": "0"})  # checks every key: ours are unknown
    try:
        cases = [
            ({}, "s3://no-such-bucket/x", "does not exist"),
            ({"AWS_ENDPOINT_URL": "http://127.0.0.1:1"}, "s3://studies/x", "cannot reach the object store"),
            ({"AWS_ENDPOINT_URL": denied}, "s3://studies/x", "was denied"),
        ]
        for extra, storage, expected in cases:  # in this process: the checks run before any Ray
            with monkeypatch.context() as env:
                for key, value in {**s3, **extra}.items():
                    if os.environ.get(key) != value:
                        env.setenv(key, value)
                out = run_cli("run", "vocab_small", "--storage-path", storage, "--output-dir", str(tmp_path), *TINY_SETS)
            err = out.stderr.strip()
            assert out.returncode == 2 and "Traceback" not in err, err[-2000:]
            last = err.splitlines()[-1]
            assert last.startswith("error: ") and expected in last, last
            assert not (tmp_path / "ray_results").exists()  # nothing ran, nothing was written
    finally:
        denied_server.kill()
        denied_server.wait()
