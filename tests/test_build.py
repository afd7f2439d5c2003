"""`studies.py build`: a tiny build SIGKILLed in each of its stages and resumed each time, then
checked end to end (its report, model, export and sample, its FLOPs against the stages' own
trials, its choice against the fitted law); the choice against a law worked out by hand; the
refusals."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_DATASET, _lines, kill_study, run_cli, start_study
from test_bench import _bench
from test_study import ENV

TINY = ["--set", "n_embd=32", "--set", "n_head=2", "--set", "n_layer=1", "--set", "mup_base_width=32",
        "--set", "block_size=16", "--set", "batch_size=2", "--set", "eval_iters=2", "--set", "precision=float32",
        "--set", "compile=false", "--set", "vocab_size=1000", "--set", "log_interval=0", "--dataset", TINY_DATASET]
BUILD = ["build", "--budget", "6e9", "--num-samples", "2", "--min-iters", "5", "--shares", "0.1,0.45", "--seed", "1",
         "--horizon-exponent", "0.45",
         "--max-concurrent", "1", *TINY]
STAGES = ("build_search", "build_sweep", "build_target")


def _flops(out: Path, study: str) -> float:
    """The study's training FLOPs as its trials last reported them (each trial's own result.json)."""
    return sum(_lines(p)[-1]["train_flops"] for p in (out / "ray_results" / study).glob("*/result.json"))


def _check_report(out: Path) -> dict:
    report = json.loads((out / "experiments" / "build_report.json").read_text())
    spent = report["spent"]
    for key, study in zip(("search", "sweep", "target"), STAGES):
        assert spent[key] == pytest.approx(_flops(out, study)), key
    budget = report["budget"]
    assert spent["sweep"] <= 0.45 * budget and spent["total"] <= budget
    # the target takes the compute left in whole iterations: less than one of its iterations is unspent
    shape = report["choice"]["shape"]
    per_iter = spent["target"] / shape["max_iters"]
    assert budget - spent["total"] < per_iter
    if report["choice"]["how"] == "fit":  # the candidate the fitted law, written out here, predicts lowest
        p = report["fit"]["params"]
        law = {(r["n_layer"], r["n_embd"]): p["E"] + p["A"] * r["N"] ** -p["alpha"] + p["B"] * r["D"] ** -p["beta"]
               for r in report["choice"]["candidates"]}
        assert min(law, key=law.get) == (shape["n_layer"], shape["n_embd"])
        assert report["choice"]["predicted"] == pytest.approx(min(law.values()))
        assert math.isfinite(report["measured"]["prediction_error"])
    else:  # the fit refused: said so, and the target is one of the sweep's sizes (at its largest: said too)
        assert report["choice"]["how"].startswith("fallback: ") and report["choice"]["fit_refused"]
        sizes = {(c["n_layer"], c["n_embd"]) for c in _sweep_configs(out)}
        assert (shape["n_layer"], shape["n_embd"]) in sizes and report["choice"]["predicted"] is None
        from workflows.build import EDGE

        measured = [r["config"] for r in _sweep_results(out) if r["status"] == "finished"]
        largest = shape["non_embedding_params"] >= max(_non_embedding(c) for c in measured)
        assert (EDGE in report["choice"]["how"]) is largest, (report["choice"]["how"], shape)
    assert report["measured"]["runs"]
    proxy, beta = report["proxy"], report["proxy"]["horizon_exponent"]
    searched = [json.loads(p.read_text()) for p in (out / "experiments").glob("build_search_*_results.json")]
    best = min((r for r in searched if r["status"] == "finished"), key=lambda r: r["best_val_bpb"])
    assert proxy["best_learning_rate"] == best["config"]["learning_rate"] and beta == 0.45  # as BUILD gives it
    assert shape["max_iters"] > proxy["max_iters"]  # the target is longer than the search's trials: its rate moved
    for c in [shape, *_sweep_configs(out)]:  # every run at the search's best rate moved to its length
        longer = max(1, c["max_iters"] / proxy["max_iters"])
        assert c["learning_rate"] == pytest.approx(proxy["best_learning_rate"] * longer ** -beta)
    assert (out / "best_model_build_target.pt").is_file() and (out / "experiments" / "build_report.png").is_file()
    assert (Path(report["export"]["path"]) / "config.json").is_file() and report["sample"]
    from analysis.build_report import report_text  # the printed report says where the export went, or why none

    assert report_text(report).splitlines()[-1] == f"export: {report['export']['path']}"
    why = "export needs the hf extra (safetensors is not installed)"
    assert report_text({**report, "export": {"path": None, "why": why}}).endswith(f"export: not written ({why})")
    simple = {"baseline": {"mean": 0.5, "verdict": "better", "shape": {"n_layer": 6, "n_embd": 384, "max_iters": 9},
                           "no_figure": {"build": 0, "baseline": 1}}}
    assert report_text({**report, "simple": simple}).splitlines()[-2].endswith(
        "better (runs with no figure left out, diverged before their first evaluation: baseline 1)")
    return report


def _sweep_results(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "experiments").glob("build_sweep_*_results.json"))]


def _sweep_configs(out: Path) -> list[dict]:
    return [r["config"] for r in _sweep_results(out)]


def _non_embedding(config: dict) -> int:
    from slm_tune.config import ExperimentConfig
    from slm_tune.model.counts import param_counts

    return param_counts(ExperimentConfig(**config))[1]


def test_the_target_is_the_shape_a_law_predicts_lowest_for_the_compute_left():
    """choose_target against a law whose optimum is worked out here: with beta > alpha the data term
    falls faster, so the compute goes to a larger model; every candidate costs at most the compute."""
    from slm_tune.config import ExperimentConfig
    from slm_tune.model.counts import flops_per_token, param_counts, tokens_per_iter
    from workflows.build_plan import candidates, choose_target

    proxy = ExperimentConfig(n_embd=32, n_head=2, n_layer=1, vocab_size=1000, block_size=16, batch_size=2,
                             parametrization="mup", mup_base_width=32)
    params = {"E": 0.5, "A": 40.0, "alpha": 0.35, "B": 300.0, "beta": 0.4}
    law = lambda n, d: params["E"] + params["A"] * n ** -params["alpha"] + params["B"] * d ** -params["beta"]  # noqa: E731
    flops = 5e11
    choice = choose_target(proxy, flops, law, lambda n, d: (law(n, d) - 0.01, law(n, d) + 0.01), min_iters=5)
    # the shapes, parameters and tokens worked out here: GPT-2 blocks of width d (biases, tied head,
    # learned positions), L layers, vocabulary 1000, 2 x 16 tokens a step
    by_hand = {}
    for layers in (1, 2, 3, 4):
        for d in range(32, 32 * 16 + 1, 32):
            n = layers * (12 * d * d + 13 * d) + 2 * d  # non-embedding: 4d^2+4d, 8d^2+5d, two norms 4d; final norm
            per_token = 6 * (layers * 12 * d * d + 1000 * d) + 12 * layers * d * 16  # matmuls, head, attention
            steps = int(flops // (per_token * 32))
            if steps >= 5:
                by_hand[(layers, d)] = law(n, steps * 32)
    weighed = {(c.n_layer, c.n_embd): c for c in candidates(proxy, flops, 5)}
    assert set(weighed) == set(by_hand)
    for c in weighed.values():  # each spends the compute in whole iterations, never more
        per_step = flops_per_token(c) * tokens_per_iter(c)
        assert flops - per_step < per_step * c.max_iters <= flops and param_counts(c)[1] > 0
    assert (choice.config.n_layer, choice.config.n_embd) == min(by_hand, key=by_hand.get) != (1, 32)
    assert choice.predicted == pytest.approx(min(by_hand.values())) and choice.how == "fit"
    assert choice.config.depth_parametrization == "depth_mup" and choice.config.base_depth == 1
    assert choice.config.mup_base_head_size == 16 and choice.config.n_embd // choice.config.n_head == 16


def test_the_sweep_and_the_target_take_the_searchs_rate_moved_to_their_length():
    """Bjorck et al. (ICLR 2025): the best rate falls with training length as LR*(D) = B D^-beta, at a
    fixed batch. Each sweep run and the target (chosen by a law or by the fallback) longer than the
    search's trials trains at the search's rate x (its iterations / the search's)^-beta; a shorter
    one, and every run with beta 0, at the search's rate."""
    from slm_tune.config import ExperimentConfig
    from workflows.build_plan import Shares, choose_target, sweep_configs

    best = ExperimentConfig(n_embd=32, n_head=2, n_layer=1, vocab_size=1000, block_size=16, batch_size=2,
                            parametrization="mup", mup_base_width=32, learning_rate=0.02, max_iters=100)
    law = lambda n, d: 0.5 + 40 * n ** -0.35 + 300 * d ** -0.4  # noqa: E731
    for beta in (0.0, 0.5):
        sweep = sweep_configs(best, 1e11, Shares(0.1, 0.2), beta)  # 86, 173 and 347 iterations
        assert {c.max_iters > 100 for c in sweep.values()} == {True, False}  # runs on both sides of the search's
        for c in sweep.values():
            assert c.learning_rate == pytest.approx(0.02 * (c.max_iters / 100) ** -beta if c.max_iters > 100 else 0.02)
        by_law = choose_target(best, 5e11, law, None, min_iters=5, exponent=beta).config
        fallback = choose_target(best, 5e11, None, None, sweep["build_sweep_s2_4"], "refused", 5, beta).config
        for c in (by_law, fallback):
            assert c.max_iters > 100 and c.learning_rate == pytest.approx(0.02 * (c.max_iters / 100) ** -beta)
    assert by_law.learning_rate < 0.02 / 2  # 0.5: a run 4 x longer than the search's or more halves the rate


def test_the_fallback_says_when_its_size_is_the_largest_the_sweep_trained():
    """The fallback takes the size whose longest sweep run ended lowest; when that is the sweep's
    largest size, the sweep cannot rule out a larger one, and the choice says so."""
    import dataclasses

    import pandas as pd

    from slm_tune.config import ExperimentConfig
    from workflows.build import _best_sweep_size, _largest_of_sweep
    from workflows.build_plan import Shares, sweep_configs

    best = ExperimentConfig(n_embd=32, n_head=2, n_layer=1, vocab_size=1000, block_size=16, batch_size=2,
                            parametrization="mup", mup_base_width=32, learning_rate=0.02, max_iters=100)
    sweep = sweep_configs(best, 1e11, Shares(0.1, 0.2))
    shape = {name: (c.n_layer, c.n_embd) for name, c in sweep.items()}
    assert len({shape[f"build_sweep_s{i}_1"] for i in (1, 2, 3)}) == 3  # 1 x 16, 1 x 32, 2 x 48
    # (lowest size, the size whose runs errored, the edge): a size the sweep did not measure does not count
    for lowest, failed, edge in (("s3", None, True), ("s2", None, False), ("s1", None, False), ("s2", "s3", True)):
        frame = pd.DataFrame([{"experiment": name, "status": "error" if f"_{failed}_" in name else "finished",
                               "iterations": c.max_iters,
                               "best_val_bpb_context": 1.0 - 0.1 * (f"_{lowest}_" in name) - c.max_iters / 1e4,
                               "config": dataclasses.asdict(c)} for name, c in sweep.items()])
        chosen = _best_sweep_size(frame)
        assert (chosen.n_layer, chosen.n_embd) == shape[f"build_sweep_{lowest}_4"]
        assert _largest_of_sweep(chosen, frame) is edge, (lowest, failed)


def test_by_default_every_run_keeps_the_searchs_rate_and_old_plans_resume_at_it():
    """The rule is off by default (it hurt out of sample: docs/bench/horizon-rate.md): the sweep and
    the target train at the search's rate; a plan stored before the rule existed counts as 0."""
    from slm_tune.config import ExperimentConfig
    from workflows.build import plan_changes
    from workflows.build_plan import Shares, choose_target, sweep_configs

    best = ExperimentConfig(n_embd=32, n_head=2, n_layer=1, vocab_size=1000, block_size=16, batch_size=2,
                            parametrization="mup", mup_base_width=32, learning_rate=0.02, max_iters=100)
    runs = [*sweep_configs(best, 1e11, Shares(0.1, 0.2)).values(),
            choose_target(best, 5e11, lambda n, d: 1 + n ** -0.3 + d ** -0.3, None, min_iters=5).config]
    assert max(c.max_iters for c in runs) > 100 and {c.learning_rate for c in runs} == {0.02}
    old = {"budget": 1e9}  # no horizon_exponent, no sweep: stored before the rule and the budget-grown sweep
    assert plan_changes(old, {"budget": 1e9, "horizon_exponent": 0.0, "sweep": "fixed"}) == []
    assert plan_changes(old, {"budget": 1e9, "horizon_exponent": 0.45, "sweep": "budget"}) == ["horizon_exponent",
                                                                                               "sweep"]


def _by_hand(layers: int, d: int, vocab: int = 2000, block: int = 128) -> tuple[int, int]:
    """A GPT-2 block stack's non-embedding parameters and training FLOPs a token, written out here:
    per layer 4d^2+4d (attention), 8d^2+5d (MLP), two norms 4d; a final norm 2d; 6 x (matmul
    weights + the tied head) plus attention's 12 x layers x d x block."""
    return layers * (12 * d * d + 13 * d) + 2 * d, 6 * (layers * 12 * d * d + vocab * d) + 12 * layers * d * block


def test_the_budget_sweep_spans_the_fit_s_10x_around_the_size_the_compute_left_suits():
    """The default sweep: the size the target's compute (70%) trains at about 20 tokens a parameter,
    the largest at least 12x smaller, and one halfway between on a log scale, grown or shrunk from
    the proxy in width and depth together; its sizes grow with the budget while the fixed sweep's
    stay 1, 4, 8 x the proxy; the smallest budget it needs is exact."""
    from slm_tune.config import ExperimentConfig
    from slm_tune.errors import UserError
    from workflows.build_plan import Shares, check_budget, proxy_for, smallest_budget, sweep_configs, sweep_sizes

    proxy = ExperimentConfig(n_embd=32, n_head=4, n_layer=2, vocab_size=2000, block_size=128, batch_size=16,
                             parametrization="mup", mup_base_width=32)  # bench/build.py's proxy
    tops = []
    for budget in (1e13, 3e13, 1e14, 1e15):
        sizes = dict(sweep_sizes(proxy, budget, Shares()))
        n = {k: _by_hand(c.n_layer, c.n_embd)[0] for k, c in sizes.items()}
        assert 12 <= n["s3"] / n["s1"] < 24 and n["s1"] < n["s2"] < n["s3"]
        assert 0.6 < n["s2"] / (n["s1"] * n["s3"]) ** 0.5 < 1.6  # halfway on a log scale, within a ladder step
        tokens = 0.7 * budget / _by_hand(sizes["s3"].n_layer, sizes["s3"].n_embd)[1]
        assert 14 < tokens / n["s3"] < 29, (budget, tokens / n["s3"])  # about 20, within a ladder step
        assert {c.n_embd // c.n_head for c in sizes.values()} == {8}  # the proxy's head size
        tops.append(n["s3"])
        fixed = [_by_hand(c.n_layer, c.n_embd)[0] for _, c in sweep_sizes(proxy, budget, Shares(), "fixed")]
        assert fixed == [_by_hand(2, 32)[0], _by_hand(2, 64)[0], _by_hand(4, 64)[0]]
    assert tops == sorted(tops) and tops[-1] > 4 * tops[0]  # 1e13 to 1e15: the sweep grows with the budget
    for design in ("budget", "fixed"):  # at --min-iters 75 the sweep, not the search, sets the least budget
        works = lambda b: (min(c.max_iters for c in sweep_configs(proxy, b, Shares(), design=design).values()) >= 75  # noqa: E731
                           and proxy_for(proxy, b, Shares()).max_iters >= 150)
        least = smallest_budget(proxy, Shares(), 75, 64, design)
        assert works(least * 1.001) and not any(works(least * f) for f in np.geomspace(0.3, 0.999, 60))
        for b in np.geomspace(least * 1.001, least * 3, 120):  # the check agrees with the plan at every budget
            if works(b):
                check_budget(proxy, b, Shares(), 75, 64, design)
                continue
            with pytest.raises(UserError) as refused:
                check_budget(proxy, b, Shares(), 75, 64, design)
            suggested = float(str(refused.value).split("give --budget ")[1].split()[0])
            assert works(suggested) and suggested > b, str(refused.value)
        for min_iters in (32, 45, 75):  # the smallest the refusal names works, rounded as it is shown
            with pytest.raises(UserError, match="too small") as refused:
                check_budget(proxy, smallest_budget(proxy, Shares(), min_iters, 64, design) * 0.97, Shares(),
                             min_iters, 64, design)
            named = float(str(refused.value).split("the smallest that works is ")[1].split()[0])
            check_budget(proxy, named, Shares(), min_iters, 64, design)


@pytest.mark.parametrize("shape", [dict(n_layer=1, n_embd=64, n_head=1), dict(n_layer=12, n_embd=64, n_head=4),
                                   dict(n_layer=2, n_embd=48, n_head=3, parametrization="sp")])
def test_the_budget_sweep_gives_three_sizes_12x_apart_for_odd_proxies(shape):
    """One head, a depth past the ladder's cap, sp with an odd head count: three distinct sizes,
    smallest first, the largest at least 12x the smallest, at every budget from 1e13 to 1e16."""
    from slm_tune.config import ExperimentConfig
    from workflows.build_plan import Shares, sweep_sizes

    proxy = ExperimentConfig(vocab_size=2000, block_size=128, batch_size=16, mup_base_width=shape["n_embd"],
                             **{"parametrization": "mup", **shape})
    for budget in np.geomspace(1e13, 1e16, 13):
        n = [_by_hand(c.n_layer, c.n_embd)[0] for _, c in sweep_sizes(proxy, budget, Shares())]
        assert n[0] < n[1] < n[2] and n[2] >= 12 * n[0], (budget, n)


def _wait_for_reports(out: Path, study: str, proc, reports: int = 1) -> None:
    deadline = time.time() + 300
    while time.time() < deadline:
        if any(len(_lines(p)) >= reports for p in (out / "ray_results" / study).glob("*/result.json")):
            return
        if proc.poll() is not None:
            pytest.fail(f"the build ended before {study} could be interrupted: {proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    pytest.fail(f"{study} did not report in time")


def test_a_build_killed_in_each_stage_resumes_without_repeating_a_finished_stage(tmp_path):
    args = [*BUILD, "--output-dir", str(tmp_path)]
    done: dict[str, dict[str, int]] = {}
    for number, study in enumerate(STAGES):
        proc = start_study([*args, *(["--resume"] if number else [])], ENV)
        try:
            _wait_for_reports(tmp_path, study, proc)
        finally:
            kill_study(proc)
        for earlier in STAGES[:number]:  # a finished stage: nothing of it ran again
            now = {p.parent.name: len(_lines(p)) for p in (tmp_path / "ray_results" / earlier).glob("*/result.json")}
            assert now == done.setdefault(earlier, now), earlier
        if number:
            out = proc.stderr.read()
            assert all(f"{s}: finished before, kept as it is" in out for s in STAGES[:number - 1]), out[-3000:]
    finished = start_study([*args, "--resume"], ENV)
    out, err = finished.communicate(timeout=600)
    assert finished.returncode == 0, err[-3000:]
    assert all(f"{s}: finished before, kept as it is" in err for s in STAGES[:2])
    assert "build stage 1 (search)" in err and "build stage 3 (target)" in err and "chosen by" in out
    for earlier in STAGES[:2]:
        now = {p.parent.name: len(_lines(p)) for p in (tmp_path / "ray_results" / earlier).glob("*/result.json")}
        assert now == done.setdefault(earlier, now), earlier
    report = _check_report(tmp_path)
    assert f"{report['choice']['shape']['n_embd']} wide" in out
    shape = report["choice"]["shape"]  # bench/build_extrapolate.py reads a real build's files
    lines = _bench("build_extrapolate").report(tmp_path)
    assert f"the build chose {shape['n_layer']}x{shape['n_embd']}" in lines[0]
    assert sum("would choose" in line for line in lines) == 3 and len(lines) == 1 + 3 + 3
    assert lines[-1].startswith("  the law (") and "% of the measured" in lines[-1]
    # the chosen size's tokens for the compute left: what the target itself trained, in whole iterations,
    # so less than one iteration's tokens more (the script prints 3 significant figures)
    line = next(line for line in lines[1:4] if f" {shape['n_layer']}x{shape['n_embd']} " in line)
    printed, per_iter = float(line.split("-> ")[1].split(" tokens")[0]), shape["tokens"] / shape["max_iters"]
    assert shape["tokens"] * 0.995 <= printed < (shape["tokens"] + per_iter) * 1.005, (printed, shape)
    _check_shape_probe(tmp_path, shape)
    other = run_cli(*args, "--resume", "--budget", "9e9")
    assert other.returncode == 2 and "was started with other budget" in other.stderr, other.stderr
    other = run_cli(*args, "--resume", "--budget", "1e6")  # the stored plan is checked first: too small for a new build
    assert other.returncode == 2 and "was started with other budget" in other.stderr, other.stderr
    other = run_cli(*args, "--resume", "--horizon-exponent", "0.1")
    assert other.returncode == 2 and "was started with other horizon_exponent" in other.stderr, other.stderr
    plan = tmp_path / "experiments" / "build_plan.json"  # a build started before the rule and the grown sweep
    stored = json.loads(plan.read_text())
    assert stored["sweep"] == "budget" and json.loads((tmp_path / "experiments" / "build_report.json").read_text())[
        "proxy"]["sweep_design"] == "budget"
    plan.write_text(json.dumps({k: v for k, v in stored.items() if k not in ("horizon_exponent", "sweep")}))
    other = run_cli(*args, "--resume")  # BUILD's 0.45 and budget sweep against the stored plan's 0 and fixed sweep
    assert other.returncode == 2 and "same options (--horizon-exponent 0 --sweep fixed)" in other.stderr, other.stderr
    plan.write_text(json.dumps(stored))
    # --resume --repeats 2 on the finished one-seed build: the target's second seed, nothing else trained again
    more = run_cli(*args, "--resume", "--repeats", "2")
    assert more.returncode == 0, more.stderr[-3000:]
    assert "adding seed(s) 1338 to study 'build_target' (1 stored)" in more.stderr, more.stderr[-3000:]
    assert all(f"{s}: finished before, kept as it is" in more.stderr for s in STAGES[:2])
    grown = json.loads((tmp_path / "experiments" / "build_report.json").read_text())
    assert len(grown["measured"]["best_val_bpb_runs"]) == 2 and grown["choice"]["shape"] == report["choice"]["shape"]
    assert grown["spent"]["target"] == pytest.approx(report["spent"]["target"])  # per seed: one seed's FLOPs


@pytest.mark.parametrize("extra,said", [
    (["--budget", "1e6"], "is too small for a build at this proxy"),
    (["--budget", "1e6", "--resume"], "is too small for a build at this proxy"),  # nothing to resume: a new build
    (["--max-iters", "10"], "--max-iters does not apply"),
    (["--shares", "0.5,0.6"], "must be positive and leave some of the budget"),
    (["--set", "widht=3"], "'widht' is not a setting"),
    (["--dataset", "no/such/corpus.txt"], "is not storyworld"),
    (["--space", "no_such_space.toml"], "no_such_space.toml"),
    (["--horizon-exponent", "5"], "must be between 0 and 2"),
    (["--sweep", "wide"], "invalid choice: 'wide'"),
])
def test_a_build_that_cannot_run_is_refused_in_one_line(tmp_path, extra, said):
    ran = run_cli(*BUILD, "--output-dir", str(tmp_path / "out"), *extra)
    assert ran.returncode == 2 and said in ran.stderr, ran.stderr
    assert len(ran.stderr.strip().splitlines()) == 1 and not (tmp_path / "out" / "ray_results").exists()


def _check_shape_probe(out, shape):
    """bench/build_shape_probe.py reads a real build's files: at the target's own shape it gives the
    target's own run (its stored config), and at another shape it spends the compute the build left
    its target, to within one iteration."""
    from slm_tune.config import ExperimentConfig
    from slm_tune.model.counts import flops_per_token, tokens_per_iter

    probe = _bench("build_shape_probe")
    stored = json.loads((out / "experiments" / "build_target_results.json").read_text())["config"]
    same, left = probe.probe_config(out, shape["n_layer"], shape["n_embd"], stored["seed"])
    assert same.replace(name=stored["name"], description=stored["description"]) == ExperimentConfig(**stored)
    other, _ = probe.probe_config(out, shape["n_layer"] + 1, 2 * shape["n_embd"], 7)
    per_iter = flops_per_token(other) * tokens_per_iter(other)
    assert left - per_iter < other.max_iters * per_iter <= left and other.seed == 7
    # its rate: the search's best moved to the probe's own length by the build's rule (BUILD: 0.45)
    proxy = json.loads((out / "experiments" / "build_report.json").read_text())["proxy"]
    moved = proxy["best_learning_rate"] * max(1.0, other.max_iters / proxy["max_iters"]) ** -0.45
    assert other.max_iters != shape["max_iters"] and other.learning_rate == pytest.approx(moved)
