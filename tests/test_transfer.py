"""`studies.py transfer`: a proxy search, its best settings trained at the target shape, the report
of what each found and spent; --resume skips finished stages; refusals in one line."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli
from test_search import TINY

SPACE = 'base = "optimal_fast"\nlearning_rate = { loguniform = [1e-3, 1e-2] }\nbatch_size = 4\n'
STEPS = ["--max-iters", "20", "--set", "eval_interval=10"]
MUP_GRID = ('base = "optimal_fast"\nlearning_rate = { grid = [3e-3, 1e-7] }\nbatch_size = 4\n'
            'parametrization = "mup"\nmup_base_width = 32\n')


def _results(out, prefix: str) -> dict[str, dict]:
    return {p.name.removesuffix("_results.json"): json.loads(p.read_text())
            for p in (out / "experiments").glob(f"{prefix}_*_results.json")}


def test_transfer_searches_the_proxy_trains_the_target_and_reports_what_each_spent(tmp_path, local_ray):
    """The proxy (muP, its base 32 wide, two heads) searched over a grid of two rates, one of which
    learns nothing, so ASHA stops it at its first rung; the target 64 wide with four heads, trained
    at two seeds; a study that tuned the target directly, its best configuration retrained at the
    same seeds for the verdict."""
    from scipy import stats

    from slm_tune.config import ExperimentConfig
    from slm_tune.model.counts import flops_per_token

    (tmp_path / "direct.toml").write_text(SPACE)
    direct = run_cli("search", "--space", str(tmp_path / "direct.toml"), "--num-samples", "1", "--seed", "3",
                     "--output-dir", str(tmp_path), *STEPS, *TINY, "--set", "n_embd=64", "--set", "n_head=4",
                     "--set", "seed=7")
    assert direct.returncode == 0, direct.stderr[-3000:]
    (tmp_path / "tiny.toml").write_text(MUP_GRID)
    args = ["transfer", "--space", str(tmp_path / "tiny.toml"), "--num-samples", "1", "--max-concurrent", "1",
            "--to", "n_embd=64", "--to", "n_head=4", "--repeats", "2", "--against", "direct",
            "--output-dir", str(tmp_path), *STEPS, *TINY]
    ran = run_cli(*args)
    assert ran.returncode == 0, ran.stderr[-3000:]
    report = json.loads((tmp_path / "experiments" / "transfer_tiny_report.json").read_text())
    trials = _results(tmp_path, "tiny")
    assert sorted(t["config"]["learning_rate"] for t in trials.values()) == [1e-7, 3e-3]
    stopped = [t for t in trials.values() if t["config"]["learning_rate"] == 1e-7]
    assert stopped[0]["iterations"] == 10  # ASHA stopped it at its first rung (10 of 20 iterations)
    best_name = min(trials, key=lambda n: trials[n]["best_val_bpb"])
    assert report["proxy"]["best_trial"] == best_name and trials[best_name]["config"]["learning_rate"] == 3e-3
    # each proxy trial counts the iterations it trained, as its own reports say (4 x 32 tokens each)
    proxy_flops = 0.0
    for name, t in trials.items():
        reports = [json.loads(line) for line in (tmp_path / "ray_results" / "tiny" / name / "result.json").open()]
        proxy_flops += flops_per_token(ExperimentConfig(**t["config"])) * reports[-1]["iteration"] * 4 * 32
    assert report["compute"]["proxy_flops"] == pytest.approx(proxy_flops)
    # the target: the best trial's settings at 64 wide with 4 heads, muP's base head size kept at the
    # proxy's (32 / 2 = 16): the scores' scale falls as sqrt(16) / head size 16, not sqrt(32 / 4) / 16
    target = json.loads((tmp_path / "experiments" / "transfer_tiny_results.json").read_text())
    target_config = ExperimentConfig(**target["config"])
    assert (target_config.n_embd, target_config.n_head, target_config.mup_base_head_size) == (64, 4, 16)
    assert (target_config.attention_scale or target_config.head_size ** -0.5) == pytest.approx(4 / 16)
    assert target_config.learning_rate == 3e-3 and target["runs"] == 2 and report["target_run"]["scored"] == 2
    assert report["compute"]["target_flops"] == pytest.approx(2 * flops_per_token(target_config) * 20 * 4 * 32)
    _check_against(tmp_path, report, target, stats)
    assert "proxy search tiny" in ran.stdout and "target transfer_tiny (n_embd=64, n_head=4)" in ran.stdout
    assert "seeds against seeds" in ran.stdout
    again = run_cli(*args, "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("finished before, kept as it is") == 3  # search, target, the retrained direct best
    assert json.loads((tmp_path / "experiments" / "transfer_tiny_report.json").read_text()) == report
    (tmp_path / "experiments" / "search_tiny_best.toml").unlink()  # a proxy search without a stored best
    lost = run_cli(*args, "--resume")
    assert lost.returncode == 2 and "search tiny stored no best trial" in lost.stderr.splitlines()[-1], lost.stderr


def _check_against(out, report: dict, target: dict, stats) -> None:
    """--against: the direct study's best configuration retrained at the target's seeds, and Welch on
    the two sets of seeds (scipy's own, computed here), its search's FLOPs as the yardstick."""
    direct = _results(out, "direct")
    best = min(direct.values(), key=lambda t: t["best_val_bpb"])
    retrained = json.loads((out / "experiments" / "transfer_tiny_vs_direct_results.json").read_text())
    same = lambda c: {k: v for k, v in c.items() if k not in ("name", "description", "seed")}  # noqa: E731
    assert same(retrained["config"]) == same(best["config"])
    assert sorted(r["seed"] for r in retrained["per_run"]) == sorted(r["seed"] for r in target["per_run"]) == [1337, 1338]
    a = report["against"]
    last = lambda name: json.loads((out / "ray_results" / "direct" / name / "result.json").read_text().splitlines()[-1])  # noqa: E731
    assert a["flops"] == pytest.approx(sum(last(name)["train_flops"] for name in direct))
    # what the transfer costs is its search and one target run: further seeds measure it
    one_target_run = report["compute"]["target_flops"] / 2
    assert a["compute_share"] == pytest.approx((report["compute"]["proxy_flops"] + one_target_run) / a["flops"])
    mine = [r["best_val_bpb"] for r in target["per_run"]]
    theirs = [r["best_val_bpb"] for r in retrained["per_run"]]
    welch = stats.ttest_ind(mine, theirs, equal_var=False)
    assert a["diff"] == pytest.approx(sum(mine) / 2 - sum(theirs) / 2)
    assert (a["lo"], a["hi"], a["p"]) == pytest.approx((*welch.confidence_interval(0.95), welch.pvalue))


def test_against_a_study_that_is_not_stored_is_refused_before_anything_runs(tmp_path):
    (tmp_path / "tiny.toml").write_text(SPACE)
    ran = run_cli("transfer", "--space", str(tmp_path / "tiny.toml"), "--to", "n_embd=64", "--against", "nosuch",
                  "--output-dir", str(tmp_path / "out"), *STEPS, *TINY)
    assert ran.returncode == 2 and "--against 'nosuch': no finished trial" in ran.stderr, ran.stderr
    assert len(ran.stderr.strip().splitlines()) == 1 and not (tmp_path / "out" / "ray_results").exists()


@pytest.mark.parametrize("to,said", [
    ("n_embd=16", "narrower than the proxy"),
    ("learning_rate=1e-3", "the search searches it"),
    ("n_embd=33", "n_embd"),
    ("width=64", "is not a setting"),
    ("depth_parametrization=deep", "depth_parametrization"),
])
def test_a_target_that_is_not_a_larger_model_is_refused_in_one_line(tmp_path, to, said):
    (tmp_path / "tiny.toml").write_text(SPACE)
    ran = run_cli("transfer", "--space", str(tmp_path / "tiny.toml"), "--to", to, "--output-dir", str(tmp_path / "out"),
                  *STEPS, *TINY)
    assert ran.returncode == 2 and said in ran.stderr, ran.stderr
    assert len(ran.stderr.strip().splitlines()) == 1 and "Traceback" not in ran.stderr
    assert not (tmp_path / "out" / "ray_results").exists()


def test_a_target_narrower_than_mups_base_is_refused(tmp_path):
    (tmp_path / "mup.toml").write_text(SPACE + "parametrization = \"mup\"\nmup_base_width = 32\n")
    ran = run_cli("transfer", "--space", str(tmp_path / "mup.toml"), "--to", "n_layer=6", "--set", "mup_base_width=64",
                  "--output-dir", str(tmp_path / "out"), *STEPS, *TINY)
    assert ran.returncode == 2 and "narrower than muP's base width (64)" in ran.stderr, ran.stderr


def test_a_fixed_mlp_width_under_mup_is_refused_before_anything_runs(tmp_path):
    (tmp_path / "mup.toml").write_text(SPACE + "parametrization = \"mup\"\nmup_base_width = 32\nmlp_hidden = 96\n")
    ran = run_cli("transfer", "--space", str(tmp_path / "mup.toml"), "--to", "n_embd=64",
                  "--output-dir", str(tmp_path / "out"), *STEPS, *TINY)
    assert ran.returncode == 2 and "mlp_hidden=96 is invalid: is a fixed size" in ran.stderr, ran.stderr
    assert len(ran.stderr.strip().splitlines()) == 1 and not (tmp_path / "out" / "ray_results").exists()
