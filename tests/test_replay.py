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


def _ray_random_points(space, seed: int, n: int) -> list[dict]:
    """The points the live default's searcher (Ray's BasicVariantGenerator, as make_search_alg
    builds it) proposes, in order, without running a Tune."""
    from ray.tune.experiment import Experiment

    from slm_tune.tune.schedulers import make_search_alg

    def trainable(config):
        pass

    searcher = make_search_alg(study_run(space, "random", "asha", seed=seed, trials=n), 2)
    searcher.add_configurations([Experiment("points", trainable, config=space.param_space(), num_samples=n)])
    return [searcher.next_trial().config for _ in range(n)]


def _points_sampler(points: list[dict]):
    """An Optuna sampler that proposes these points in order (the replay asks it as it asks any)."""
    import optuna

    class Points(optuna.samplers.BaseSampler):
        def infer_relative_search_space(self, study, trial):
            return {}

        def sample_relative(self, study, trial, search_space):
            return {}

        def sample_independent(self, study, trial, name, distribution):
            return points[trial.number][name]

    return Points()


def test_the_default_search_at_two_workers_through_tune_stops_what_the_replay_stops(
        table, space, local_ray, tmp_path, monkeypatch):
    """The live default (Ray's random search, ASHA) at two concurrent trials through Tune itself,
    against the replay of the same points at two workers: the replay's claim is that Tune, given
    each eval's report in the order of the runs' recorded seconds, decides as the replay does. Tune
    is paced into that order (each trial waits for its turn at a clock actor, which the driver
    advances once Tune has processed a report); then Tune's ASHA must stop the same trials at the
    same evals, and the trials must train the FLOPs the replay counts."""
    import time

    import ray
    from ray import tune

    import slm_tune.tune.replay.simulation as simulation
    from slm_tune.tune.schedulers import make_scheduler, make_search_alg

    run = study_run(space, "random", "asha", seed=5, trials=8)
    points = _ray_random_points(space, 5, 8)
    monkeypatch.setattr(simulation, "make_sampler", lambda _run: _points_sampler(points))
    events = simulation.replay_search(table, run, workers=2)
    order = [(int(t), int(k)) for t, k in zip(events["trial"], events["eval"])]
    index = {p["learning_rate"]: i for i, p in enumerate(points)}

    @ray.remote(num_cpus=0)
    class Clock:
        def __init__(self):
            self.done = []

        def next(self):
            return order[len(self.done)] if len(self.done) < len(order) else None

        def advance(self, event):
            self.done.append(event)

        def seen(self):
            return self.done

    clock = Clock.remote()

    def paced(config, clock):
        curve, me = table.nearest(config, space), index[config["learning_rate"]]
        for k in range(len(curve.iteration)):
            deadline = time.monotonic() + 60
            while ray.get(clock.next.remote()) != (me, k):
                assert time.monotonic() < deadline, f"trial {me} eval {k} never came in the replay's order"
                time.sleep(0.01)
            tune.report({**curve.report(k), "run": curve.run, "trial_index": me, "eval": k})

    class Advance(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            ray.get(clock.advance.remote((result["trial_index"], result["eval"])))

    scheduler, metric, mode = make_scheduler(run)
    tuner = tune.Tuner(tune.with_parameters(paced, clock=clock), param_space=space.param_space(),
                       tune_config=tune.TuneConfig(search_alg=make_search_alg(run, 2), scheduler=scheduler,
                                                   metric=metric, mode=mode, num_samples=8, max_concurrent_trials=2,
                                                   reuse_actors=True),
                       run_config=tune.RunConfig(storage_path=str(tmp_path), name="paced", verbose=0,
                                                 callbacks=[Advance()]))
    results = list(tuner.fit())
    assert not [r.error for r in results if r.error is not None]
    assert sorted(index[r.config["learning_rate"]] for r in results) == list(range(8))  # Ray's points, all of them
    assert [tuple(e) for e in ray.get(clock.seen.remote())] == order  # Tune saw the reports in the replay's order
    assert [t for t, _ in order] != sorted(t for t, _ in order)  # two trials at a time: their reports interleave
    evals = {index[r.config["learning_rate"]]: len(r.metrics_dataframe) for r in results}
    replayed = events.groupby("trial")["eval"].max() + 1
    assert evals == {int(t): int(n) for t, n in replayed.items()}  # ASHA stopped the same trials at the same evals
    assert 0 < int(events["stopped"].sum()) < 8
    spent = sum(table.nearest(r.config, space).train_flops[evals[index[r.config["learning_rate"]]] - 1] for r in results)
    assert spent == pytest.approx(events["flops"].iloc[-1])


def test_the_replays_random_sampler_draws_what_rays_random_search_draws(space):
    """The replay stands in for Ray's random search (the live default) with Optuna's RandomSampler
    asked with OptunaSearch's conversion of the space: 400 points from each, per dimension, are one
    distribution (two-sample Kolmogorov-Smirnov for the numbers, a chi-square test of the counts for
    the categories) and each number follows its domain's CDF (uniform, or uniform in log for the
    rate); Bonferroni over the tests at 1%. The same test tells a uniform rate from a log-uniform one."""
    import math

    import optuna
    from ray.tune.search.optuna import OptunaSearch
    from scipy import stats

    from slm_tune.tune.schedulers import make_sampler

    n = 400
    ray_points = _ray_random_points(space, 0, n)
    study = optuna.create_study(sampler=make_sampler(study_run(space, "random", "asha", seed=0, trials=n)))
    dists = OptunaSearch.convert_search_space(space.param_space())
    optuna_points = [study.ask(fixed_distributions=dists).params for _ in range(n)]
    alpha = 0.01 / (3 * len(dists))
    for name, dist in dists.items():
        ours, theirs = [p[name] for p in optuna_points], [p[name] for p in ray_points]
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            counts = [[sum(v == c for v in vs) for c in dist.choices] for vs in (ours, theirs)]
            assert sum(map(sum, counts)) == 2 * n  # nothing outside the choices
            assert stats.chi2_contingency(counts).pvalue > alpha, name
            continue
        assert stats.ks_2samp(ours, theirs).pvalue > alpha, name
        lo, hi = (math.log(dist.low), math.log(dist.high)) if dist.log else (dist.low, dist.high)
        for vs in (ours, theirs):
            x = np.log(vs) if dist.log else np.asarray(vs, float)
            assert lo <= x.min() and x.max() <= hi, name
            if isinstance(dist, optuna.distributions.FloatDistribution):
                assert stats.kstest(x, "uniform", args=(lo, hi - lo)).pvalue > alpha, name
            else:  # integers low..high inclusive, each as likely: a chi-square test of their counts
                assert stats.chisquare(np.bincount(x.astype(int) - int(lo), minlength=int(hi - lo) + 1)).pvalue > alpha, name
    rates = [p["learning_rate"] for p in ray_points]
    uniform = np.random.default_rng(0).uniform(dists["learning_rate"].low, dists["learning_rate"].high, n)
    assert stats.ks_2samp(rates, uniform).pvalue < alpha


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
            # the first compute at which the incumbent is within 0.05 of the table's range of its best, in bpb
            bar = data["table"]["best"] + 0.05 * (data["table"]["worst"] - data["table"]["best"])
            assert compute_to(data, run, 0.05) == next((f for f, b in zip(run["flops"], run["best"]) if b <= bar), np.inf)
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


def test_the_defaults_are_random_search_with_asha_for_one_objective_and_fifo_for_several(space):
    """StudyRun's defaults: random search; ASHA for one objective, FIFO for several and for studies
    of named experiments (the pairing the replay measured best: bench/README.md, from
    `python bench/tabular.py replay --replot --out bench/tabular_replay_100.json`)."""
    from slm_tune.tune.study_run import StudyRun

    one = StudyRun(study="s", configs={space.base.name: space.base}, search=space)
    two = StudyRun(study="s", configs={space.base.name: space.base}, search=space,
                   objectives=("best_val_bpb", "params"))
    study = StudyRun(study="s", configs={space.base.name: space.base})
    assert (one.search_alg, one.scheduler, two.search_alg, two.scheduler, study.scheduler) == \
        ("random", "asha", "random", "fifo", "fifo")
    assert StudyRun(study="s", configs={}, search=space, scheduler="median").scheduler == "median"


def _made_up(single: dict) -> dict:
    """A replay's stored form for made-up searches on a made-up table: best 0.5, worst 2.5 bits per
    byte (regret 0.01 is 0.02 bpb), runs ending at regret 0, 0.005, 0.015, 0.05 and 1."""
    return {"table": {"runs": 5, "best": 0.5, "worst": 2.5, "total_flops": 1000.0, "seed_sd": [0.01],
                      "points": [[0.5, 1.0], [0.51, 1.0], [0.53, 1.0], [0.6, 1.0], [2.5, 1.0]]},
            "seeds": 20, "trials": 10, "single": single, "multi": {}}


def _reaching(flops: float | None) -> dict:
    """A search whose incumbent is the table's worst at 1 FLOP, then its best at `flops` (never: None)."""
    return {"flops": [1.0] + ([flops] if flops else []), "best": [2.5] + ([0.5] if flops else []), "spent": 0.0,
            "trials": 10}


def test_regret_and_compute_to_a_regret_by_hand():
    sys.path.insert(0, str(ROOT))
    from bench.tabular_report import compute_to, regret, within

    data = _made_up({})
    # (value - 0.5) / 2, capped at 1
    np.testing.assert_allclose(regret(data, [3.0, 2.5, 1.5, 0.52, 0.5]), [1.0, 1.0, 0.5, 0.01, 0.0])
    run = {"flops": [10.0, 20.0, 30.0, 40.0], "best": [2.5, 1.5, 0.53, 0.5]}  # regret 1, 0.5, 0.015, 0
    assert [compute_to(data, run, t) for t in (0.6, 0.05, 0.02, 0.01)] == [20.0, 30.0, 30.0, 40.0]
    assert compute_to(data, {"flops": [10.0], "best": [0.6]}, 0.01) == np.inf
    assert [within(data, t) for t in (0.01, 0.02, 0.05)] == [2, 3, 4]


def test_ratio_of_medians_says_never_instead_of_zero():
    """Where the reference's (resampled) median never got there there is no ratio: None, shown
    "ref never", not 0 (a / inf); where this pairing's never did, inf, shown "never"."""
    from scipy import stats

    sys.path.insert(0, str(ROOT))
    from bench.tabular_report import _times, ratio_interval

    assert ratio_interval([2.0] * 9, [4.0] * 9) == (0.5, 0.5, 0.5)
    assert ratio_interval([2.0] * 9, [np.inf] * 9) == (None, None, None)
    assert ratio_interval([np.inf] * 9, [4.0] * 9) == (np.inf, np.inf, np.inf)
    # the reference got there in 4 of 10 seeds: its median (the 5th smallest) is never; a resample's
    # is 1 when it draws 5 or more of the 4 (binomial, p 0.4), else never, which ranks lowest
    assert stats.binom.sf(4, 10, 0.4) > 0.025 and stats.binom.cdf(4, 10, 0.4) > 0.025
    assert ratio_interval([1.0] * 10, [1.0] * 4 + [np.inf] * 6) == (None, None, 1.0)
    assert [_times(x) for x in (None, float("nan"), np.inf, 0.4321)] == ["ref never", "ref never", "never", "0.43x"]


def test_the_figures_against_random_search_on_made_up_searches():
    """Twenty seeds per pairing that reach the best at known compute: the ratio of medians, the
    Mann-Whitney p-values (scipy) and Holm over the two comparisons written out here."""
    from scipy import stats

    sys.path.insert(0, str(ROOT))
    from bench.tabular_report import asha_against_fifo, on_the_best_run, single_table, summary

    ref, fast = list(range(100, 120)), list(range(10, 30))
    data = _made_up({"random+fifo": [_reaching(f) for f in ref], "random+asha": [_reaching(f) for f in fast],
                     "slow+fifo": [_reaching(None)] * 20})
    rows = single_table(data).set_index("pairing")
    for thr in (0.05, 0.02, 0.01):
        assert rows.loc["random+asha", f"ratio_{thr}"] == pytest.approx(19 / 109)  # 10th of 20 / 10th of 20
        assert rows.loc["random+asha", f"median_{thr}"] == pytest.approx(19 / 1000)
        p_fast = stats.mannwhitneyu(fast, ref).pvalue
        p_slow = stats.mannwhitneyu([1e300] * 20, ref).pvalue
        assert rows.loc["random+asha", f"p_{thr}"] == pytest.approx(p_fast)
        small, large = sorted([p_fast, p_slow])  # Holm over 2: the smaller x 2, the larger x 1 (not below it)
        holm = {small: min(1.0, 2 * small), large: max(min(1.0, 2 * small), large)}
        assert rows.loc["random+asha", f"p_holm_{thr}"] == pytest.approx(holm[p_fast])
        assert rows.loc["slow+fifo", f"p_holm_{thr}"] == pytest.approx(holm[p_slow])
        assert (rows.loc["random+asha", f"verdict_{thr}"], rows.loc["slow+fifo", f"verdict_{thr}"]) == ("better", "worse")
        assert rows.loc["slow+fifo", f"ratio_{thr}"] == np.inf and rows.loc["slow+fifo", f"reached_{thr}"] == 0
    assert on_the_best_run(data) == {"random+fifo": (20, 20), "random+asha": (20, 20), "slow+fifo": (0, 0)}
    assert asha_against_fifo(data) == {"random": (0, 0, 20)}
    # the reference never getting there: "ref never" where the ratio was 0
    never = _made_up({"random+fifo": [_reaching(None)] * 20, "random+asha": [_reaching(f) for f in fast]})
    assert "vs random ref never [ref never, ref never] better" in summary(never)
