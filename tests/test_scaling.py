"""Scaling-law fits: recovery of a known law, held-out prediction, bad input, the study end to end."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from analysis.scaling import ScalingRuns, fit_scaling, format_fit, law, scaling_runs
from search_spaces.scaling import SIZES
from slm_tune.errors import UserError
from conftest import TINY_DATASET, run_cli

TRUE = {"E": 0.186, "A": 60.0, "alpha": 0.34, "B": 400.0, "beta": 0.28}


def _synthetic(noise: float = 0.01, seed: int = 0, sizes=(5e4, 2e5, 4e5, 1.3e6, 3.2e6),
               budgets=(1.2e6, 2.5e6, 4.9e6)) -> ScalingRuns:
    rng = np.random.default_rng(seed)
    rows = []
    for n in sizes:
        for d in budgets:
            loss = float(law(TRUE, n, d)) * math.exp(rng.normal(0, noise))
            rows.append({"experiment": f"n{n:.0e}_d{d:.0e}", "N": n, "D": d, "L": loss, "C": 6 * n * d})
    return ScalingRuns(pd.DataFrame(rows), entropy=TRUE["E"], dataset="synthetic", tokenizer="gpt2-2000")


def test_fit_recovers_a_known_law_from_noisy_runs():
    fit = fit_scaling(_synthetic(noise=0.01), bootstrap=60)
    assert fit.fixed_E and fit.params["E"] == TRUE["E"]
    for key in ("alpha", "beta"):
        assert fit.params[key] == pytest.approx(TRUE[key], abs=0.08), key
        lo, hi = fit.intervals[key]
        assert lo <= fit.params[key] <= hi
    # the law itself, where the runs are, is recovered to well within the noise
    t = fit.runs.table
    truth = law(TRUE, t["N"], t["D"])
    assert np.max(np.abs(fit.predict(t["N"], t["D"]) / truth - 1)) < 0.02
    # with E unknown it is fitted too: it stays below every run and the law still fits them, but
    # E trades off against A and alpha over such ranges (why a known floor matters)
    free = fit_scaling(ScalingRuns(t, entropy=None), bootstrap=0, hold_out=False)
    assert not free.fixed_E and 0 <= free.params["E"] < t["L"].min()
    assert np.max(np.abs(free.predict(t["N"], t["D"]) / t["L"] - 1)) < 0.03


def test_held_out_largest_model_and_budget_prediction():
    fit = fit_scaling(_synthetic(noise=0.005), bootstrap=40)
    h = fit.held_out
    assert h["model_N"] == 3.2e6 and len(h["runs"]) == 3
    assert abs(h["error_bpb"]) < 0.02 and h["error_share_of_gap"] < 0.1
    b = fit.budget(1e15)
    assert b["N"] * b["D"] * 6 == pytest.approx(1e15)
    # the optimum is a minimum of the law along C = 6ND
    for factor in (0.5, 2.0):
        n = b["N"] * factor
        assert law(fit.params, n, 1e15 / (6 * n)) > b["L"]
    assert b["L_interval"][0] <= b["L"] <= b["L_interval"][1]
    text = format_fit(fit, b)
    assert "fixed: the corpus's entropy" in text and "held out" in text and "budget C = 1e+15" in text


def _trials(**changes) -> pd.DataFrame:
    rows = []
    for i, n in enumerate((5e4, 2e5, 4e5)):
        for iters in (100, 200):
            rows.append({"experiment": f"s{i}_{iters}", "best_val_bpb": float(law(TRUE, n, iters * 2048)),
                         "non_embedding_params": n, "iterations": iters, "entropy_bpb": TRUE["E"],
                         "dataset": "storyworld", "tokenizer": "gpt2-2000",
                         "config": {"batch_size": 16, "block_size": 128}})
    df = pd.DataFrame(rows)
    for key, value in changes.items():
        df.loc[0, key] = value
    return df


@pytest.mark.parametrize("changes,message", [
    ({"tokenizer": "gpt2-10000"}, "mix vocabularies"),
    ({"dataset": "tinystories"}, "mix corpora"),
])
def test_mixed_runs_are_refused(changes, message):
    with pytest.raises(UserError, match=message):
        scaling_runs(_trials(**changes))


def test_non_finite_losses_are_left_out_and_counted_and_too_few_runs_refused():
    runs = scaling_runs(_trials(best_val_bpb=float("nan")))
    assert len(runs.table) == 5 and runs.left_out == [{"experiment": "s0_100", "why": "no finite loss"}]
    fit = fit_scaling(runs, bootstrap=0, hold_out=False)
    assert fit.to_dict()["left_out"] == runs.left_out
    few = ScalingRuns(runs.table.iloc[:4], entropy=TRUE["E"])
    with pytest.raises(UserError, match="more runs than its 4 unknowns; it has 4"):
        fit_scaling(few)
    one_budget = _synthetic(sizes=(5e4, 1e5, 2e5, 4e5, 8e5, 1.6e6), budgets=(1e6,))
    with pytest.raises(UserError, match="2 or more token budgets"):
        fit_scaling(one_budget)
    with pytest.raises(UserError, match="positive number"):
        fit.budget(-1.0)


def test_the_fit_uses_the_context_metric_when_every_run_has_it():
    t = _trials()
    old = scaling_runs(t)  # runs from before the metric: whole windows, and the fit says why
    assert old.metric == "best_val_bpb" and "not every run reports best_val_bpb_context" in old.metric_note
    assert scaling_runs(t, "best_val_bpb").metric_note == ""  # asked for: nothing to explain
    t["best_val_bpb_context"] = t["best_val_bpb"] - 0.01
    runs = scaling_runs(t)
    assert runs.metric == "best_val_bpb_context" and np.allclose(runs.table["L"], t["best_val_bpb_context"])
    t.loc[0, "best_val_bpb_context"] = None  # one run without it: whole windows for all
    assert scaling_runs(t).metric == "best_val_bpb"
    asked = scaling_runs(t, "best_val_bpb_context")  # asked for: that run is left out, and counted
    assert len(asked.table) == len(t) - 1 and asked.left_out[0]["why"] == "no finite loss"
    with pytest.raises(UserError, match="not one of"):
        scaling_runs(t, "val_loss")


def test_scaling_study_rehearsal_and_fit_command(tmp_path, local_ray):
    # one eval per run, not the family's eight: its largest models' checkpoints (45 MB) are most of its time;
    # 4 x 32 tokens a step, not 16 x 128: the checks are on the runs' sizes, rates and lengths, never on their
    # losses, and the family's batch made its 3.2M-parameter runs' steps most of the rest
    out = run_cli("scaling", "--output-dir", str(tmp_path), "--max-iters", "16", "--dataset", TINY_DATASET,
              "--set", "eval_iters=2", "--set", "precision=float32", "--set", "eval_interval=16",
              "--set", "batch_size=4", "--set", "block_size=32")
    assert out.returncode == 0, out.stderr[-3000:]
    csv = pd.read_csv(tmp_path / "experiments" / "experiment_comparison.csv")
    assert len(csv) >= 10 and csv["total_params"].nunique() >= 5
    trials = json.loads((tmp_path / "experiments" / "batch_results.json").read_text())["trials"]
    iters = sorted({t["config"]["max_iters"] for t in trials})
    assert iters[-1] == 16 and len(iters) >= 2  # the longest trains 16, the others keep their ratio to it
    assert len({t["config"]["vocab_size"] for t in trials}) == 1  # only N and D move
    # each size at its own learning rate (the best of bench/scaling_lr.py's sweep), kept when shrunk
    assert {(t["config"]["n_embd"], t["config"]["learning_rate"]) for t in trials} == {(s[2], s[4]) for s in SIZES}
    fit = run_cli("fit", "--output-dir", str(tmp_path), "--study", "scaling", "--budget", "1e12", "--bootstrap", "50")
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert "scaling:" in fit.stdout and "budget C = 1e+12" in fit.stdout
    doc = json.loads((tmp_path / "experiments" / "scaling_fit.json").read_text())
    assert doc["E_fixed_to_entropy"] and len(doc["runs"]) == len(trials) and doc["budget"]["C"] == 1e12
    assert doc["metric"] == "best_val_bpb_context"  # every new run reports it
    assert (tmp_path / "experiments" / "scaling_fit.png").stat().st_size > 20_000
    bad = run_cli("fit", "--output-dir", str(tmp_path), "--budget", "-3")
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error:") and len(bad.stderr.strip().splitlines()) == 1
    none = run_cli("fit", "--output-dir", str(tmp_path / "empty"))
    assert none.returncode == 2 and "no stored" in none.stderr
