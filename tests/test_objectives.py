"""Several objectives, constraints and Pareto fronts; the search's Optuna study served by a real
optuna-dashboard."""

import json
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import optuna
import pandas as pd
import pytest

from analysis.pareto import hypervolume, pareto_mask
from slm_tune.errors import UserError
from slm_tune.model.counts import param_counts
from slm_tune.objectives import parse_constraint, parse_objectives
from test_search import TINY
from conftest import run_cli, serve

SPACE = """
base = "optimal_fast"
learning_rate = { loguniform = [1e-3, 1e-2] }
n_layer = { choice = [1, 2] }
head_size = { choice = [8, 16, 32] }
batch_size = 4
"""
BOUND = 60_000  # parameters: cuts the space roughly in half (23k to 170k at vocabulary 1000)


# ----------------------------------------------------------------------------- parsing, fronts

def test_objectives_and_constraints_parse_from_the_metric_registry():
    assert parse_objectives(["best_val_bpb", "params"]) == ["best_val_bpb", "total_params"]
    k = parse_constraint(" params <= 5e6 ")
    assert (k.metric, k.op, k.bound, k.before_training) == ("total_params", "<=", 5e6, True)
    assert not parse_constraint("ms_per_token<20").before_training
    assert k.holds(5e6) and not k.holds(5e6 + 1) and not k.holds(float("nan")) and not k.holds(None)
    for bad, said in [("params=5e6", "METRIC OP NUMBER"), ("parms<=5", "did you mean"),
                      ("params<=lots", "METRIC OP NUMBER")]:
        with pytest.raises(UserError, match=said):
            parse_constraint(bad)
    with pytest.raises(UserError, match="given twice"):
        parse_objectives(["params", "total_params"])
    with pytest.raises(UserError, match="--objective 'lr' is not one of"):
        parse_objectives(["lr"])


def test_pareto_front_and_hypervolume_against_their_definitions():
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"best_val_bpb": rng.random(40), "total_params": rng.integers(1, 30, 40).astype(float),
                          "tokens_per_s": rng.random(40)})
    table.loc[3, "best_val_bpb"] = np.nan  # on no front
    objectives = ["best_val_bpb", "total_params", "tokens_per_s"]  # tokens/s: higher is better
    mask = pareto_mask(table, objectives)
    for i, a in table.iterrows():  # the definition, pair by pair
        beaten = any((b.best_val_bpb <= a.best_val_bpb and b.total_params <= a.total_params
                      and b.tokens_per_s >= a.tokens_per_s) and
                     (b.best_val_bpb < a.best_val_bpb or b.total_params < a.total_params
                      or b.tokens_per_s > a.tokens_per_s) for j, b in table.iterrows() if j != i)
        assert mask[i] == (not beaten and not np.isnan(a.best_val_bpb)), i
    two = pd.DataFrame({"best_val_bpb": [1, 2, 3, 3.5], "total_params": [3, 2, 1, 3.5]})
    assert hypervolume(two, ["best_val_bpb", "total_params"], [4, 4]) == pytest.approx(6.0)  # 1x1 + 1x2 + 1x3
    # against a grid count of the dominated area
    pts = rng.random((12, 2))
    grid = (np.stack(np.meshgrid(np.linspace(0, 1, 801), np.linspace(0, 1, 801)), -1).reshape(-1, 2) + 1 / 1600)
    grid = grid[(grid < 1).all(axis=1)]
    covered = ((pts[None, :, :] <= grid[:, None, :]).all(axis=2)).any(axis=1).mean()
    hv = hypervolume(pd.DataFrame(pts, columns=["best_val_bpb", "total_params"]), ["best_val_bpb", "total_params"],
                     [1, 1])
    assert hv == pytest.approx(covered, abs=5e-3)


def test_every_report_carries_every_objective_and_the_last_its_generation_time():
    """Ray checks that each result has its searcher's metrics: training-loss reports between evals too."""
    from slm_tune.data.cache import prepare_tokens
    from slm_tune.metrics import METRICS, OBJECTIVE_METRICS
    from slm_tune.train import train
    from conftest import tiny

    c = tiny(max_iters=20, eval_interval=10, log_interval=5)
    reports = []
    train(c, prepare_tokens(c.dataset, c.vocab_size), report=lambda m, _save: reports.append(m))
    assert {r["kind"] for r in reports} == {"train", "eval"}
    for r in reports:
        assert {METRICS[o].report_key for o in OBJECTIVE_METRICS} <= set(r), r["kind"]
    assert np.isnan(reports[0]["ms_per_token"]) and 0 < reports[-1]["ms_per_token"] < 1e4
    evals = [r for r in reports if r["kind"] == "eval"]
    assert reports[-1]["best_val_bpb_context"] == min(r["val_bpb_context"] for r in evals)
    assert reports[-1]["total_params"] == param_counts(c)[0]


# ----------------------------------------------------------------------------- refusals, before anything runs

@pytest.mark.parametrize("extra, said", [
    (["--constraint", "params<=1000"], "no point of search 'tiny' meets it"),
    (["--objective", "best_val_bpb", "--objective", "params", "--scheduler", "asha"], "--scheduler asha"),
    (["--constraint", "params<=1e5", "--scheduler", "pbt"], "PBT"),
    (["--objective", "params", "--metric", "val_bpb"], "not both"),
    (["--constraint", "bpb<1"], "--constraint 'bpb' is not one of"),
])
def test_impossible_or_conflicting_objectives_are_one_line_before_anything_runs(tmp_path, extra, said):
    space = tmp_path / "tiny.toml"
    space.write_text(SPACE)
    out = run_cli("search", "--space", str(space), "--num-samples", "2", "--output-dir", str(tmp_path / "out"),
                  *TINY, *extra)
    assert out.returncode == 2 and said in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) <= 2
    assert not (tmp_path / "out" / "ray_results").exists()


# ----------------------------------------------------------------------------- a 2-objective search end to end

@pytest.fixture(scope="module")
def two_objective_search(tmp_path_factory, local_ray):
    out = tmp_path_factory.mktemp("pareto")
    (out / "tiny.toml").write_text(SPACE)
    ran = run_cli("search", "--space", str(out / "tiny.toml"), "--objective", "best_val_bpb", "--objective", "params",
                  "--constraint", f"params<={BOUND}", "--num-samples", "6", "--seed", "11", "--output-dir", str(out),
                  "--max-iters", "20", "--set", "eval_interval=10", "--set", "log_interval=5", *TINY)
    assert ran.returncode == 0, ran.stderr[-3000:]
    return out, ran


def test_two_objective_search_writes_its_front_and_no_trial_breaks_the_constraint(two_objective_search):
    out, ran = two_objective_search
    exp = out / "experiments"
    trials = pd.read_parquet(exp / "trials.parquet")
    assert len(trials) == 6 and (trials["total_params"] <= BOUND).all()
    for config in (json.loads((exp / f"{n}_results.json").read_text())["config"] for n in trials["experiment"]):
        from slm_tune.config import ExperimentConfig

        assert param_counts(ExperimentConfig(**config))[0] <= BOUND
    assert (trials["ms_per_token"] > 0).all()  # timed after training
    assert "of the space's points meet total_params<=60000" in ran.stderr
    front = pd.read_csv(exp / "search_tiny_pareto.csv")
    rows = trials.set_index("experiment").loc[front["trial"]]
    assert list(front["pareto"]) == list(range(1, len(front) + 1)) and list(front["best_val_bpb"]) == sorted(front["best_val_bpb"])
    for t in trials.itertuples():  # the front is exactly the non-dominated trials
        dominated = any(o.best_val_bpb <= t.best_val_bpb and o.total_params <= t.total_params and
                        (o.best_val_bpb < t.best_val_bpb or o.total_params < t.total_params) for o in trials.itertuples())
        assert (t.experiment in set(front["trial"])) == (not dominated)
    assert np.allclose(rows["total_params"], front["total_params"])
    assert (exp / "search_tiny_pareto.png").stat().st_size > 20_000
    entries = tomllib.loads((exp / "search_tiny_best.toml").read_text())
    assert list(entries) == ["search_tiny_best", *(f"search_tiny_pareto_{i}" for i in front["pareto"])]
    first = json.loads((exp / f"{front['trial'].iloc[0]}_results.json").read_text())
    assert entries["search_tiny_pareto_1"]["learning_rate"] == first["config"]["learning_rate"]


def _exported_again(out: Path, to: Path, change) -> Path:
    """A copy of the search, its study.json changed by `change(doc)`, exported again by `compare`."""
    shutil.copytree(out, to, ignore=shutil.ignore_patterns(".slm-tune.lock"))
    study = to / "ray_results" / "tiny" / "study.json"
    doc = json.loads(study.read_text())
    change(doc)
    study.write_text(json.dumps(doc))
    assert run_cli("compare", "--output-dir", str(to)).returncode == 0
    return to


def test_measured_constraints_filter_the_front(two_objective_search, tmp_path):
    out, _ = two_objective_search
    bound = float(pd.read_parquet(out / "experiments" / "trials.parquet")["best_val_bpb"].median())
    copy = _exported_again(out, tmp_path / "copy", lambda doc: doc["constraints"].append(
        {"metric": "best_val_bpb", "op": "<=", "bound": bound}))
    front = pd.read_csv(copy / "experiments" / "search_tiny_pareto.csv")
    assert len(front) and (front["best_val_bpb"] <= bound).all()


def _get(url: str, timeout: float = 60.0) -> dict:
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.loads(r.read())
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.3)


def test_optuna_dashboard_serves_the_search_with_its_trials_values(two_objective_search):
    out, _ = two_objective_search
    url = f"sqlite:///{(out / 'experiments' / 'optuna.db').as_posix()}"
    trials = pd.read_parquet(out / "experiments" / "trials.parquet").set_index("experiment")
    # the study itself, read with Optuna: one trial per search trial, its values and each eval
    study = optuna.load_study(study_name="tiny", storage=url)
    assert study.metric_names == ["best_val_bpb", "total_params"] and len(study.trials) == 6
    for t in study.trials:
        name = t.user_attrs["trial"]
        assert t.state.name == "COMPLETE"
        assert t.values == pytest.approx([trials.loc[name, "best_val_bpb"], trials.loc[name, "total_params"]])
        assert sorted(t.intermediate_values) == [10, 20]
        record = json.loads((out / "experiments" / f"{name}_results.json").read_text())
        assert t.params["learning_rate"] == pytest.approx(record["config"]["learning_rate"])
    exe = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent))
    assert exe, "optuna-dashboard is not installed beside this Python"
    server, served_at = serve(lambda port: [exe, url, "--host", "127.0.0.1", "--port", str(port)], "/api/studies",
                              timeout=60, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        summaries = _get(f"{served_at}/api/studies")["study_summaries"]
        assert [s["study_name"] for s in summaries] == ["tiny"]
        detail = _get(f"{served_at}/api/studies/{summaries[0]['study_id']}?after=0")
        assert detail["objective_names"] == ["best_val_bpb", "total_params"]
        served = {next(a["value"] for a in t["user_attrs"] if a["key"] == "trial"): t["values"] for t in detail["trials"]}
        assert set(served) == set(trials.index)
        for name, values in served.items():
            assert values == pytest.approx([trials.loc[name, "best_val_bpb"], trials.loc[name, "total_params"]])
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_pareto_of_every_pair_for_three_objectives(two_objective_search, tmp_path):
    out, _ = two_objective_search
    objectives = ["best_val_bpb", "total_params", "ms_per_token"]
    copy = _exported_again(out, tmp_path / "copy", lambda doc: doc.update(objectives=objectives))
    front = pd.read_csv(copy / "experiments" / "search_tiny_pareto.csv")
    trials = pd.read_parquet(copy / "experiments" / "trials.parquet")
    points = trials[objectives].to_numpy(float)  # all three lower-is-better; the front by its definition
    on_front = [not np.isnan(p).any() and not any((q <= p).all() and (q < p).any() for q in points if not np.isnan(q).any())
                for p in points]
    assert set(front["trial"]) == set(trials["experiment"][on_front])
    assert {"best_val_bpb", "total_params", "ms_per_token"} <= set(front.columns)
    height, width = plt.imread(copy / "experiments" / "search_tiny_pareto.png").shape[:2]
    assert width > 2.5 * height  # a panel per pair: three side by side
