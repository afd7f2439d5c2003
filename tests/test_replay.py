"""The replay benchmark: the committed table, the nearest recorded run, the Tune trainable (the
table's curve exactly, and the same trials as the fast replay), seeded replays, every searcher and
scheduler on a 6-trial replay, and the refusals."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "bench" / "tabular.parquet"


@pytest.fixture(scope="module")
def table():
    from slm_tune.tune.replay.table import ReplayTable

    return ReplayTable.load(TABLE)


@pytest.fixture(scope="module")
def space():
    from search_spaces import get_search

    return get_search("tiny_lm")


def study_run(space, search_alg="optuna", scheduler="fifo", seed=0, trials=6, objectives=()):
    from slm_tune.tune.study_run import StudyRun

    return StudyRun(study="tiny_lm", configs={space.base.name: space.base}, search=space, num_samples=trials,
                    search_alg=search_alg, scheduler=scheduler, sampler_seed=seed, objectives=tuple(objectives))


def test_the_table_is_the_tabular_study(table, space):
    """Every replayable run is a point of the tabular family at its levels, with 10 evals whose
    FLOPs are the model's FLOPs per token x tokens, and the seed-noise runs are kept apart."""
    from search_spaces.tabular import EVALS, LEVELS, table_points
    from slm_tune.model.counts import flops_per_token

    points = table_points()
    assert len(table.curves) >= 200 and table.noise_runs
    for curve in table.curves[:40]:
        i = int(curve.run.split("_")[1])
        assert curve.point == points[i]
        assert all(curve.point[k] in LEVELS[k] for k in LEVELS)
        c = space.config_for(curve.point)
        assert len(curve.iteration) == EVALS
        np.testing.assert_allclose(curve.train_flops, flops_per_token(c) * c.batch_size * c.block_size * curve.iteration)
        assert np.all(np.diff(curve.best_val_bpb) <= 0) and curve.best_val_bpb[-1] == curve.val_bpb.min()


def test_nearest_is_the_closest_recorded_point(table, space):
    """A recorded point maps to its own run; random points map to the run a distance written out
    here finds: the rate in log over 1e-3..3.2e-2, warmup over 0..73, decay over 0..0.3, beta2
    over 0.9..0.99, and each differing category 1."""
    import math

    a = table.curves[0]
    assert table.nearest(a.point, space) is a

    def distance(p, q):
        d = (math.log(p["learning_rate"] / q["learning_rate"]) / math.log(32)) ** 2
        d += ((p["warmup_iters"] - q["warmup_iters"]) / 73) ** 2 + ((p["weight_decay"] - q["weight_decay"]) / 0.3) ** 2
        d += ((p["beta2"] - q["beta2"]) / 0.09) ** 2
        return d + sum(p[k] != q[k] for k in ("batch_size", "n_head", "n_layer", "pos"))

    rng = np.random.default_rng(0)
    for _ in range(20):
        p = {"learning_rate": float(np.exp(rng.uniform(np.log(1e-3), np.log(3.2e-2)))),
             "warmup_iters": int(rng.integers(0, 73)), "weight_decay": float(rng.uniform(0, 0.3)),
             "beta2": float(rng.uniform(0.9, 0.99)), "batch_size": int(rng.choice([8, 16])),
             "n_head": int(rng.choice([2, 4, 8])), "n_layer": int(rng.choice([1, 2, 4])),
             "pos": str(rng.choice(["learned", "rope"]))}
        expected = min(table.curves, key=lambda c: distance(p, c.point))
        assert table.nearest(p, space) is expected


def test_the_tune_trainable_reports_the_tables_curve_and_the_replays_trials(table, space, local_ray, tmp_path):
    """Through Tune (OptunaSearch's TPE at one trial at a time, FIFO), each trial reports the
    nearest run's curve exactly; and the fast replay at one worker makes the same trials."""
    from ray import tune

    from slm_tune.tune.replay.simulation import replay_search
    from slm_tune.tune.replay.trainable import replay_trainable
    from slm_tune.tune.schedulers import make_search_alg, make_scheduler

    run = study_run(space, seed=3)
    scheduler, metric, mode = make_scheduler(run)
    tuner = tune.Tuner(tune.with_parameters(replay_trainable, table=table, space=space),
                       param_space=space.param_space(),
                       tune_config=tune.TuneConfig(search_alg=make_search_alg(run, 1), scheduler=scheduler,
                                                   metric=metric, mode=mode, num_samples=6, reuse_actors=True),
                       run_config=tune.RunConfig(storage_path=str(tmp_path), name="replay", verbose=0))
    results = sorted(tuner.fit(), key=lambda r: int(r.metrics["experiment_tag"].split("_")[0]))  # in creation order
    runs = []
    for result in results:
        curve = table.nearest(result.config, space)
        df = result.metrics_dataframe
        np.testing.assert_array_equal(df["val_bpb"].to_numpy(), curve.val_bpb)
        np.testing.assert_array_equal(df["train_flops"].to_numpy(), curve.train_flops)
        runs.append(curve.run)
    events = replay_search(table, run, workers=1)
    assert list(events.drop_duplicates("trial")["run"]) == runs


def test_a_searcher_seed_replays_the_same_trials(table, space):
    from slm_tune.tune.replay.simulation import replay_search

    first = replay_search(table, study_run(space, "optuna", "asha", seed=7, trials=12))
    again = replay_search(table, study_run(space, "optuna", "asha", seed=7, trials=12))
    other = replay_search(table, study_run(space, "optuna", "asha", seed=8, trials=12))
    pd.testing.assert_frame_equal(first, again)
    assert list(first["run"]) != list(other["run"])


@pytest.mark.parametrize("search_alg,scheduler", [*itertools.product(["random", "optuna", "tpe-independent", "gp",
                                                                       "qmc", "nsga2", "cmaes"], ["fifo"]),
                                                  *(("optuna", s) for s in ["asha", "hyperband", "median"])])
def test_every_searcher_and_scheduler_replays_six_trials(table, space, search_alg, scheduler):
    """6 trials, two at a time: every trial reports its curve up to where it ended, in time order,
    and the compute is the sum of what the trials trained."""
    from slm_tune.tune.replay.simulation import replay_search

    events = replay_search(table, study_run(space, search_alg, scheduler, seed=1, trials=6))
    assert events["trial"].nunique() == 6 and events["ended"].sum() == 6
    assert np.all(np.diff(events["time_s"]) >= 0)
    by_run = {c.run: c for c in table.curves}
    spent = sum(by_run[r.run].train_flops[int(r.eval)] for r in events[events["ended"]].itertuples())
    assert events["flops"].iloc[-1] == pytest.approx(spent)
    for trial, rows in events.groupby("trial"):
        assert list(rows["eval"]) == list(range(len(rows)))


def test_asha_stops_trials_at_its_rungs(table, space):
    """ASHA (grace 24 iterations, halving) stops some trials at a rung and none between rungs."""
    from slm_tune.tune.replay.simulation import replay_search

    events = replay_search(table, study_run(space, "random", "asha", seed=0, trials=30))
    stopped = events[events["stopped"]]
    assert len(stopped) > 0
    by_run = {c.run: c for c in table.curves}
    assert {int(by_run[r.run].iteration[int(r.eval)]) for r in stopped.itertuples()} <= {24, 48, 96, 192}


def test_the_benchmarks_asha_variants_stop_at_their_own_rungs(table, space):
    """bench/tabular.py's asha-rf4-g1 is ASHA quartering from 24 iterations (rungs 24 and 96) while
    its block runs, and the library's ASHA again after it."""
    sys.path.insert(0, str(ROOT))
    from bench.tabular import scheduler_named
    import slm_tune.tune.replay.simulation as simulation

    library = simulation.make_scheduler
    with scheduler_named("asha-rf4-g1") as name:
        assert name == "asha"
        events = simulation.replay_search(table, study_run(space, "random", name, seed=0, trials=30))
    assert simulation.make_scheduler is library
    by_run = {c.run: c for c in table.curves}
    stopped = {int(by_run[r.run].iteration[int(r.eval)]) for r in events[events["stopped"]].itertuples()}
    assert stopped and stopped <= {24, 96} and 24 in stopped


def test_a_two_objective_replay_tells_both_objectives(table, space):
    from slm_tune.tune.replay.simulation import replay_search

    events = replay_search(table, study_run(space, "optuna", "fifo", seed=0, trials=8,
                                            objectives=("best_val_bpb", "total_params")))
    by_run = {c.run: c for c in table.curves}
    for r in events[events["ended"]].itertuples():
        assert r.total_params == by_run[r.run].figures["total_params"]


def test_a_space_that_does_not_match_the_table_is_refused(table, space):
    from slm_tune.errors import UserError
    from search_spaces import get_search

    table.check_space(space)
    with pytest.raises(UserError, match="replay it with the space it was built for"):
        table.check_space(get_search("lr"))


def test_the_benchmark_figures_from_a_small_replay(table, tmp_path):
    """bench/tabular.py's figures from 3 seeds: every pairing's row, regret in [0, 1], the plot."""
    sys.path.insert(0, str(ROOT))
    from bench import tabular
    from bench.tabular_report import compute_to, plot, regret, single_table

    data = tabular.replay_all(3, 10, ["random", "optuna"], ["fifo", "asha"], multi=("random",))
    rows = single_table(data)
    assert set(rows["pairing"]) == {"random+fifo", "random+asha", "optuna+fifo", "optuna+asha"}
    for runs in data["single"].values():
        for run in runs:
            r = regret(data, run["best"])
            assert np.all((r >= 0) & (r <= 1)) and np.all(np.diff(r) <= 0)
            assert compute_to(data, run, 1.0) == run["flops"][0]
    plot(data, tmp_path / "replay.png")
    assert (tmp_path / "replay.png").stat().st_size > 10_000


@pytest.mark.parametrize("extra,said", [
    (["--search-alg", "gp", "--space", "GRID"], "grid entries need --search-alg random"),
    (["--scheduler", "median", "--objective", "best_val_bpb", "--objective", "params"], "--scheduler median stops"),
    (["--scheduler", "hyperband", "--objective", "best_val_bpb", "--objective", "params"], "--scheduler hyperband stops"),
    (["--search-alg", "qmc", "--scheduler", "pbt"], "PBT evolves its own population"),
    (["--search-alg", "cmaes", "--objective", "best_val_bpb", "--objective", "params"], "cmaes optimises one objective"),
    (["--search-alg", "hyperopt"], "invalid choice: 'hyperopt'"),
])
def test_searcher_and_scheduler_refusals_are_one_line_and_write_nothing(tmp_path, extra, said):
    from conftest import run_cli

    grid = tmp_path / "grid.toml"
    grid.write_text('base = "optimal_fast"\nlearning_rate = { grid = [1e-3, 2e-3] }\n')
    extra = [str(grid) if a == "GRID" else a for a in extra]
    name = [] if "--space" in extra else ["lr"]
    ran = run_cli("search", *name, *extra, "--output-dir", str(tmp_path / "out"))
    assert ran.returncode == 2 and said in ran.stderr, ran.stderr
    assert len(ran.stderr.strip().splitlines()) <= 2 and "Traceback" not in ran.stderr  # argparse adds its usage line
    assert not (tmp_path / "out" / "ray_results").exists()


def test_the_default_search_is_the_pairing_the_stored_100_seed_replay_measured_best(space):
    """StudyRun's defaults (random search; ASHA for one objective, FIFO for several and for studies
    of named experiments) against bench/tabular_replay_100.json, the replay the README's table is
    computed from: the default beats random+fifo with a verdict, and no pairing beats it."""
    sys.path.insert(0, str(ROOT))
    import json

    from bench.tabular_report import compute_to, rank_test, single_table
    from slm_tune.tune.study_run import StudyRun

    one = StudyRun(study="s", configs={space.base.name: space.base}, search=space)
    two = StudyRun(study="s", configs={space.base.name: space.base}, search=space,
                   objectives=("best_val_bpb", "params"))
    study = StudyRun(study="s", configs={space.base.name: space.base})
    assert (one.search_alg, one.scheduler, two.search_alg, two.scheduler, study.scheduler) == \
        ("random", "asha", "random", "fifo", "fifo")
    assert StudyRun(study="s", configs={}, search=space, scheduler="median").scheduler == "median"

    data = json.loads((ROOT / "bench" / "tabular_replay_100.json").read_text())
    assert data["seeds"] >= 100
    rows = single_table(data).set_index("pairing")
    default = f"{one.search_alg}+{one.scheduler}"
    assert rows.loc[default, "verdict"] == "better"  # than random+fifo, Holm over every pairing
    mine = [compute_to(data, r, 0.01) for r in data["single"][default]]
    for other, runs in data["single"].items():  # none better than the default by more than the noise
        theirs = [compute_to(data, r, 0.01) for r in runs]
        assert rows.loc[other, "median_0.01"] >= rows.loc[default, "median_0.01"] or rank_test(theirs, mine) > 0.05
