"""Differences against the noise (analysis/significance.py), checked against formulas written
here and scipy's own tests; the evaluation's standard error against a hand computation."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.significance import ci95_half_width, differences, holm, repeats_needed


def _trials(runs: dict[str, list[float]], se: float = 0.002) -> pd.DataFrame:
    rows = [{"experiment": e, "best_val_bpb": v, "best_val_bpb_se": se} for e, vs in runs.items() for v in vs]
    return pd.DataFrame(rows)


def test_welch_interval_matches_the_formula_and_scipy():
    a, b = [0.51, 0.53, 0.52, 0.55], [0.50, 0.49, 0.505]
    table = differences(_trials({"baseline": b, "x": a})).set_index("experiment")
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))  # Welch-Satterthwaite
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    diff = np.mean(a) - np.mean(b)
    row = table.loc["x"]
    assert row["diff_bpb"] == pytest.approx(diff)
    assert (row["diff_low"], row["diff_high"]) == pytest.approx((diff - half, diff + half))
    assert row["p_value"] == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert table.loc["baseline", "verdict"] == "reference"


def test_verdicts_better_worse_and_within_noise():
    runs = {"baseline": [0.500, 0.504, 0.498], "better": [0.400, 0.402, 0.399], "worse": [0.600, 0.597, 0.603],
            "same": [0.501, 0.499, 0.503]}
    verdicts = differences(_trials(runs)).set_index("experiment")["verdict"].to_dict()
    assert verdicts == {"baseline": "reference", "better": "better", "worse": "worse", "same": "within noise"}
    # no baseline: the best is the reference
    assert differences(_trials({k: v for k, v in runs.items() if k != "baseline"}))["reference"].iloc[0] == "better"


def test_runs_that_did_not_end_are_left_out_where_their_experiment_has_runs_that_did():
    """A killed run (interrupted) or a crashed one (errored) is no sample of its settings: left out
    of the figures and the verdict where its experiment has runs that ended (finished, diverged,
    stopped early); an experiment with none that ended is compared for a look but gets no verdict,
    leaves the Holm family and is not taken as the reference. Worked by hand: Welch over the ended
    runs, Holm over the one comparison left."""
    from analysis.export import METRICS, summarize

    rows = [("baseline", 0.500, "finished"), ("baseline", 0.504, "finished"), ("baseline", 0.90, "interrupted"),
            ("better", 0.400, "finished"), ("better", 0.402, "stopped early"), ("better", 0.95, "errored"),
            ("cut", 0.506, "interrupted"), ("cut", 0.509, "interrupted"),
            ("half", 0.450, "finished"), ("half", 0.95, "interrupted")]
    trials = pd.DataFrame([{**dict.fromkeys(METRICS, math.nan), "experiment": e, "best_val_bpb": v,
                            "best_val_bpb_se": 0.002, "status": st, "study": "s", "entropy_bpb": None} for e, v, st in rows])
    table = differences(trials).set_index("experiment")
    p = stats.ttest_ind([0.400, 0.402], [0.500, 0.504], equal_var=False).pvalue
    assert table.loc["better", "diff_bpb"] == pytest.approx(0.401 - 0.502)
    assert table.loc["better", "p_value"] == pytest.approx(p)
    family = sorted(table.loc[["better", "half"], "p_value"])  # cut's larger p would change Holm if it counted
    assert table["p_holm"].dropna().sort_values().tolist() == pytest.approx([2 * family[0], max(2 * family[0], family[1])])
    assert table.loc["better", "verdict"] == "better"
    assert table.loc["better", "noise"].endswith("unfinished runs left out: 1 of better, 1 of baseline")
    assert table.loc["cut", "verdict"] == "unfinished: no verdict" and pd.isna(table.loc["cut", "p_holm"])
    assert table.loc["cut", "diff_bpb"] == pytest.approx(0.5075 - 0.502)
    from analysis.significance import power_text

    assert power_text(trials, "baseline", "cut").startswith("cut vs baseline: no run of cut ended")
    half = ci95_half_width(trials)
    assert half["better"] == pytest.approx(stats.t.ppf(0.975, 1) * np.std([0.400, 0.402], ddof=1) / math.sqrt(2))
    summary = summarize(trials).set_index("experiment")
    assert summary.loc["baseline", "best_val_bpb"] == pytest.approx(0.502) and summary.loc["baseline", "runs"] == 3
    assert summary.loc["cut", "best_val_bpb"] == pytest.approx(0.5075)
    assert summary.loc["half", "best_val_bpb"] == pytest.approx(0.450) and pd.isna(summary.loc["half", "best_val_bpb_std"])
    # no baseline: the best that ended is the reference, not a cut run's lower figure
    rest = trials[trials["experiment"] != "baseline"].assign(
        best_val_bpb=lambda t: t["best_val_bpb"].where(t["experiment"] != "cut", t["best_val_bpb"] - 0.4))
    assert differences(rest)["reference"].iloc[0] == "better"
    from analysis.search_views import within_noise_of  # a search whose best trial was cut: said, not left blank

    assert within_noise_of(rest, "cut").startswith("not known: no comparison with it rests on trials that ended")
    from analysis.search_views import best_trial  # and a search's best is the best trial that ended

    table = pd.DataFrame({"trial": ["cut", "better"], "status": ["interrupted", "finished"], "best_val_bpb": [0.1, 0.4]})
    assert best_trial(table)["trial"] == "better" and best_trial(table.iloc[:1])["trial"] == "cut"


def test_a_run_that_diverged_before_its_first_evaluation_is_named_where_it_is_left_out():
    """It has no figure, so its side's mean rests on the runs that scored: the noise column and the
    note say so (before, it dropped out unflagged). Worked by hand: Welch over the scored runs."""
    from analysis.export import METRICS, significance_note, summarize

    rows = [("baseline", 0.500, "finished"), ("baseline", 0.504, "finished"), ("baseline", 0.498, "finished"),
            ("risky", 0.450, "finished"), ("risky", 0.452, "finished"), ("risky", math.nan, "diverged"),
            ("plain", 0.470, "finished"), ("plain", 0.474, "finished")]
    trials = pd.DataFrame([{**dict.fromkeys(METRICS, math.nan), "experiment": e, "best_val_bpb": v,
                            "best_val_bpb_se": 0.002, "status": st, "study": "s", "entropy_bpb": None} for e, v, st in rows])
    table = differences(trials).set_index("experiment")
    assert table.loc["risky", "p_value"] == pytest.approx(
        stats.ttest_ind([0.450, 0.452], [0.500, 0.504, 0.498], equal_var=False).pvalue)
    assert table.loc["risky", "noise"] == ("seeds (Welch, 2 vs 3 runs); runs with no figure left out (diverged "
                                           "before their first evaluation): 1 of risky")
    assert table.loc["plain", "noise"] == "seeds (Welch, 2 vs 3 runs)"
    cut = trials.assign(status=trials["status"].where(trials["experiment"] != "plain", "interrupted"),
                        best_val_bpb=trials["best_val_bpb"].where(trials["experiment"] != "plain", math.nan))
    assert "diverged" not in differences(cut).set_index("experiment").loc["plain", "noise"]  # cut, not diverged
    summary = summarize(trials).set_index("experiment").join(table.drop(columns="experiment", errors="ignore"))
    assert "diverged before its first evaluation has no figure" in significance_note(summary.reset_index())
    assert "diverged before" not in significance_note(summary.drop(index="risky").reset_index())
    assert summary.loc["risky", "status"] == "diverged/finished" and summary.loc["risky", "runs"] == 3


def test_single_runs_on_different_windows_combine_the_two_evaluation_errors():
    table = differences(_trials({"baseline": [0.50], "x": [0.52]}, se=0.004)).set_index("experiment")
    half = 1.959964 * math.hypot(0.004, 0.004)
    assert table.loc["x", "noise"] == "evaluation, unpaired"
    assert (table.loc["x", "diff_low"], table.loc["x", "diff_high"]) == pytest.approx((0.02 - half, 0.02 + half))
    assert table.loc["x", "verdict"] == "worse"
    old = _trials({"baseline": [0.50], "x": [0.52]}).drop(columns="best_val_bpb_se")
    assert differences(old).set_index("experiment").loc["x", "verdict"] == "unknown"
    assert ci95_half_width(_trials({"a": [0.5]}, se=0.01))["a"] == pytest.approx(0.0196, rel=1e-3)


def _windowed(experiment: str, windows: list[float], fingerprint: str = "w1") -> dict:
    return {"experiment": experiment, "best_val_bpb": float(np.mean(windows)), "best_val_bpb_se": 0.3,
            "eval_windows": fingerprint, "best_window_bpb": windows}


def test_runs_on_the_same_windows_pair_their_differences():
    # four windows; x is worse by 0.1, 0.1, 0.3, 0.1: mean 0.15, sd 0.1 (by hand), se 0.1 / 2
    base, x = [1.0, 2.0, 3.0, 4.0], [1.1, 2.1, 3.3, 4.1]
    table = differences(pd.DataFrame([_windowed("baseline", base), _windowed("x", x)])).set_index("experiment")
    row = table.loc["x"]
    assert row["noise"] == "evaluation, paired over 4 windows"
    assert row["diff_bpb"] == pytest.approx(0.15)
    assert (row["diff_low"], row["diff_high"]) == pytest.approx((0.15 - 1.959964 * 0.05, 0.15 + 1.959964 * 0.05))
    assert row["p_value"] == pytest.approx(2 * (1 - 0.998650), abs=1e-5)  # z = 3: 2 * (1 - Phi(3))
    assert row["verdict"] == "worse"  # unpaired, hypot(0.3, 0.3) would call it within noise
    # other windows (another corpus, say): no pairing
    other = differences(pd.DataFrame([_windowed("baseline", base), _windowed("x", x, "w2")])).set_index("experiment")
    assert other.loc["x", "noise"] == "evaluation, unpaired" and other.loc["x", "verdict"] == "within noise"


def test_runs_sharing_windows_do_not_shrink_the_evaluation_error():
    # two runs of one experiment that ended alike (no seed spread to borrow) on the same windows:
    # the evaluation error of their mean is one run's, not / sqrt(2)
    trials = _trials({"a": [0.50, 0.50], "b": [0.60]}, se=0.01)
    assert ci95_half_width(trials, "b")["b"] == pytest.approx(1.959964 * 0.01, rel=1e-5)
    row = differences(trials, reference="b").set_index("experiment").loc["a"]
    assert row["noise"] == "evaluation, unpaired"
    assert row["diff_high"] - row["diff_bpb"] == pytest.approx(1.959964 * math.hypot(0.01, 0.01), rel=1e-5)
    # runs of one experiment average their windows before pairing (both runs' windows mean 2.0)
    runs = [_windowed("a", [1.0, 2.0, 3.0]), _windowed("a", [1.2, 2.0, 2.8]), _windowed("b", [1.0, 2.2, 3.0])]
    paired = differences(pd.DataFrame(runs), reference="b").set_index("experiment").loc["a"]
    # a's window means 1.1, 2.0, 2.9 against 1.0, 2.2, 3.0: differences 0.1, -0.2, -0.1 (sd 0.1528, se 0.0882)
    assert paired["noise"] == "evaluation, paired over 3 windows"
    assert paired["diff_high"] - paired["diff_bpb"] == pytest.approx(1.959964 * 0.152753 / math.sqrt(3), rel=1e-4)


def _regression(single: list[float], repeated: list[float]) -> tuple[float, float, float, int]:
    """An independent route to the single-vs-repeated test: least squares of the values on an
    indicator of the single side (scipy's linregress): its slope is the difference, its standard
    error s sqrt(1 + 1/n) with the residuals' (the repeated side's) n - 1 degrees of freedom."""
    x = [1.0] * len(single) + [0.0] * len(repeated)
    fit = stats.linregress(x, single + repeated)
    return fit.slope, fit.stderr, fit.pvalue, len(single) + len(repeated) - 2


def test_one_run_against_repeats_takes_their_seed_spread():
    # issue 39's example: a's 3 seeds at 1.00, 1.02, 1.04, b's one run at 1.05, evaluation se 0.001;
    # with the evaluation noise alone it was "worse" at p = 7e-100
    trials = _trials({"a": [1.00, 1.02, 1.04], "b": [1.05]}, se=0.001)
    row = differences(trials, reference="a").set_index("experiment").loc["b"]
    se = 0.02 * math.sqrt(1 + 1 / 3)  # s = 0.02 (by hand), t with 2 degrees of freedom
    half = stats.t.ppf(0.975, 2) * se
    assert row["diff_bpb"] == pytest.approx(0.03)
    assert (row["diff_low"], row["diff_high"]) == pytest.approx((0.03 - half, 0.03 + half))
    assert row["p_value"] == pytest.approx(2 * stats.t.sf(0.03 / se, 2))
    slope, stderr, p, df = _regression([1.05], [1.00, 1.02, 1.04])
    assert (slope, stderr, p, df) == pytest.approx((row["diff_bpb"], se, row["p_value"], 2))
    assert row["p_value"] == pytest.approx(0.3235, abs=1e-4) and row["verdict"] == "within noise"
    assert row["noise"] == "seeds (t, 1 vs 3 runs; seed sd from a's 3 runs)"
    # the other way round: the repeated side is the experiment, the single run the reference
    flipped = differences(trials, reference="b").set_index("experiment").loc["a"]
    assert (flipped["diff_bpb"], flipped["p_value"]) == pytest.approx((-0.03, row["p_value"]))
    assert flipped["noise"] == "seeds (t, 3 vs 1 runs; seed sd from a's 3 runs)"
    # the plot's error bar of the single run: the reference's seed sd times t with 2 degrees of freedom
    assert ci95_half_width(trials, "a")["b"] == pytest.approx(stats.t.ppf(0.975, 2) * 0.02)


def test_a_real_difference_against_repeats_is_found_and_the_note_says_what_it_rests_on():
    from analysis.export import significance_note

    ref, single = [0.500, 0.506, 0.497, 0.503, 0.499], [0.560]
    table = differences(_trials({"ref": ref, "x": single, "y": [0.4995]}), reference="ref")
    row = table.set_index("experiment").loc["x"]
    slope, stderr, p, df = _regression(single, ref)
    assert row["p_value"] == pytest.approx(p) and row["verdict"] == "worse"
    assert row["diff_high"] - row["diff_bpb"] == pytest.approx(stats.t.ppf(0.975, df) * stderr)
    note = significance_note(table)
    assert "seed standard deviation of the other side's runs" in note and "'evaluation'" not in note


def test_holm_and_power_against_known_values():
    assert holm([0.01, 0.04, 0.03, float("nan")])[:3] == pytest.approx([0.03, 0.06, 0.06])
    # two-sample t-test, effect size 1, 80% power at 5%: 17 per group (the textbook figure)
    rng = np.random.default_rng(0)
    a = rng.normal(size=200)
    a = (a - a.mean()) / a.std(ddof=1)
    assert repeats_needed(a + 1.0, a) == 17
    assert repeats_needed(a, a) is None
    # Holm over 3 comparisons asks the smallest p-value for 5% / 3: the same test at alpha 0.0167
    assert repeats_needed(a + 1.0, a, family=3) == repeats_needed(a + 1.0, a, alpha=0.05 / 3) > 17
    # one run against repeats: the repeats' spread serves both sides (effect size 1 again: 17)
    assert repeats_needed(np.array([1.0]), a) == repeats_needed(a, np.array([-1.0])) == 17
    assert repeats_needed(np.array([1.0]), np.array([0.0])) is None


def test_power_text_with_one_run_takes_the_repeated_sides_spread():
    import pandas as pd

    from analysis.significance import power_text

    runs = [0.30, 0.32, 0.34]  # sd 0.02
    trials = pd.DataFrame({"experiment": ["ref"] * 3 + ["x"], "best_val_bpb": runs + [0.36], "seed": [1, 2, 3, 1]})
    text = power_text(trials, "ref", "x")
    assert "difference +0.0400 bits per byte, seed standard deviation 0.0200 (1 and 3 runs, ref's, taken for both)" in text
    assert "; 6 runs of each would resolve it" in text  # effect size 2: 6 a side (the noncentral t)
    single = power_text(trials[trials["seed"] == 1], "ref", "x")
    assert "two or more of one of them (1 and 1 here)" in single
    none = power_text(trials.assign(best_val_bpb=[0.30, 0.32, 0.34, float("nan")]), "ref", "x")
    assert "needs a finished run of each" in none and "(0 and 3 here)" in none
    alike = power_text(trials.assign(best_val_bpb=[0.30, 0.30, 0.30, 0.36]), "ref", "x")
    assert "+0.0600" in alike and "no spread to size repeats by" in alike


def test_eval_windows_are_disjoint_and_the_standard_error_is_their_spread(tmp_path):
    import contextlib

    import numpy as np
    import torch

    from conftest import tiny
    from slm_tune.data.cache import prepare_tokens
    from slm_tune.model.gpt import GPT
    from slm_tune.train.evaluate import Evaluator, batch, eval_offsets

    c = tiny(eval_iters=6)
    data = prepare_tokens(c.dataset, c.vocab_size)
    offsets = eval_offsets(c, len(data.validation))
    assert [len(o) for o in offsets] == [c.batch_size] * 6
    starts = np.sort(np.concatenate(offsets))  # no two windows (block_size + 1 tokens each) share a token
    assert (np.diff(starts) >= c.block_size + 1).all() and starts[-1] + c.block_size + 1 <= len(data.validation)
    torch.manual_seed(0)
    model = GPT(c).eval()
    result = Evaluator(c, data.validation, contextlib.nullcontext())(model)
    batches = [batch(data.validation, o, c.block_size) for o in offsets]
    with torch.no_grad():
        losses = [model(x, y).item() for x, y in batches]  # the training loss's own path, per batch
        windows = torch.cat([torch.nn.functional.cross_entropy(model.output(model.hidden(x)).transpose(1, 2), y,
                                                               reduction="none").mean(1) for x, y in batches])
    assert result.loss == pytest.approx(sum(losses) / 6, rel=1e-6)
    n = 6 * c.batch_size
    mean = float(windows.double().mean())
    spread = math.sqrt(sum((float(w) - mean) ** 2 for w in windows) / (n - 1) / n)  # the windows' standard error
    assert result.loss_se == pytest.approx(spread, rel=1e-4)  # float32 losses
    assert result.window_losses.shape == (n,)
    assert result.window_losses == pytest.approx(windows.numpy(), rel=1e-5)


def test_a_short_validation_split_is_evaluated_on_each_of_its_disjoint_windows_once():
    import numpy as np

    from conftest import tiny
    from slm_tune.train.evaluate import eval_offsets

    c = tiny(eval_iters=6, batch_size=4, block_size=32)  # wants 24 windows of 33 tokens
    for n_tokens, sizes in ((33 * 10 + 5, [4, 4, 2]), (33 * 3, [3]), (33 * 30, [4] * 6)):
        offsets = eval_offsets(c, n_tokens)
        assert [len(o) for o in offsets] == sizes, n_tokens
        starts = np.concatenate(offsets)
        assert len(set(starts.tolist())) == len(starts) and (starts % 33 == 0).all() and starts.max() + 33 <= n_tokens


def test_build_and_transfer_count_the_runs_compare_counts():
    """build's and transfer's figures rest on the runs that ended, as compare's do: a diverged seed
    counts (it is what those settings did), an interrupted or errored one does not; FLOPs count
    every run; the best configuration, the one a next stage trains, is a finished trial's."""
    from analysis.build_report import _runs
    from analysis.transfer import _side

    trials = pd.DataFrame([
        {"status": "finished", "best_val_bpb": 0.40, "train_flops": 1.0, "config": {}, "flops_per_token": 1, "iterations": 1},
        {"status": "diverged", "best_val_bpb": 0.35, "train_flops": 2.0, "config": {}, "flops_per_token": 1, "iterations": 1},
        {"status": "interrupted", "best_val_bpb": 0.30, "train_flops": 4.0, "config": {}, "flops_per_token": 1, "iterations": 1},
        {"status": "errored", "best_val_bpb": 0.20, "train_flops": 8.0, "config": {}, "flops_per_token": 1, "iterations": 1}])
    assert _runs(trials) == [0.40, 0.35]
    side = _side(trials)
    assert side["runs_best_val_bpb"] == [0.40, 0.35] and side["scored"] == 2 and side["flops"] == 15.0
    from analysis.transfer import _left_out

    early = _side(trials.assign(best_val_bpb=[0.40, math.nan, 0.30, 0.20]))  # the diverged seed: no figure
    assert early["scored"] == 1 and early["no_figure"] == 1 and _left_out(early).startswith(" (1 more diverged before")
    assert _side(trials)["no_figure"] == 0 and _left_out(_side(trials)) == ""
    # the best, the configuration a next stage trains, is a finished trial's: not the diverged one's lower figure
    assert side["mean_best_val_bpb"] == pytest.approx(0.375) and side["best_val_bpb"] == 0.40
    # a seed that diverged before its first evaluation has no figure: build's verdict names it where it leaves it out
    from analysis.build_report import _simple

    mine = trials.assign(experiment="target", config=[{"n_layer": 2, "n_embd": 64, "vocab_size": 9, "max_iters": 5}] * 4)
    theirs = mine.assign(experiment="baseline", best_val_bpb=[0.50, 0.52, math.nan, math.nan],
                         status=["finished", "finished", "diverged", "interrupted"])
    row = _simple(mine, theirs)["baseline"]
    assert row["runs"] == [0.50, 0.52] and row["no_figure"] == {"build": 0, "baseline": 1}
    assert row["p"] == pytest.approx(stats.ttest_ind([0.40, 0.35], [0.50, 0.52], equal_var=False).pvalue)
