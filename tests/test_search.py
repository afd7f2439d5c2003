"""Searches: spaces as data, Optuna/random with ASHA/PBT on real Ray, the search's files, resume."""

import json
import logging
import pickle
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from search_spaces import get_search, search_files
from slm_tune.config import EXPERIMENT_CONFIGS, ExperimentConfig
from slm_tune.model.counts import training_flops
from slm_tune.errors import UserError
from slm_tune.space import check_metric, parse_space
from slm_tune.train import lr_at
from test_reliability import _lines, _snapshot
from test_study import ENV, cli
from conftest import TINY_DATASET, kill_study, run_cli, start_study

TINY_SPACE = """
base = "optimal_fast"
learning_rate = { loguniform = [1e-4, 1e-2] }
n_layer = { choice = [1, 2] }
warmup_iters = { randint = [0, 5] }
batch_size = 4
"""
# conftest's tiny model, with the vocabulary fixed and the depth and batch left to the spaces
TINY = ["--set", "n_embd=32", "--set", "n_head=2", "--set", "block_size=32", "--set", "eval_iters=2",
        "--set", "precision=float32", "--set", "compile=false", "--set", "vocab_size=1000", "--dataset", TINY_DATASET]


def _space(tmp_path: Path, text: str = TINY_SPACE, name: str = "tiny.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- spaces as data

BAD_ENTRIES = [
    ({"nope": 3, "learning_rate": {"loguniform": [1e-5, 1e-3]}}, "unknown setting 'nope'"),
    ({"learning_rate": {"lognormal": [1, 2]}}, "unknown distribution 'lognormal'"),
    ({"learning_rate": {"loguniform": [1e-3, 1e-5]}}, "empty or inverted range"),
    ({"learning_rate": {"uniform": [1e-3, 1e-3]}}, "empty or inverted range"),
    ({"learning_rate": {"loguniform": [0, 1e-5]}}, "positive low bound"),
    ({"n_layer": {"randint": [4, 4]}}, "empty or inverted range"),
    ({"n_layer": {"qrandint": [2, 8, 4]}}, "multiples of q=4"),
    ({"n_layer": {"uniform": [1, 4]}}, "search it with randint"),
    ({"n_layer": {"choice": []}}, "choice has no values"),
    ({"n_layer": {"choice": [0, 2]}}, "can give n_layer=0"),
    ({"dropout": {"uniform": [0.0, 1.0]}}, "can give dropout=1.0"),
    ({"n_embd": {"choice": [96, 100]}, "n_head": {"choice": [2, 8]}}, "n_embd=100 with n_head=8"),
    ({"n_embd": {"choice": [96]}, "head_size": {"choice": [16]}}, "head_size or n_embd, not both"),
    ({"learning_rate": -0.1, "n_layer": {"choice": [1, 2]}}, "learning_rate=-0.1"),
    ({"learning_rate": 1e-3}, "nothing is searched"),
    ({"base": "nah", "n_layer": {"choice": [1, 2]}}, "base 'nah' is not an experiment"),
    ({"name": {"choice": ["a"]}}, "cannot be searched"),
    ({"precision": {"uniform": [0, 1]}}, "search it with choice or grid"),
    ({"compile": {"choice": ["maybe"]}}, "compile='maybe'"),
    ({"n_layer": {"choice": [1, 2]}, "flops_budget": -1}, "flops_budget"),
    ({"n_layer": {"randint": [1, 2], "choice": [1]}}, "exactly one distribution"),
]


@pytest.mark.parametrize("doc,message", BAD_ENTRIES, ids=[m for _, m in BAD_ENTRIES])
def test_space_with_a_bad_entry_is_one_line_error(doc, message):
    with pytest.raises(UserError) as e:
        parse_space(doc, "t", EXPERIMENT_CONFIGS)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_bad_space_file_through_the_cli_exits_2_and_touches_nothing(tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    before = _snapshot(out_dir)
    for text, message in [
        ("base = 'optimal_fast'\nlearning_rate = { loguniform = [1e-2, 1e-4] }\n", "empty or inverted range"),
        ("base = 'optimal_fast'\nlearning_rate = [1, 2\n", "invalid TOML"),
        ("base = 'optimal_fast'\nn_layr = { choice = [1, 2] }\n", "did you mean: n_layer"),
    ]:
        out = run_cli("search", "--space", str(_space(tmp_path, text, "bad.toml")), "--output-dir", str(out_dir))
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1 and message in lines[0], out.stderr
    for args, message in [
        (["search", "shape", "--metric", "val_loss"], "searches vocab_size"),
        (["search", "lr", "--scheduler", "pbt", "--search-alg", "optuna"], "--search-alg random"),
        (["search", "shape", "--scheduler", "pbt"], "pbt perturbs"),
        (["search", "lr", "--repeats", "2"], "--repeats"),
        (["search", "lr", "--time-budget", "soon"], "not a duration"),
        (["search", "nope"], "unknown search 'nope'"),
        (["search"], "named search"),
    ]:
        out = run_cli(*args, "--output-dir", str(out_dir))
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1 and message in lines[-1], (args, out.stderr)
    assert _snapshot(out_dir) == before


def test_named_searches_make_valid_experiments_and_compute_spends_one_budget():
    assert {"lr", "shape", "compute"} <= set(search_files())
    lr = get_search("lr")
    assert {"learning_rate", "warmup_iters", "weight_decay", "min_lr_ratio"} <= set(lr.searched)
    assert {"learning_rate", "weight_decay"} <= set(lr.mutable)
    shape = get_search("shape")
    assert {"n_layer", "n_head", "head_size", "vocab_size"} <= set(shape.searched)
    # every point of the shape space is a model whose width divides into its heads
    for heads in shape.dists["n_head"].candidates():
        for size in shape.dists["head_size"].candidates():
            c = shape.config_for({"n_head": heads, "head_size": size, "n_layer": 3, "vocab_size": 2000}, "p")
            assert c.n_embd == heads * size and c.n_embd % c.n_head == 0
    compute = get_search("compute")
    budget = training_flops(EXPERIMENT_CONFIGS[compute.base.name])
    assert compute.flops_budget == budget
    small = compute.config_for({"n_layer": 2, "n_head": 4, "head_size": 32, "vocab_size": 5000}, "s")
    big = compute.config_for({"n_layer": 8, "n_head": 8, "head_size": 64, "vocab_size": 25000}, "b")
    assert small.max_iters > 10 * big.max_iters
    for c in (small, big):
        assert abs(training_flops(c) - budget) / budget < 0.01  # the same compute, to one iteration
        assert round(c.max_iters / c.eval_interval) == 12  # reports at the same fractions of it
    # --max-iters on a compute search scales the budget with the base
    assert get_search("compute", overrides={"max_iters": 40}).flops_budget == budget * 40 / 1200


def test_command_line_settings_fix_or_leave_searched_ones():
    space = get_search("lr", overrides={"learning_rate": 1e-3, "max_iters": 50}, defaults={"warmup_iters": 5})
    assert "learning_rate" not in space.searched and space.pinned == ("learning_rate",)
    assert space.base.learning_rate == 1e-3 and space.base.max_iters == 50
    assert "warmup_iters" in space.searched  # a derived default never stops a setting being searched
    assert check_metric("val_loss", space) == "val_loss"  # the vocabulary is fixed here
    with pytest.raises(UserError, match="bits per byte"):
        check_metric("val_loss", get_search("shape"))


# ----------------------------------------------------------------------------- searches on Ray

def test_optuna_asha_search_end_to_end_and_its_best_trial_runs(tmp_path, local_ray):
    space = _space(tmp_path)
    out = cli("search", "--space", str(space), "--num-samples", "4", "--search-alg", "optuna", "--scheduler", "asha", "--seed", "7",
              "--output-dir", str(tmp_path), "--max-iters", "40", "--set", "eval_interval=10", *TINY)
    assert out.returncode == 0, out.stderr[-3000:]
    # No traceback of ours. Ray itself, once in several runs here, logs a failed background copy of
    # its experiment state ("Saving experiment state to storage ... failed") with a traceback and
    # saves it at its next snapshot: not ours to hide, so that block alone is allowed.
    ours = out.stderr.split("Saving experiment state to storage")[0] if "Saving experiment state" in out.stderr \
        else out.stderr
    assert "Traceback" not in ours and "A new study created" not in out.stderr
    names = [f"tiny_{i:04d}" for i in range(1, 5)]
    exp = tmp_path / "experiments"
    run = tmp_path / "ray_results" / "tiny"
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == names
    for n in names:
        record = json.loads((exp / f"{n}_results.json").read_text())
        assert record["experiment"] == n and set(record["searched"]) == {"learning_rate", "n_layer", "warmup_iters"}
        assert record["config"]["learning_rate"] == record["searched"]["learning_rate"]
        assert record["config"]["batch_size"] == 4  # fixed by the space
        assert (exp / f"{n}_training_losses.png").is_file() and (tmp_path / f"best_model_{n}.pt").is_file()
    csv = pd.read_csv(exp / "experiment_comparison.csv")
    assert {"learning_rate", "n_layer", "warmup_iters"} <= set(csv.columns)
    assert list(csv["best_val_bpb"]) == sorted(csv["best_val_bpb"])  # ranked by the metric
    assert set(pd.read_parquet(exp / "trials.parquet")["experiment"]) == set(names)
    assert set(pd.read_parquet(exp / "history.parquet")["experiment"]) == set(names)
    assert (exp / "search_tiny.png").stat().st_size > 20_000
    importance = pd.read_csv(exp / "search_tiny_importance.csv")
    assert set(importance["setting"]) == {"learning_rate", "n_layer", "warmup_iters"}
    assert importance["importance"].notna().all() and abs(importance["importance"].sum() - 1) < 1e-6
    # the searcher's own record: Optuna's TPE saw every trial, with the values the trials ran
    state = pickle.loads(sorted(run.glob("searcher-state-*.pkl"))[-1].read_bytes())
    seen = {round(t.params["learning_rate"], 12) for t in state["_ot_study"].trials if t.state.name == "COMPLETE"}
    assert seen == {round(v, 12) for v in csv["learning_rate"]}
    # the best trial, handed back as an experiment, runs as is
    best = exp / "search_tiny_best.toml"
    entry = tomllib.loads(best.read_text())["search_tiny_best"]
    assert entry["learning_rate"] == csv["learning_rate"].iloc[0] and entry["batch_size"] == 4
    again = run_cli("run", "search_tiny_best", "--experiments-file", str(best), "--output-dir", str(tmp_path / "again"))
    assert again.returncode == 0, again.stderr[-2000:]
    rerun = json.loads((tmp_path / "again" / "experiments" / "search_tiny_best_results.json").read_text())
    assert rerun["config"]["learning_rate"] == entry["learning_rate"] and rerun["iterations"] == 40


def test_random_search_with_a_grid_and_a_seed_is_reproducible(tmp_path, local_ray):
    space = _space(tmp_path, 'base = "optimal_fast"\nlearning_rate = { loguniform = [1e-4, 1e-2] }\n'
                             'n_layer = { grid = [1, 2] }\n')
    sampled = []
    for attempt in ("a", "b"):
        out = run_cli("search", "--space", str(space), "--num-samples", "2", "--search-alg", "random", "--seed", "5",
                  "--output-dir", str(tmp_path / attempt), "--max-iters", "6", "--set", "eval_interval=3", *TINY)
        assert out.returncode == 0, out.stderr[-3000:]
        csv = pd.read_csv(tmp_path / attempt / "experiments" / "experiment_comparison.csv")
        assert len(csv) == 4 and sorted(csv["n_layer"]) == [1, 1, 2, 2]  # 2 samples x the grid's 2 values
        sampled.append(sorted(csv["learning_rate"]))
    assert sampled[0] == sampled[1]


def test_pbt_exploit_continues_from_another_trials_weights_with_a_new_learning_rate(tmp_path, local_ray):
    space = _space(tmp_path, 'base = "optimal_fast"\nlearning_rate = { loguniform = [1e-5, 1e-2] }\n'
                             'weight_decay = { uniform = [0.0, 0.3] }\nbatch_size = 4\n', "pbt.toml")
    out = run_cli("search", "--space", str(space), "--num-samples", "4", "--scheduler", "pbt", "--seed", "1",
              "--output-dir", str(tmp_path), "--max-iters", "60", "--set", "eval_interval=10", *TINY)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "ray_results" / "pbt"
    exploits = []
    for n in (f"pbt_{i:04d}" for i in range(1, 5)):
        record = json.loads((tmp_path / "experiments" / f"{n}_results.json").read_text())
        assert record["status"] == "finished" and [h["iteration"] for h in record["history"]] == list(range(10, 61, 10))
        assert record["train_log"] == []  # log_interval == eval_interval: every report is an eval
        for change in record.get("config_changes", []):
            if change["trial"] == n:
                exploits.append((n, change, record))
    assert exploits, "PBT exploited no trial"
    n, change, record = exploits[-1]
    donor, at = change["from"], change["iteration"]
    assert donor != n and "learning_rate" in change["changes"]
    new_lr = change["changes"]["learning_rate"][1]
    # the learning-rate schedule follows the new value from the exploit on
    c = ExperimentConfig(**record["config"])
    reports = _lines(run / n / "result.json")
    after = [r for r in reports if r.get("config_changes") and r["config_changes"][-1] == change]
    assert after and all(r["lr"] == pytest.approx(lr_at(c.replace(learning_rate=new_lr), r["iteration"] - 1))
                         for r in after)
    # ... from the donor's weights: the trial's loss history at the exploit is one the donor reported
    mine = json.loads(sorted((run / n).glob("checkpoint_*/history.json"))[-1].read_text())
    at_exploit = [h["val_loss"] for h in mine if h["iteration"] == at]
    donor_reports = [r["val_loss"] for r in _lines(run / donor / "result.json") if r["iteration"] == at]
    own_reports = [r["val_loss"] for r in reports if r["iteration"] == at and not r.get("config_changes")]
    assert at_exploit and at_exploit[0] in donor_reports and at_exploit[0] not in own_reports
    # each trial's train_flops counts the steps it trained itself: from each report back to the one
    # before it, or, after an exploit, to the iteration of the donor's checkpoint it continued from
    for n in (f"pbt_{i:04d}" for i in range(1, 5)):
        trained, before, lineage = 0, 0, []
        for r in _lines(run / n / "result.json"):
            changes = r.get("config_changes") or []
            trained += r["iteration"] - (changes[-1]["iteration"] if changes != lineage else before)
            before, lineage = r["iteration"], changes
        assert r["train_flops"] == trained * 4 * 32 * r["flops_per_token"], n  # batch 4 x block 32 tokens a step


def test_search_killed_mid_run_resumes_to_num_samples_without_duplicates_or_gaps(tmp_path, local_ray):
    space = _space(tmp_path)
    # the second trial is killed at its 4th report (iteration 40), 80 iterations before its end (test_storage's
    # study keeps 60): the kill still lands mid-trial, and each trial trains 40 fewer than at 160
    iters = 120
    args = ["search", "--space", str(space), "--num-samples", "4", "--search-alg", "optuna", "--scheduler", "fifo",
            "--max-concurrent", "1", "--seed", "3",
            "--output-dir", str(tmp_path), "--max-iters", str(iters), "--set", "eval_interval=20", *TINY]
    proc = start_study(args, ENV)
    run = tmp_path / "ray_results" / "tiny"
    deadline = time.time() + 240
    while time.time() < deadline:
        first = _lines(run / "tiny_0001" / "result.json")
        second = _lines(run / "tiny_0002" / "result.json")
        if first and first[-1].get("status") == "finished" and len(second) >= 4:
            break
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        time.sleep(0.05)
    else:
        pytest.fail("the search did not reach its second trial in time")
    killed_at = _lines(run / "tiny_0002" / "result.json")[-1]["iteration"]
    first_pid = first[0]["pid"]
    kill_study(proc)  # the driver and its Ray, as a crash would
    refused = run_cli(*args)
    assert refused.returncode == 2 and "--resume" in refused.stderr and "not yet sampled" in refused.stderr
    out = run_cli(*args, "--resume")
    assert out.returncode == 0, out.stderr[-3000:]
    names = [f"tiny_{i:04d}" for i in range(1, 5)]
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == names  # 4 in all: none re-sampled
    assert {r["pid"] for r in _lines(run / "tiny_0001" / "result.json")} == {first_pid}  # not rerun
    resumed = [r for r in _lines(run / "tiny_0002" / "result.json") if r["pid"] != first_pid]
    assert resumed and resumed[0]["iteration"] >= killed_at  # from its last checkpoint, not from scratch
    history = pd.read_parquet(tmp_path / "experiments" / "history.parquet")
    history = history[history["kind"] == "eval"]
    for n in names:
        assert list(history[history["experiment"] == n]["iteration"]) == list(range(20, iters + 1, 20)), n
    state = pickle.loads(sorted(run.glob("searcher-state-*.pkl"))[-1].read_bytes())
    assert [t.state.name for t in state["_ot_study"].trials] == ["COMPLETE"] * 4
    # the Optuna study optuna-dashboard reads: each trial once, finished with its own figures and evals
    import optuna

    db = optuna.load_study(study_name="tiny", storage=f"sqlite:///{(tmp_path / 'experiments' / 'optuna.db').as_posix()}")
    trials = pd.read_parquet(tmp_path / "experiments" / "trials.parquet").set_index("experiment")
    assert sorted(t.user_attrs["trial"] for t in db.trials) == names
    for t in db.trials:
        assert t.state.name == "COMPLETE" and t.value == pytest.approx(trials.loc[t.user_attrs["trial"], "best_val_bpb"])
        assert sorted(t.intermediate_values) == list(range(20, iters + 1, 20))


def test_time_budget_ends_a_search_early_as_finished(tmp_path, local_ray):
    # two at a time: Tune then makes all 40 trials at the start, most of which never run; what
    # Tune's results log is caught here (its handlers write to the stderr of Ray's import)
    logged: list[str] = []
    catch = logging.Handler()
    catch.emit = lambda record: logged.append(record.getMessage())
    results_log = logging.getLogger("ray.tune.analysis.experiment_analysis")
    results_log.addHandler(catch)
    try:
        out = run_cli("search", "--space", str(_space(tmp_path)), "--num-samples", "40",
                      "--time-budget", "6s", "--output-dir", str(tmp_path), "--max-iters", "200",
                      "--set", "eval_interval=20", *TINY)
    finally:
        results_log.removeHandler(catch)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "interrupted" not in out.stderr
    # the trials the budget ended before they started are not each a warning line of Tune's
    assert not [m for m in logged if m.startswith("Failed to fetch metrics")], logged[:1]
    run = tmp_path / "ray_results" / "tiny"
    trials = sorted(p.parent.name for p in run.glob("tiny_*/result.json"))  # the ones that ran
    assert 1 <= len(trials) < 40
    assert len(list(run.glob("tiny_*"))) > len(trials)  # and trials Tune made that never started
    meta = json.loads((run / "study.json").read_text())
    assert meta["ended_at"] and meta["time_budget_s"] == 6
    # a trial that ran and then lost its results is still a warning (its folder is not empty)
    for name in ("result.json", "progress.csv"):
        (run / trials[0] / name).unlink(missing_ok=True)
    from ray import tune

    results_log.addHandler(catch)
    try:
        tune.ExperimentAnalysis(str(run))
    finally:
        results_log.removeHandler(catch)
    warned = [m for m in logged if m.startswith("Failed to fetch metrics")]
    assert len(warned) == 1 and trials[0] in warned[0], logged


def test_flops_budget_ends_a_search_once_its_trials_trained_that_much(tmp_path, local_ray):
    """--budget: Tune stops the search at the report that brings the trials' training FLOPs together
    to the budget (that report counted: the stopper sees each report before Tune's stop check);
    the search has ended (finished, not interrupted) and says so in study.json."""
    budget = 1.2e9  # a trial of this space trains about 0.9e9 FLOPs in its 20 iterations
    out = run_cli("search", "--space", str(_space(tmp_path)), "--num-samples", "40", "--max-concurrent", "1",
                  "--budget", "1.2e9", "--output-dir", str(tmp_path), "--max-iters", "20",
                  "--set", "eval_interval=5", "--set", "log_interval=0", *TINY)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "interrupted" not in out.stderr
    run = tmp_path / "ray_results" / "tiny"
    # the ones that ran (Ray makes the others' folders), one at a time, in the order they were numbered
    trials = sorted((p.parent for p in run.glob("tiny_*/result.json")), key=lambda d: int(d.name.split("_")[-1]))
    assert 2 <= len(trials) < 40
    reports = [[r["train_flops"] for r in _lines(t / "result.json")] for t in trials]
    # every report, in the order Tune saw them (one trial at a time), and the sum after each
    sums = np.cumsum([b - a for flops in reports for a, b in zip([0.0, *flops], flops)])
    assert sums[-1] >= budget > sums[-2]  # the last report crossed it, and no report came after it
    meta = json.loads((run / "study.json").read_text())
    assert meta["ended_at"] and meta["flops_budget"] == budget
    bad = run_cli("search", "lr", "--budget", "-1", "--output-dir", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "must be a positive number of FLOPs" in bad.stderr


def test_a_search_killed_and_resumed_still_stops_at_its_flops_budget(tmp_path, local_ray):
    """--budget across a SIGKILL and --resume: the resumed search counts what its trials trained
    before the kill, the first trial's, ended before it, included, and stops where the budget is
    spent, not after every sampled trial."""
    budget = 5e9  # a trial trains 2.1e9 (one layer) or 2.8e9 FLOPs (two) in its 60 iterations: the third ends it
    args = ["search", "--space", str(_space(tmp_path)), "--num-samples", "8", "--max-concurrent", "1",
            "--scheduler", "fifo", "--budget", f"{budget:g}", "--output-dir", str(tmp_path), "--max-iters", "60",
            "--set", "eval_interval=5", "--set", "log_interval=0", "--seed", "0", *TINY]
    run = tmp_path / "ray_results" / "tiny"
    proc = start_study(args, ENV)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:  # killed once the first trial has ended and the second reported twice
            first = _lines(run / "tiny_0001" / "result.json")
            if first and first[-1].get("status") == "finished" and len(_lines(run / "tiny_0002" / "result.json")) >= 2:
                break
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            time.sleep(0.05)
        else:
            pytest.fail("the search did not reach its second trial in time")
    finally:
        kill_study(proc)
    out = run_cli(*args, "--resume")
    assert out.returncode == 0, out.stderr[-3000:]
    last = [_lines(p)[-1]["train_flops"] for p in run.glob("tiny_*/result.json") if _lines(p)]
    step = 5 * 2.7e9 / 60  # one report's FLOPs (every 5 iterations)
    assert budget <= sum(last) <= budget + 2 * step, (sum(last), len(last))
    assert len(last) < 8
    # Tune's warnings of the samples the budget left unstarted are dropped, also where `build --resume` asks
    # whether a stage finished (in a fresh process: nothing else has quieted Ray's loggers); then the progress
    # line counts the trials ended before the kill too: spent as the stop counted it
    asked = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; from slm_tune.tune.run import "
                            "unfinished_trials; print(unfinished_trials(Path(sys.argv[1])))", str(run)],
                           capture_output=True, text=True, env=ENV, timeout=120)
    assert asked.returncode == 0 and asked.stdout.strip() == "[]", asked.stderr[-2000:]
    assert "Failed to fetch metrics" not in out.stderr + asked.stderr, asked.stderr[-2000:]
    headers = [ln for ln in out.stderr.splitlines() if "FLOPs budget spent" in ln]
    assert "/8 trial(s) done" in headers[0], headers[0]  # the plan read before the first line
    counts = re.search(r"(\d)/8 trial\(s\) done, 0 running(?:, (\d) stopped with the study)?; (\d+)% of its",
                       headers[-1])
    assert counts, headers[-1]
    assert int(counts[1]) + int(counts[2] or 0) == len(last) and int(counts[3]) == round(100 * sum(last) / budget)
