"""`studies.py transfer`: a proxy search, its best settings trained at the target shape, the report
of what each found and spent; --resume skips finished stages; refusals in one line."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli
from test_search import TINY

SPACE = 'base = "optimal_fast"\nlearning_rate = { loguniform = [1e-3, 1e-2] }\nbatch_size = 4\n'
STEPS = ["--max-iters", "20", "--set", "eval_interval=10"]


def test_transfer_searches_the_proxy_trains_the_target_and_reports_what_each_spent(tmp_path, local_ray):
    from slm_tune.config import ExperimentConfig
    from slm_tune.model.counts import flops_per_token

    (tmp_path / "tiny.toml").write_text(SPACE)
    args = ["transfer", "--space", str(tmp_path / "tiny.toml"), "--num-samples", "2", "--seed", "3",
            "--to", "n_embd=64", "--repeats", "2", "--output-dir", str(tmp_path), *STEPS, *TINY]
    ran = run_cli(*args)
    assert ran.returncode == 0, ran.stderr[-3000:]
    report = json.loads((tmp_path / "experiments" / "transfer_tiny_report.json").read_text())
    trials = {p.name.removesuffix("_results.json"): json.loads(p.read_text())
              for p in (tmp_path / "experiments").glob("tiny_*_results.json")}
    assert len(trials) == 2
    best_name = min(trials, key=lambda n: trials[n]["best_val_bpb"])
    assert report["proxy"]["best_trial"] == best_name
    assert report["proxy"]["best_val_bpb"] == pytest.approx(trials[best_name]["best_val_bpb"])
    # the target is the best trial's settings at the target width, trained twice (seeds 1337, 1338)
    target = json.loads((tmp_path / "experiments" / "transfer_tiny_results.json").read_text())
    best_config = ExperimentConfig(**trials[best_name]["config"])
    target_config = best_config.replace(name="transfer_tiny", n_embd=64)
    assert {k: v for k, v in target["config"].items() if k not in ("name", "description", "seed")} == \
        {k: v for k, v in target_config.to_dict().items() if k not in ("name", "description", "seed")}
    assert report["target_run"]["finished"] == 2
    assert target["runs"] == 2
    assert sorted(report["target_run"]["runs_best_val_bpb"]) == pytest.approx(sorted(r["best_val_bpb"] for r in target["per_run"]))
    tokens = 4 * 32  # per iteration; the proxy's trials count what they trained (ASHA, the default, stops some)
    assert report["compute"]["proxy_flops"] == pytest.approx(
        sum(flops_per_token(ExperimentConfig(**t["config"])) * t["iterations"] * tokens for t in trials.values()))
    assert report["compute"]["target_flops"] == pytest.approx(2 * flops_per_token(target_config) * 20 * tokens)
    assert "proxy search tiny" in ran.stdout and "target transfer_tiny (n_embd=64)" in ran.stdout
    again = run_cli(*args, "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("finished before, kept as it is") == 2
    assert json.loads((tmp_path / "experiments" / "transfer_tiny_report.json").read_text()) == report
    (tmp_path / "experiments" / "search_tiny_best.toml").unlink()  # a proxy search without a stored best
    lost = run_cli(*args, "--resume")
    assert lost.returncode == 2 and "search tiny stored no best trial" in lost.stderr.splitlines()[-1], lost.stderr


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
