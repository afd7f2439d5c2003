"""Studies on real Ray with tiny configs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from analysis.load import load_run
from search_spaces import STUDIES
from slm_tune.tune.run import grid_space as param_space
from slm_tune.config import EXPERIMENT_CONFIGS
from slm_tune.tune.run import StudyRun, run_study
from conftest import ROOT, TINY_SETS, _lines, tiny, run_cli

ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def cli(*args, cwd=None, timeout=600, **kw):
    return subprocess.run([sys.executable, str(ROOT / "studies.py"), *args], capture_output=True, text=True,
                          env=ENV, timeout=timeout, stdin=subprocess.DEVNULL, cwd=cwd, **kw)


def _reports(trial_dir: Path):
    """The eval reports in a trial's result.json (not the training-loss reports between them)."""
    lines = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
    return [r for r in lines if r.get("kind", "eval") == "eval"]


def test_every_study_names_known_experiments_with_baseline_as_reference():
    for study in STUDIES.values():
        if study.family is not None:  # its own experiments
            assert set(study.experiments) == set(study.configs())
            continue
        assert set(study.experiments) <= set(EXPERIMENT_CONFIGS), study.name
        if study.name not in ("quick", "all"):
            assert study.experiments[0] == "baseline"
    assert set(STUDIES["all"].experiments) == set(EXPERIMENT_CONFIGS)
    space = param_space(["a", "b"], repeats=3, base_seed=10)
    assert space["experiment"] == {"grid_search": ["a", "b"]} and space["seed"] == {"grid_search": [10, 11, 12]}


def test_grid_runs_one_trial_per_experiment_concurrently(tmp_path, local_ray):
    configs = {n: tiny(name=n, max_iters=150, eval_interval=50, learning_rate=lr)
               for n, lr in (("fast_lr", 3e-3), ("slow_lr", 1e-4))}
    results = run_study(StudyRun("pair", configs, output_dir=tmp_path, max_concurrent=2))
    assert sorted(Path(r.path).name for r in results) == ["fast_lr", "slow_lr"]
    assert all(r.error is None for r in results)
    spans = []
    for r in results:
        reports = _reports(Path(r.path))
        assert [x["iteration"] for x in reports] == [50, 100, 150]
        assert all(x["val_loss"] > 0 for x in reports)
        assert r.checkpoint is not None
        spans.append((reports[-1]["timestamp"] - reports[-1]["time_total_s"], reports[-1]["timestamp"]))
    (a0, a1), (b0, b1) = spans
    assert a0 < b1 and b0 < a1, "the two trials did not overlap in time"
    trials, history = load_run(tmp_path / "ray_results" / "pair")
    assert set(trials["status"]) == {"finished"} and len(history[history["kind"] == "eval"]) == 6
    assert len(history[history["kind"] == "train"]) == 2 * 12  # every 10 iterations between evals


LIGHT_DRIVER = """
import json, sys
from pathlib import Path
from ray import tune
from slm_tune.config import ExperimentConfig
from slm_tune.tune.run import StudyRun, run_study

seen = []

class AtStart(tune.Callback):
    def on_trial_start(self, iteration, trials, trial, **info):
        seen.append(sorted(m for m in ("torch", "datasets", "tensorboardX") if m in sys.modules))

configs = {n: ExperimentConfig(**d) for n, d in json.loads(sys.argv[2]).items()}
results = run_study(StudyRun("light", configs, output_dir=Path(sys.argv[1]), max_concurrent=1, callbacks=[AtStart()]))
print(seen, sorted({r.metrics["pid"] for r in results}), sep="\\n")
"""


def test_trials_share_a_worker_and_the_driver_stays_light(tmp_path):
    """What keeps a study's overhead down (issue 6): trials run one after another in one reused
    worker process; the driver starts them without importing torch or datasets (nor Ray's
    TensorBoard logger, which imports torch: the trials write TensorBoard files themselves); the
    analysis loggers still write."""
    from slm_tune.data.cache import prepare_tokens

    configs = {n: tiny(name=n, max_iters=4, eval_interval=2, n_embd=e).to_dict() for n, e in (("a", 32), ("b", 48))}
    c = tiny()
    prepare_tokens(c.dataset, c.vocab_size, c.data_fraction)  # tokenized already, as for a second study
    proc = subprocess.run([sys.executable, "-c", LIGHT_DRIVER, str(tmp_path), json.dumps(configs)],
                          capture_output=True, text=True, env=ENV, timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen, pids = proc.stdout.strip().splitlines()[-2:]
    assert seen == "[[], []]", seen
    assert len(json.loads(pids)) == 1, pids
    run = tmp_path / "ray_results" / "light"
    # TensorBoard files, written by the trials: the driver never imported tensorboardX (above)
    assert {p.parent.name for p in run.glob("*/events.out.tfevents*")} == {"a", "b"}
    assert all((run / n / "result.json").is_file() and (run / n / "progress.csv").is_file() for n in ("a", "b"))


def test_asha_stops_a_hopeless_trial_early(tmp_path, local_ray):
    configs = {"good": tiny(name="good", max_iters=80, eval_interval=10, learning_rate=3e-3),
               "hopeless": tiny(name="hopeless", max_iters=80, eval_interval=10, learning_rate=1e-7)}
    # One at a time, good first: ASHA has good's rung results when hopeless reaches its rung.
    results = run_study(StudyRun("asha", configs, output_dir=tmp_path, max_concurrent=1, scheduler="asha"))
    last = {Path(r.path).name: r.metrics["iteration"] for r in results}
    assert last["good"] == 80 and last["hopeless"] < 80
    trials, _ = load_run(tmp_path / "ray_results" / "asha")
    status = dict(zip(trials["experiment"], trials["status"]))
    assert status == {"good": "finished", "hopeless": "stopped early"}


def test_run_command_repeats_and_layout(tmp_path, local_ray):
    out = run_cli("run", "vocab_small", "--output-dir", str(tmp_path), "--max-iters", "20", "--repeats", "2",
                  *TINY_SETS)
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = tmp_path / "ray_results" / "run_vocab_small"
    assert sorted(p.name for p in run_dir.iterdir() if p.is_dir()) == ["vocab_small_seed1337", "vocab_small_seed1338"]
    seeds = {_reports(run_dir / d)[-1]["seed"] for d in ("vocab_small_seed1337", "vocab_small_seed1338")}
    assert seeds == {1337, 1338}
    assert (tmp_path / "experiments" / "vocab_small_results.json").is_file()
    assert "vocab_small" in out.stdout and "Traceback" not in out.stderr
    assert "iter" in out.stderr  # progress lines
    # --resume --repeats 3 on the study that ended with two seeds: the third trains in a new run
    # beside it, the two are not trained again, and the layout and compare read all three
    lines = {d: len(_lines(run_dir / d / "result.json")) for d in ("vocab_small_seed1337", "vocab_small_seed1338")}
    more = run_cli("run", "vocab_small", "--output-dir", str(tmp_path), "--resume", "--repeats", "3")
    assert more.returncode == 0, more.stderr[-3000:]
    assert "adding seed(s) 1339 to study 'run_vocab_small' (2 stored): a new run run_vocab_small-2" in more.stderr
    added = tmp_path / "ray_results" / "run_vocab_small-2"
    assert sorted(p.name for p in added.iterdir() if p.is_dir()) == ["vocab_small_seed1339"]
    assert _reports(added / "vocab_small_seed1339")[-1]["seed"] == 1339
    assert lines == {d: len(_lines(run_dir / d / "result.json")) for d in lines}
    results = json.loads((tmp_path / "experiments" / "vocab_small_results.json").read_text())
    assert results["runs"] == 3, results["runs"]
    compared = run_cli("compare", "--output-dir", str(tmp_path))
    assert compared.returncode == 0, compared.stderr[-2000:]
    table = pd.read_csv(tmp_path / "experiments" / "experiment_comparison.csv")
    assert table.set_index("experiment").loc["vocab_small", "runs"] == 3
    fewer = run_cli("run", "vocab_small", "--output-dir", str(tmp_path), "--resume", "--repeats", "2")
    assert fewer.returncode == 2 and "has 3 seeds already" in fewer.stderr, fewer.stderr[-2000:]
    again = run_cli("run", "vocab_small", "--output-dir", str(tmp_path), "--resume", "--repeats", "3")
    plain = run_cli("run", "vocab_small", "--output-dir", str(tmp_path), "--resume")
    for resumed in (again, plain):  # a resume keeps the seeds the run started with, and what it adds to
        assert resumed.returncode == 0 and "adding seed" not in resumed.stderr, resumed.stderr[-2000:]
    assert not (tmp_path / "ray_results" / "run_vocab_small-3").exists()
    doc = json.loads((added / "study.json").read_text())
    assert (doc["repeats"], doc["first_seed"], doc["adds_to"]) == (1, 2, "run_vocab_small")
    assert json.loads((tmp_path / "experiments" / "vocab_small_results.json").read_text())["runs"] == 3


def test_two_node_cluster_runs_one_trial_per_node(tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()  # the module's local Ray, if up: this study connects to a cluster of its own

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        configs = {n: tiny(name=n, max_iters=100, eval_interval=25) for n in ("left", "right")}
        results = run_study(StudyRun("cluster", configs, output_dir=tmp_path, address=cluster.address))
        nodes = set()
        for r in results:
            assert r.error is None and r.checkpoint is not None
            reports = _reports(Path(r.path))
            assert [x["iteration"] for x in reports] == [25, 50, 75, 100]
            nodes.add(reports[-1]["node_id"])
        assert len(nodes) == 2
    finally:
        import ray
        ray.shutdown()
        cluster.shutdown()


def test_help_of_every_command():
    from search_spaces import STUDIES
    for command in ["", "list", "details", "run", "search", "compare", "fit", "sample", "interactive", *STUDIES]:
        out = run_cli(*([command] if command else []), "--help")
        assert out.returncode == 0 and "usage:" in out.stdout, (command, out.stderr[-500:])


def test_interactive_menu_through_stdin(tmp_path):
    script = "1\n2\nvocab_smal\nvocab_small\n7\n\nq\n"
    out = subprocess.run([sys.executable, str(ROOT / "studies.py"), "interactive", "--output-dir", str(tmp_path)],
                         input=script, capture_output=True, text=True, env=ENV, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "baseline" in out.stdout and "FLOPs per token" in out.stdout
    assert "'vocab_smal' is not one of" in out.stdout and "'7' is not a choice" in out.stdout
    assert out.stdout.rstrip().endswith("bye")
    eof = subprocess.run([sys.executable, str(ROOT / "studies.py"), "interactive"], input="2\n",
                         capture_output=True, text=True, env=ENV, timeout=120)
    assert eof.returncode == 0 and "bye" in eof.stdout and "Traceback" not in eof.stderr


def test_default_cpu_split_follows_the_measured_model():
    from slm_tune.tune.resources import default_cpus_per_trial as split, speedup, threads_that_pay

    # 2 CPUs (this machine): side by side when the rounds come out even, 2 threads when a lone
    # trial would otherwise run a last round on one thread (the quick study's 3 trials).
    assert [split(n, 2, None) for n in (1, 2, 3, 4, 14)] == [2, 1, 2, 1, 1]
    assert split(14, 2, 1) == 2  # one at a time: it gets both CPUs
    assert split(3, 2, 2) == 1  # `quick --max-concurrent 2` keeps its two trials at once
    assert split(2, 8, None) == 4 and split(14, 8, 2) == 4 and split(16, 8, None) == 1
    # 8 CPUs: 3 trials run at once on 2 threads each (3 threads would leave one for a second round)
    assert [split(n, 8, None) for n in (1, 3, 8, 14)] == [8, 2, 1, 1]
    # 16 CPUs: 14 trials run at once on one thread each; 3 trials get 5 threads each; 40 trials
    # run 8 at a time on 2 threads (5 rounds at 1.77x beat 3 rounds on one thread)
    assert [split(n, 16, None) for n in (1, 3, 14, 16, 40)] == [8, 5, 1, 1, 2]
    # 64 CPUs: a lone trial gets 8 threads (16 would be 1% faster, 64 no faster); 14 trials get 4
    assert [split(n, 64, None) for n in (1, 3, 14, 64)] == [8, 8, 4, 1]
    assert speedup(2) == 1.77 and speedup(16) == speedup(64) and threads_that_pay(16) == 8


def test_console_command_is_the_cli():
    """`pip install -e .` (bootstrap's setup) gives `slm-tune`, the same as `python studies.py`."""
    script = Path(sys.executable).parent / ("slm-tune.exe" if os.name == "nt" else "slm-tune")
    assert script.is_file(), "reinstall: pip install -e ."
    out = subprocess.run([str(script), "list"], capture_output=True, text=True, timeout=120, env=ENV)
    assert out.returncode == 0 and "baseline" in out.stdout and "searches" in out.stdout
    bad = subprocess.run([str(script), "nope"], capture_output=True, text=True, timeout=120, env=ENV)
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown command or study 'nope'")


def test_more_threads_than_pay_still_run_with_one_line():
    from slm_tune.tune.run import _resolve_resources

    lines = []
    run = StudyRun("s", {"t": tiny(name="t")}, cpus_per_trial=16, log=lines.append)
    assert _resolve_resources(run, 32) == (16, 2)
    assert len(lines) == 1 and lines[0].startswith("note: 16 threads per trial is past what pays") \
        and "on 8" in lines[0]
    lines.clear()
    assert _resolve_resources(StudyRun("s", {"t": tiny(name="t")}, cpus_per_trial=4, log=lines.append), 32) == (4, 8)
    assert lines == []
