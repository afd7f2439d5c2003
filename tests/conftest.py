"""Shared test setup: real tokenizer files, a per-session token cache, tiny configs."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The GPT-2 BPE files: tiktoken's host is unreachable on CI machines, so use the shared copy
# when there is one (copied: tiktoken may write into its cache). Elsewhere tiktoken downloads.
_SHARED = ROOT.parent / "shared" / "tiktoken_cache"
if "TIKTOKEN_CACHE_DIR" not in os.environ and _SHARED.is_dir():
    _copy = Path(tempfile.mkdtemp(prefix="tiktoken-")) / "cache"
    shutil.copytree(_SHARED, _copy)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(_copy)
os.environ["SLM_TUNE_CACHE"] = tempfile.mkdtemp(prefix="slm-tune-cache-")
_WORKER_RAY = None  # the Ray temp dir conftest made for this pytest-xdist worker
if "PYTEST_XDIST_WORKER" in os.environ and "RAY_TMPDIR" not in os.environ:
    # pytest-xdist's workers (the test command runs two): each its own Ray sessions, so that one worker's
    # resume never finds the other's staged copy of a run of the same name (killed_state.staged_copies)
    os.environ["RAY_TMPDIR"] = _WORKER_RAY = tempfile.mkdtemp(prefix=f"ray-{os.environ['PYTEST_XDIST_WORKER']}-")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

from slm_tune.config import ExperimentConfig  # noqa: E402

TINY_DATASET = "storyworld:train=300,validation=30"


def tiny(**overrides) -> ExperimentConfig:
    """A model that trains in well under a second per dozen iterations."""
    base = dict(name="tiny", vocab_size=1000, n_embd=32, n_layer=1, n_head=2, block_size=32,
                batch_size=4, max_iters=20, eval_interval=10, eval_iters=2, warmup_iters=2,
                learning_rate=3e-3, dataset=TINY_DATASET, precision="float32", compile=False)
    base.update(overrides)
    return ExperimentConfig(**base)


TINY_SETS = ["--set", "n_embd=32", "--set", "n_layer=1", "--set", "n_head=2", "--set", "batch_size=4",
             "--set", "block_size=32", "--set", "eval_iters=2", "--set", "precision=float32", "--set", "compile=false",
             "--dataset", TINY_DATASET]


@pytest.fixture
def tiny_config():
    return tiny


@dataclass
class Ran:
    """What a command printed and returned, as subprocess.run's result has it."""

    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str) -> Ran:
    """`python studies.py ARGS` in this process, without a fresh interpreter's imports: the error,
    help and analysis paths, and studies (on the module's `local_ray` when a test has it up, else
    on a local Ray of their own). A driver that must be killed runs as a process (`cli`)."""
    import studies

    out, err = io.StringIO(), io.StringIO()
    argv, sys.argv = sys.argv, ["studies.py", *args]  # what a study records as its command
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = studies.main(list(args))
            except SystemExit as e:  # argparse: --help (0) and its one-line errors (2)
                code = e.code if isinstance(e.code, int) else 2
    finally:
        sys.argv = argv
    return Ran(code, out.getvalue(), err.getvalue())


# ------------------------------------------------------------------ local servers on a free port

def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return 200 <= r.status < 300
    except OSError:
        return False


PORT_TAKEN = ("address already in use", "winerror 10048")  # Linux and macOS, Windows


def _listens_on(proc: subprocess.Popen, port: int) -> bool:
    """Whether PROC or one of its children (a server's worker) listens on PORT: the server that
    answered is this one, not another process that took the port. True where psutil cannot tell."""
    import psutil

    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        return any(c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN
                   for p in tree for c in p.net_connections("tcp"))
    except (psutil.AccessDenied, psutil.NoSuchProcess):
        return True


def _stop(proc: subprocess.Popen, popen: dict) -> None:
    """The server and, when it started a session of its own, its workers."""
    if popen.get("start_new_session"):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.kill()
    proc.wait()


def serve(command, path: str, timeout: float = 120, tries: int = 3, **popen) -> tuple[subprocess.Popen, str]:
    """A local HTTP server (`command(port)`, Popen's POPEN options; its stderr kept in a file, the
    tail of which a failure shows), started on a free port and waited for until GET PATH answers
    (2xx) from it. The port is found by binding and closing a socket, so another process (the other
    worker's Ray or server) can take it before the server binds: a server that exits saying its
    address is in use is started again on another port, up to TRIES times. Any other failure, or
    an interruption, stops the server (its session too) and fails at once. Returns the process
    and its base URL."""
    for _ in range(tries):
        port = _free_port()
        argv = command(port)
        with tempfile.TemporaryFile() as log:
            proc = subprocess.Popen(argv, stderr=log, **popen)
            try:
                url, deadline = f"http://127.0.0.1:{port}", time.time() + timeout
                while proc.poll() is None and time.time() < deadline:
                    if _answers(url + path) and proc.poll() is None and _listens_on(proc, port):
                        return proc, url
                    time.sleep(0.1)
            except BaseException:
                _stop(proc, popen)
                raise
            up = proc.poll() is None
            if up:
                _stop(proc, popen)
            log.seek(0)
            said = log.read().decode(errors="replace")[-2000:]
        if up or not any(m in said.lower() for m in PORT_TAKEN):
            how = f"did not answer {path} within {timeout:g} s" if up else f"exited ({proc.returncode})"
            pytest.fail(f"{argv[:3]} {how}: {said}")
    pytest.fail(f"{argv[:3]} found its port taken {tries} times (each a new free port): {said}")


# ------------------------------------------------------------------ a study killed mid-run, built once

# Long enough to be killed mid-way through its second trial: killed at its 6th report (iteration
# 60), 100 iterations before its end (test_storage's study keeps 60); each resume trains the rest.
LONG_ITERS = 160
LONG = ["--max-iters", str(LONG_ITERS), "--set", "eval_interval=20", *TINY_SETS]


def _lines(path: Path) -> list[dict]:
    """The complete reports in a result.json that may be being written."""
    try:
        text = path.read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def _evals(lines: list[dict]) -> list[dict]:
    """The eval reports (the training-loss reports between them have kind "train")."""
    return [r for r in lines if r.get("kind", "eval") == "eval"]


STUDY_MARK = "SLM_TUNE_TEST_STUDY"


def session_ray_address() -> str:
    """The session's Ray: this process's local Ray (the one `local_ray` keeps for in-process
    studies), started as a local study starts its own when it is down (loopback only, token
    authentication); its GCS address, which the process-level tests' drivers attach to with
    --address instead of each starting a Ray of its own (3-6 s each)."""
    import ray

    from slm_tune.tune.local_ray import start_local_ray

    if not ray.is_initialized():
        start_local_ray(os.cpu_count() or 1)
    return ray.get_runtime_context().gcs_address


def attached(args: list[str], env: dict) -> tuple[list[str], dict]:
    """A driver's command line and environment to run on the session's Ray (`--address`). Its trial
    workers are the session Ray's, started before the driver: what the driver's environment adds
    to this process's (the study's mark, an S3 endpoint and its keys, ...) goes into its job's
    runtime environment, so that they run in it as a local study's trials do, and `kill_study`
    finds them by the mark. The driver reads the loopback switch when it imports Ray (without it
    Ray turns 127.0.0.1 into the machine's network address, where the session's Ray does not
    listen) and needs the session's token authentication."""
    from slm_tune.tune.local_ray import CLUSTER_SWITCH

    address = session_ray_address()
    added = {k: v for k, v in env.items() if os.environ.get(k) != v}
    env = {**env, CLUSTER_SWITCH: "0", "RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps({"runtime_env": {"env_vars": added}})}
    if os.environ.get("RAY_AUTH_MODE"):  # set by Ray when it started the session's Ray
        env["RAY_AUTH_MODE"] = os.environ["RAY_AUTH_MODE"]
    return [*args, "--address", address], env


def _staging_roots() -> set[Path]:
    """The session Ray's staging directories of drivers' runs (one per run start time)."""
    import ray

    if not ray.is_initialized():
        return set()
    session = Path(ray._private.worker._global_node.get_session_dir_path())
    return set((session / "artifacts").glob("*"))


def start_study(args: list[str], env: dict) -> subprocess.Popen:
    """A study in a process group of its own, on the session's Ray (`attached`); every process it
    starts and every trial worker of its job inherits a mark in its environment, so `kill_study`
    can wait for all of them."""
    mark = uuid.uuid4().hex
    args, env = attached(args, {**env, STUDY_MARK: mark})
    staged = _staging_roots()
    proc = subprocess.Popen([sys.executable, str(ROOT / "studies.py"), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    proc.mark, proc.staged_before = mark, staged
    return proc


def _start(out: Path, *extra: str) -> subprocess.Popen:
    return start_study(["run", "optimal_fast", "--repeats", "2", "--max-concurrent", "1", "--output-dir", str(out),
                        *LONG, *extra], dict(os.environ, PYTHONPATH=str(ROOT)))


def _wait_mid_second_trial(out: Path, proc: subprocess.Popen, reports: int = 6) -> None:
    run = out / "ray_results" / "run_optimal_fast"
    deadline = time.time() + 240
    while time.time() < deadline:
        first = _lines(run / "optimal_fast_seed1337" / "result.json")
        second = _lines(run / "optimal_fast_seed1338" / "result.json")
        if first and first[-1].get("status") == "finished" and len(second) >= reports:
            return
        if proc.poll() is not None:
            pytest.fail(f"study ended before it could be interrupted: {proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    pytest.fail("the study did not reach its second trial in time")


def _marked(mark: str) -> list:
    import psutil

    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(STUDY_MARK) == mark:
                found.append(process)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    return found


def driver_ended(proc: subprocess.Popen, timeout: float = 60) -> None:
    """After a study's driver ended (`proc` waited for): wait until every process it started is
    gone, then set aside what it staged in the session's Ray. Ray's trial workers are not in the
    driver's process group and live on for seconds, and one still saving a checkpoint would write
    a file after the test looked (CI saw a resume go on from such a checkpoint, and a crafted study
    get a clean one beside the crafted); for a driver attached to the session's Ray, Ray ends the
    dead driver's job and its workers (marked through the job's environment). Its staging (the
    run's files under the run's start time) is renamed: a local study's Ray took its session with
    it, and the resume that follows must start, as then, from an empty staging directory rather
    than from the ended driver's copy (slm_tune/tune/callbacks/loggers.py keeps a driver's own copy
    over the stored one), while what `repair_state` looks for in Ray's staging stays there."""
    deadline = time.time() + timeout
    while left := _marked(proc.mark):
        assert time.time() < deadline, f"the ended study's processes {[p.pid for p in left]} did not exit"
        time.sleep(0.1)
    for staged in _staging_roots() - proc.staged_before:
        if ".ended" not in staged.name:  # two drivers can stage under one start second: a name of its own
            target = next(t for i in itertools.count(1)
                          if not (t := staged.with_name(f"{staged.name}.ended" + (f"-{i}" if i > 1 else ""))).exists())
            staged.rename(target)


def kill_study(proc: subprocess.Popen, timeout: float = 60) -> None:
    """SIGKILL a study's driver (and its Ray, when it started its own) at once, as a crash would,
    and wait until every process it started is gone (`driver_ended`); the session's Ray, which an
    attached driver ran on, stays up."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=timeout)
    driver_ended(proc, timeout)


@pytest.fixture(scope="session")
def killed_study(tmp_path_factory) -> dict:
    """One SIGKILLed study (two tiny trials, the second killed mid-way, tracked in MLflow's default
    database; its driver on the session's Ray), built once for every test that starts from it (each
    takes its own copy, `copy_study`); while it ran, a second study on the same output directory
    was tried (`second`: what that printed)."""
    out = tmp_path_factory.mktemp("killed") / "study"
    proc = _start(out, "--mlflow")
    try:
        deadline = time.time() + 120
        while not (out / "ray_results").exists() and time.time() < deadline:
            time.sleep(0.1)
        second = run_cli("vocab", "--output-dir", str(out), *TINY_SETS)
        _wait_mid_second_trial(out, proc)
    finally:
        kill_study(proc)
    run = out / "ray_results" / "run_optimal_fast"
    first, killed = (_lines(run / f"optimal_fast_seed{seed}" / "result.json") for seed in (1337, 1338))
    # what the tests that start from it take for granted: the second trial cut mid-way (the kill comes
    # after the first finished), not finished before the kill landed
    assert _evals(killed) and killed[-1].get("status") != "finished", killed[-1:]
    return {"dir": out, "second": second, "first_pid": first[0]["pid"], "killed_at": _evals(killed)[-1]["iteration"]}


def copy_study(killed: dict, to: Path) -> Path:
    """A test's own copy of a stored study (a study moved to another folder resumes from there),
    to be resumed as in a Ray session of its own. The tests share one session (`local_ray`), and
    Ray stages a restored trial's files under the run's first start time, so every copy's resume
    would share one staging directory and a later copy would take an earlier one's reports (CI
    saw a crafted copy continue another copy's result.json): that staging is cleared here."""
    from slm_tune.tune.killed_state import ray_temp_roots

    shutil.copytree(killed["dir"], to, ignore=shutil.ignore_patterns(".slm-tune.lock"))
    run = next((to / "ray_results").iterdir()).name
    for root in ray_temp_roots():
        for staged in root.glob(f"session_*/artifacts/*/{run}/driver_artifacts"):
            shutil.rmtree(staged, ignore_errors=True)
    return to


@pytest.fixture(scope="session", autouse=True)
def _ray_at_the_end():
    """The session's Ray (`session_ray_address`), whoever started it, ends with the session."""
    yield
    import ray

    ray.shutdown()
    if _WORKER_RAY:  # this worker's Ray sessions (their logs)
        shutil.rmtree(_WORKER_RAY, ignore_errors=True)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray up for a module's in-process studies, started as a study starts its own and kept
    for the session (`session_ray_address`; the process-level tests' drivers attach to the same
    one): run_study uses a Ray that is up (and starts its own when none is), so each study saves
    its Ray's start and stop. A test that needs a Ray of its own shuts this one down."""
    session_ray_address()


@pytest.fixture(autouse=True)
def one_thread():
    """Every test's in-process torch on one thread: the suite's models are tiny, and a second thread
    only spins for them, badly so on a busy machine (two workers on two cores are one): a 2 x 96
    forward of a tiny model took 136 ms on two threads beside two busy cores and 2.2 ms on one.
    Studies' trials and the CLI's processes set their own."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
