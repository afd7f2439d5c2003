"""Watching a study: training-loss reports between evals, progress and ETAs, TensorBoard, MLflow."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slm_tune.tune.callbacks.progress import StudyProgress, duration, trial_line
from slm_tune.tune.run import StudyRun, run_study
from test_study import ENV
from conftest import LONG, ROOT, TINY_SETS, _lines, copy_study, run_cli, serve, tiny

RUN = ["run", "optimal_fast", "--max-iters", "60", "--set", "eval_interval=20", *TINY_SETS]


def _reports(trial_dir: Path) -> list[dict]:
    return _lines(trial_dir / "result.json")


# ----------------------------------------------------------------------------- reports and progress

def test_training_loss_reports_between_evals_and_evals_alone_decide(tmp_path, local_ray):
    from analysis.load import load_run

    configs = {"t": tiny(name="t", max_iters=50, eval_interval=20, log_interval=5)}
    run_study(StudyRun("logs", configs, output_dir=tmp_path, tensorboard=False))
    assert not list(tmp_path.rglob("events.out.tfevents*"))  # TensorBoard off (--no-tensorboard): no files
    reports = _reports(tmp_path / "ray_results" / "logs" / "t")
    assert [(r["iteration"], r["kind"]) for r in reports] == [
        (5, "train"), (10, "train"), (15, "train"), (20, "eval"), (25, "train"), (30, "train"), (35, "train"),
        (40, "eval"), (45, "train"), (50, "eval")]
    assert all("eval_iteration" in r for r in reports if r["kind"] == "eval")  # what schedulers count in
    assert not any("eval_iteration" in r for r in reports if r["kind"] == "train")
    trials, history = load_run(tmp_path / "ray_results" / "logs")
    assert list(history["kind"]) == [r["kind"] for r in reports]
    assert history[history["kind"] == "train"]["val_loss"].isna().all()  # the carried eval values are not theirs
    assert trials["final_val_loss"].iloc[0] == reports[-1]["val_loss"]


def test_progress_lines_show_totals_and_etas():
    result = {"iteration": 100, "tokens_seen": 100 * 4096, "tokens_per_s": 4096.0, "train_loss": 2.5,
              "val_loss": 2.6, "val_bpb": 1.1, "flops_per_token": 1e6, "max_iters": 400, "experiment": "a"}
    line = trial_line("a", "RUNNING", result, 400)
    assert "100/400" in line and "ETA 5m00s" in line  # 300 iterations at 1 s each
    assert "running 1m05s, no report yet" in trial_line("b", "STARTED", {}, 400, running_s=65)
    p = StudyProgress(emit=lambda _: None)
    p._plan = {"n_trials": 3, "flops": {"a": 400 * 4096 * 1e6, "b": 400 * 4096 * 1e6, "c": 200 * 4096 * 1e6},
               "repeats": 1}
    p._latest = {"a": ("RUNNING", result)}
    # a's 300 iterations left, then b and c (600 iterations) at a's FLOP rate: 900 s
    assert p.study_eta() == pytest.approx(900)
    assert duration(3725) == "1h02m" and duration(None) == "?"
    assert "0/3 trial(s) done, 1 running; study ETA 15m00s" in p.header(time.time())
    # a search with a FLOPs budget (search --budget, build's stages): what is spent of it, and an
    # ETA that ends with the budget: a has trained 100 iterations (4.1e11 FLOPs) of a 8.2e11
    # budget, so the rest (4.1e11) at a's 4.1e9 FLOPs a second is 100 s, sooner than its 63
    # unsampled trials would take
    p._plan = {"n_trials": 64, "flops": {}, "repeats": 1, "flops_budget": 2 * 100 * 4096 * 1e6}
    p._latest = {"a": ("RUNNING", {**result, "train_flops": 100 * 4096 * 1e6})}
    assert p.study_eta() == pytest.approx(100)
    assert "0/64 trial(s) done, 1 running; 50% of its 8.19e+11 FLOPs budget spent; study ETA 1m40s" in p.header(time.time())


class _Trial:  # what the progress callback reads of a Ray Trial
    def __init__(self, name, status, last_result=None):
        self.name, self.status, self.last_result = name, status, last_result or {}

    def __str__(self):
        return self.name


def test_progress_counts_what_a_resume_restored_and_what_the_study_stopped():
    """A resumed study's trials as Ray restores them: one that had finished (done, its FLOPs
    spent), one to run again (its FLOPs spent, not done, not running), one with no report (not
    shown); a trial this process started that Ray ended with no completion call (a stopper's
    stop_all, an interruption): not running, not done either."""
    flops = 4096 * 1e6
    p = StudyProgress(emit=lambda _: None)
    p._plan = {"n_trials": 4, "flops": {}, "repeats": 1, "flops_budget": 400 * flops}
    p._latest = {"d": ("STARTED", {})}
    done = {"iteration": 100, "status": "finished", "train_flops": 100 * flops}
    again = {"iteration": 50, "status": "running", "train_flops": 50 * flops, "tokens_seen": 50 * 4096,
             "tokens_per_s": 4096.0, "flops_per_token": 1e6, "max_iters": 100}
    p._adopt([_Trial("a", "TERMINATED", done), _Trial("b", "PENDING", again), _Trial("c", "PENDING"),
              _Trial("d", "TERMINATED")])
    assert {k: v[0] for k, v in p._latest.items()} == {"a": "FINISHED", "b": "PENDING", "d": "ENDED"}
    assert "1/4 trial(s) done, 0 running, 1 stopped with the study; 38% of its 1.64e+12" in p.header(time.time())
    p._latest["b"] = ("STARTED", again)  # restored and started again: its old report, none since
    p._started_at["b"] = time.time() - 5
    assert "iter    50/100" in p._line("b") and "restored, no report since" in p._line("b")
    p._latest["e"] = ("RUNNING", {**again, "train_flops": 10 * flops, "iteration": 10, "tokens_seen": 10 * 4096})
    # e's 90 iterations and b's 50 left at e's rate (4.1e9 FLOPs a second): 140 s, within the budget's 240 s
    assert p.study_eta() == pytest.approx(140)


def test_progress_reads_the_study_plan_where_ray_stores_the_run(tmp_path):
    from types import SimpleNamespace

    from ray.train._internal.storage import StorageContext

    from slm_tune.config import EXPERIMENT_CONFIGS
    from slm_tune.files import STUDY_FILE, write_json

    write_json(tmp_path / "run_a" / STUDY_FILE, {"n_trials": 4, "repeats": 2,
                                                  "configs": {"a": EXPERIMENT_CONFIGS["optimal_fast"].to_dict()}})
    ctx = StorageContext(str(tmp_path), "run_a", trial_dir_name="a_seed1337")
    p = StudyProgress(emit=lambda _: None)
    p._load_plan(SimpleNamespace(path=ctx.trial_fs_path, storage=ctx))
    assert p._plan["n_trials"] == 4 and p._plan["repeats"] == 2 and p._plan["flops"]["a"] > 0
    q = StudyProgress(emit=lambda _: None)
    q._load_plan(SimpleNamespace(path=None, storage=None))  # a trial not placed yet: no plan, no error
    assert q._plan == {}


# ----------------------------------------------------------------------------- TensorBoard

def test_tensorboard_files_hold_every_trials_curves_and_hparams(tracked_study):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tracked_study["out"] / "ray_results" / "run_optimal_fast"
    for trial in ("optimal_fast_seed1337", "optimal_fast_seed1338"):
        ea = EventAccumulator(str(run / trial))
        ea.Reload()
        tags = set(ea.Tags()["scalars"])
        assert {"loss/train", "loss/val", "val_bpb", "lr", "tokens_per_s"} <= tags
        reports = _reports(run / trial)
        assert [s.step for s in ea.Scalars("loss/train")] == [r["iteration"] for r in reports]
        assert [s.value for s in ea.Scalars("loss/val")] == pytest.approx(
            [r["val_loss"] for r in reports if r["kind"] == "eval"])
        hp = EventAccumulator(str(run / trial / "hparams"))
        hp.Reload()
        assert "hparams" in hp.PluginTagToContent("hparams") or hp.PluginTagToContent("hparams")
        final = {t: hp.Scalars(t)[-1].value for t in hp.Tags()["scalars"]}
        assert final["final/best_val_bpb"] == pytest.approx(min(r["val_bpb"] for r in reports if r["kind"] == "eval"))
    from studies import build_parser

    parsed = build_parser().parse_args([*RUN, "--no-tensorboard"])
    assert parsed.tensorboard is False  # the flag behind StudyRun(tensorboard=False): no files (above)


# ----------------------------------------------------------------------------- MLflow

def _mlflow_matches_results(uri: str, run_dir: Path, experiments_dir: Path) -> None:
    """Every trial has one MLflow run: its settings as params, every report as metrics."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(run_dir.name)
    runs = client.search_runs([experiment.experiment_id])
    trials = sorted(p.name for p in run_dir.iterdir() if (p / "result.json").is_file())
    assert sorted(r.info.run_name for r in runs) == trials
    for r in runs:
        reports = _reports(run_dir / r.info.run_name)
        record = json.loads((experiments_dir / f"{reports[-1]['experiment']}_results.json").read_text())
        assert r.info.status == "FINISHED"
        assert r.data.params["learning_rate"] == str(record["config"]["learning_rate"])
        assert r.data.params["seed"] == str(reports[-1]["seed"])
        train = client.get_metric_history(r.info.run_id, "train_loss")
        assert [m.step for m in train] == sorted({x["iteration"] for x in reports})  # no repeated steps
        by_step = {x["iteration"]: x for x in reports}
        assert all(m.value == pytest.approx(by_step[m.step]["train_loss"]) for m in train)
        val = client.get_metric_history(r.info.run_id, "val_bpb")
        assert [m.step for m in val] == sorted({x["iteration"] for x in reports if x["kind"] == "eval"})
        artifacts = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert {f"{reports[-1]['experiment']}_results.json",
                f"{reports[-1]['experiment']}_training_losses.png"} <= artifacts


def test_mlflow_sqlite_store_and_a_resumed_study_continues_the_same_runs(tmp_path, killed_study, local_ray):
    original = killed_study["dir"] / "mlflow.db"
    before = original.read_bytes()
    out = copy_study(killed_study, tmp_path / "study")  # a study moved to another folder, then resumed
    resumed = run_cli("run", "optimal_fast", "--repeats", "2", "--max-concurrent", "1", "--output-dir", str(out),
                      *LONG, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (out / "mlflow.db").is_file() and not (ROOT / "mlruns").exists()
    assert original.read_bytes() == before  # the default database went with the study
    _mlflow_matches_results(f"sqlite:///{(out / 'mlflow.db').as_posix()}",
                            out / "ray_results" / "run_optimal_fast", out / "experiments")


@pytest.fixture(scope="module")
def tracked_study(tmp_path_factory, local_ray):
    """One study watched every way at once: TensorBoard files (the default) and a real MLflow
    tracking server; the tests below each check one of them."""
    tmp_path = tmp_path_factory.mktemp("tracked")
    server, uri = serve(lambda port: [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", f"sqlite:///{(tmp_path / 'server.db').as_posix()}",
        "--artifacts-destination", (tmp_path / "server-artifacts").as_uri(), "--workers", "1"], "/health",
        stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, start_new_session=True, env=ENV)
    try:
        out = run_cli(*RUN, "--output-dir", str(tmp_path / "out"), "--repeats", "2", "--mlflow", uri)
        assert out.returncode == 0, out.stderr[-3000:]
        yield {"out": tmp_path / "out", "uri": uri}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:  # its workers may take 15 s over a graceful stop; nothing of the server is read afterwards
            server.wait(timeout=3)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):  # and whatever of its group is left
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)


def test_mlflow_tracking_server(tracked_study):
    out = tracked_study["out"]
    _mlflow_matches_results(tracked_study["uri"], out / "ray_results" / "run_optimal_fast", out / "experiments")
    assert not (out / "mlflow.db").exists()


def test_mlflow_missing_is_a_one_line_error(tmp_path):
    code = ("import sys; sys.modules['mlflow'] = None; sys.argv = ['studies.py'] + sys.argv[1:]; "
            "import studies; sys.exit(studies.main())")
    out = subprocess.run([sys.executable, "-c", code, *RUN, "--output-dir", str(tmp_path), "--mlflow"],
                         capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120)
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "error: --mlflow needs MLflow, an optional extra: pip install -e .[mlflow] (or pip install mlflow)"]
    assert not (tmp_path / "ray_results").exists()
