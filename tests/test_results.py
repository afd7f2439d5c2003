"""The results layout, compare, analysis/ and samples, after a real tiny study."""

import json
import re
import shutil

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from analysis import find_runs, load_runs
from analysis.export import CSV_COLUMNS, METRICS
from analysis.significance import COLUMNS as SIGNIFICANCE_COLUMNS
from analysis.plots import COMPARISON_PANELS, _curve_panels, plot_comparison, plot_training_losses
from analysis.samples import sample_from_file
from conftest import TINY_SETS, run_cli

EXPERIMENTS = ["optimal_fast", "optimal_small", "vocab_small"]
RESULT_KEYS = ["experiment", "config", "total_params", "non_embedding_params", "training_time_s",
               "final_train_loss", "final_val_loss", "best_val_loss", "best_val_bpb", "tokens_per_s",
               "history", "dataset", "tokenizer", "status", "seed", "trial_id", "trial_path", "sample"]


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory, local_ray):
    out = tmp_path_factory.mktemp("results")
    proc = run_cli("quick", "--output-dir", str(out), "--max-iters", "20", "--repeats", "2", *TINY_SETS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_layout_files_and_fields(study_dir):
    exp = study_dir / "experiments"
    for name in EXPERIMENTS:
        record = json.loads((exp / f"{name}_results.json").read_text())
        assert set(RESULT_KEYS) <= set(record), set(RESULT_KEYS) - set(record)
        assert record["experiment"] == name and record["status"] == "finished"
        assert record["config"]["name"] == name and record["runs"] == 2
        assert record["history"][0].keys() >= {"iteration", "train_loss", "val_loss", "val_bpb", "lr", "elapsed_s"}
        assert len(record["per_run"]) == 2 and all(len(r["history"]) == 2 for r in record["per_run"])
        assert isinstance(record["sample"], str) and record["sample"].startswith("Once upon a time")
        assert record["tokenizer"] == "gpt2-10000" and record["dataset"].startswith("storyworld")
        assert (study_dir / f"best_model_{name}.pt").is_file()
        img = mpimg.imread(exp / f"{name}_training_losses.png")
        assert img.ndim == 3 and img.shape[0] > 300 and img.std() > 0.01
    batch = json.loads((exp / "batch_results.json").read_text())
    assert batch["study"] == "quick" and len(batch["trials"]) == 6
    meta = batch["studies"][0]
    assert meta["machine"]["cpu_count"] >= 1 and "torch" in meta["machine"] and meta["ended_at"]
    assert "quick" in meta["command"]


def test_csv_one_row_per_experiment_with_mean_std_and_runs(study_dir):
    csv = pd.read_csv(study_dir / "experiments" / "experiment_comparison.csv")
    assert sorted(csv["experiment"]) == EXPERIMENTS
    assert list(csv.columns) == (CSV_COLUMNS + [f"{m}_std" for m in METRICS] + SIGNIFICANCE_COLUMNS
                                 + ["best_val_bpb_ci95"])
    assert set(csv["runs"]) == {2} and set(csv["status"]) == {"finished"}
    trials, _ = load_runs(find_runs(study_dir))
    for name, g in trials.groupby("experiment"):
        row = csv[csv["experiment"] == name].iloc[0]
        assert row["best_val_loss"] == pytest.approx(g["best_val_loss"].mean())
        assert row["best_val_loss_std"] == pytest.approx(g["best_val_loss"].std(ddof=1))
        assert g["best_val_loss"].nunique() == 2  # two seeds, two different results
    for f in ("trials.parquet", "history.parquet"):
        assert len(pd.read_parquet(study_dir / "experiments" / f)) > 0
    # parameter counts are whole numbers in the CSV and the results JSON
    text = (study_dir / "experiments" / "experiment_comparison.csv").read_text()
    params = [line.split(",")[CSV_COLUMNS.index("total_params")] for line in text.splitlines()[1:]]
    assert all(p.isdigit() for p in params), params
    record = json.loads((study_dir / "experiments" / "optimal_fast_results.json").read_text())
    assert isinstance(record["total_params"], int) and isinstance(record["non_embedding_params"], int)


def test_details_prints_training_flops_in_a_readable_unit():
    out = run_cli("details", "baseline")
    assert out.returncode == 0 and re.search(r"training FLOPs +479\.9 TFLOP \(4\.8e\+14\)", out.stdout)


def test_comparison_figure_has_its_panels(study_dir, tmp_path):
    from analysis.export import summarize

    trials, history = load_runs(find_runs(study_dir))
    fig = plot_comparison(summarize(trials), history, "t", tmp_path / "c.png")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == list(COMPARISON_PANELS)
    bars = fig.axes[0]
    assert len(bars.patches) == 3 and [t.get_text() for t in bars.get_xticklabels()] != []
    assert len(fig.axes[4].get_lines()) >= 3  # a validation curve per experiment (+ entropy floor)
    assert any(line.get_label() == "Pareto front" for line in fig.axes[6].get_lines())
    img = mpimg.imread(study_dir / "experiments" / "experiment_comparison.png")
    assert img.shape[1] > 1000 and img.std() > 0.01
    fig2 = plot_training_losses(history[history["experiment"] == "vocab_small"], "v", tmp_path / "l.png")
    labels = [line.get_label() for line in fig2.axes[0].get_lines()]
    assert "train, mean of 2" in labels and "validation, mean of 2" in labels


def test_compare_rebuilds_identical_files_from_storage(study_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(study_dir, copy)
    # The ray_results paths in trial records point into the copy; compare only what is stable.
    before_csv = (copy / "experiments" / "experiment_comparison.csv").read_text()
    before = {n: json.loads((copy / "experiments" / f"{n}_results.json").read_text()) for n in EXPERIMENTS}
    shutil.rmtree(copy / "experiments")
    for f in copy.glob("best_model_*.pt"):
        f.unlink()
    proc = run_cli("compare", "--output-dir", str(copy))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (copy / "experiments" / "experiment_comparison.csv").read_text() == before_csv
    for n in EXPERIMENTS:
        after = json.loads((copy / "experiments" / f"{n}_results.json").read_text())
        for key in ("best_val_loss", "history", "sample", "config", "status", "per_run"):
            if key == "per_run":
                strip = lambda runs: [{k: v for k, v in r.items() if k != "trial_path"} for r in runs]  # noqa: E731
                assert strip(after[key]) == strip(before[n][key])
            else:
                assert after[key] == before[n][key], key
    assert (copy / "best_model_vocab_small.pt").is_file()
    assert "vocab_small" in proc.stdout


def test_compare_without_studies_is_a_one_line_error(tmp_path):
    proc = run_cli("compare", "--output-dir", str(tmp_path))
    assert proc.returncode == 2 and "no stored studies" in proc.stderr and "Traceback" not in proc.stderr


def test_best_model_loads_and_generates_text(study_dir):
    text = sample_from_file(study_dir / "best_model_optimal_fast.pt", "Once upon a time", 20, seed=1)
    assert text.startswith("Once upon a time") and len(text) > len("Once upon a time")
    proc = run_cli("sample", "optimal_fast", "--output-dir", str(study_dir), "--max-new-tokens", "10", "--prompt", "Lily")
    assert proc.returncode == 0 and proc.stdout.startswith("Lily")
    missing = run_cli("sample", "nope", "--output-dir", str(study_dir))
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_notebook_api(study_dir):
    trials, history = load_runs(find_runs(study_dir))
    assert len(trials) == 6 and set(trials["seed"]) == {1337, 1338}
    assert np.isfinite(trials["best_val_bpb"]).all()
    assert (trials["best_val_bpb"] > trials["entropy_bpb"]).all()
    assert len(history) == 12 and set(history["iteration"]) == {10, 20}


def test_an_experiments_files_are_written_when_its_trial_ends(tmp_path):
    """ResultsExporter: the first trial's files are written while the second trains (its writer
    thread is waited for here, at the second's start, to look), marked finished."""
    from ray import tune

    from analysis.export import export_live, export_study
    from slm_tune.tune.callbacks.live_export import ResultsExporter
    from conftest import tiny
    from slm_tune.tune.run import StudyRun, run_study

    seen = {}
    exporter = ResultsExporter(tmp_path, "live", write=export_live)

    class SeenAtStart(tune.Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            exporter.wait()
            seen[trial.config["experiment"]] = sorted(p.name for p in (tmp_path / "experiments").glob("*"))

    configs = {n: tiny(name=n, max_iters=20, eval_interval=10) for n in ("first", "second")}
    results = run_study(StudyRun("live", configs, output_dir=tmp_path, max_concurrent=1,
                                 callbacks=[exporter, SeenAtStart()]))
    assert seen["first"] == []
    assert seen["second"] == ["first_results.json", "first_training_losses.png"]
    record = json.loads((tmp_path / "experiments" / "first_results.json").read_text())
    assert record["status"] == "finished" and len(record["history"]) == 2
    assert (tmp_path / "best_model_first.pt").is_file()

    # The study's final export finds these files up to date and leaves them alone...
    files = [tmp_path / "experiments" / "first_results.json", tmp_path / "experiments" / "first_training_losses.png",
             tmp_path / "best_model_first.pt"]
    stamps = [f.stat().st_mtime_ns for f in files]
    export_study(results, tmp_path, "live")
    assert [f.stat().st_mtime_ns for f in files] == stamps
    # ...but writes what is out of date: the results and plot again, the model still current.
    files[0].write_text(json.dumps({**record, "best_val_loss": 0.0}))
    export_study(results, tmp_path, "live")
    assert json.loads(files[0].read_text()) == record
    assert files[1].stat().st_mtime_ns != stamps[1] and files[2].stat().st_mtime_ns == stamps[2]
    (tmp_path / "best_model_first.pt").unlink()
    export_study(results, tmp_path, "live")
    assert json.loads(files[0].read_text()) == record and files[2].is_file()


def test_compare_names_a_reference_verdicts_and_the_repeats_needed(study_dir):
    """Two seeds each: Welch intervals against the chosen reference, and the power estimate."""
    ran = run_cli("compare", "--output-dir", str(study_dir), "--reference", "optimal_fast", "--against", "vocab_small")
    assert ran.returncode == 0, ran.stderr
    csv = pd.read_csv(study_dir / "experiments" / "experiment_comparison.csv").set_index("experiment")
    assert csv.loc["optimal_fast", "verdict"] == "reference" and set(csv["reference"]) == {"optimal_fast"}
    for name in ("optimal_small", "vocab_small"):
        row = csv.loc[name]
        assert row["diff_low"] < row["diff_bpb"] < row["diff_high"] and row["noise"].startswith("seeds (Welch, 2 vs 2")
        assert row["verdict"] in ("better", "worse", "within noise") and row["p_holm"] >= row["p_value"]
    assert "vs reference (95%)" in ran.stdout and "Holm" in ran.stdout
    assert "vocab_small vs optimal_fast: difference" in ran.stdout and ("runs of each" in ran.stdout
                                                                        or "no difference" in ran.stdout)
    bad = run_cli("compare", "--output-dir", str(study_dir), "--reference", "optimal_fats")
    assert bad.returncode == 2 and "did you mean: optimal_fast" in bad.stderr


def test_single_runs_on_shared_windows_compare_paired(study_dir):
    """Each run stores its best eval's per-window bits per byte and the windows' fingerprint; single
    runs on the same windows (one tokenizer, one window shape: this study's) compare paired."""
    from analysis.significance import differences

    trials, _ = load_runs(find_runs(study_dir))
    for _, t in trials.iterrows():
        windows = np.asarray(t["best_window_bpb"])
        assert len(windows) == t["config"]["eval_iters"] * t["config"]["batch_size"] == 8
        assert windows.mean() == pytest.approx(t["best_val_bpb"], abs=1e-4)
    assert trials["eval_windows"].nunique() == 1
    first = trials[trials["seed"] == trials["seed"].min()]
    table = differences(first, reference="optimal_fast").set_index("experiment")
    assert list(table.loc[["optimal_small", "vocab_small"], "noise"]) == ["evaluation, paired over 8 windows"] * 2


def test_one_run_against_repeats_in_the_comparison_table(study_dir):
    """A single run compared with a repeated reference takes the reference's seed spread, and the
    table's note says so (not "no seed spread"): checked against least squares on an indicator
    (scipy's linregress), an independent route to the same t-test."""
    from scipy import stats

    from analysis.export import format_table, summarize, with_significance

    trials, _ = load_runs(find_runs(study_dir))
    trials = trials[~((trials["experiment"] == "vocab_small") & (trials["seed"] == 1338))]
    summary = with_significance(summarize(trials), trials, "optimal_fast")
    row = summary.set_index("experiment").loc["vocab_small"]
    assert row["noise"] == "seeds (t, 1 vs 2 runs; seed sd from optimal_fast's 2 runs)"
    ref = trials.loc[trials["experiment"] == "optimal_fast", "best_val_bpb"].tolist()
    single = trials.loc[trials["experiment"] == "vocab_small", "best_val_bpb"].tolist()
    fit = stats.linregress([1.0, 0.0, 0.0], single + ref)
    assert (row["diff_bpb"], row["p_value"]) == pytest.approx((fit.slope, fit.pvalue))
    assert row["diff_high"] - row["diff_bpb"] == pytest.approx(stats.t.ppf(0.975, 1) * fit.stderr)
    assert row["best_val_bpb_ci95"] == pytest.approx(stats.t.ppf(0.975, 1) * np.std(ref, ddof=1))
    text = format_table(summary)
    assert "seed standard deviation of the other side's runs" in text and "no seed spread" not in text


def test_a_loss_plot_spanning_more_than_5x_gets_a_log_axis(tmp_path):
    """A run from ln(50,257) = 10.8 nats to 0.6 on a linear axis is a flat line for most of its
    length: past a 5x span the loss axis is logarithmic, below it linear, in the experiment's plot
    and in the comparison's training-loss panel."""
    def history(top, bottom):
        its = np.arange(10, 1210, 10)
        loss = bottom + (top - bottom) * (np.exp(-its / 60) - np.exp(-1200 / 60)) / (np.exp(-10 / 60) - np.exp(-1200 / 60))
        return pd.DataFrame({"experiment": "e", "seed": 1337, "iteration": its, "train_loss": loss,
                             "kind": ["eval" if i % 100 == 0 else "train" for i in its],
                             "val_loss": [v if i % 100 == 0 else np.nan for i, v in zip(its, loss)]})

    for (top, bottom), scale in (((10.8, 0.6), "log"), ((5.5, 1.0), "log"), ((4.5, 1.0), "linear")):
        h = history(top, bottom)
        assert h["train_loss"].max() == pytest.approx(top) and h["train_loss"].min() == pytest.approx(bottom)
        ax = plot_training_losses(h, "w", tmp_path / "w.png").axes[0]
        assert ax.get_yscale() == scale and ("log scale" in ax.get_ylabel()) == (scale == "log")
        low, high = ax.get_ylim()
        assert low < bottom and high > top  # every point still shown
        fig, axes = plt.subplots(1, 2)
        _curve_panels(axes, h.assign(val_bpb=h["val_loss"] / 3), ["e"], ["e"], {"e": "C0"}, None, crowded=False)
        assert [a.get_yscale() for a in axes] == ["linear", scale]
        plt.close(fig)
