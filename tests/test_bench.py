"""The benchmark's smoke version: it runs end to end and prints every figure."""

import subprocess
import sys

from conftest import ROOT


def test_bench_smoke():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "bench.py"), "--smoke", "--skip-study"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    for marker in ("matmul peak", "float32 reference", "fast path (default)", "speed-up", "quality", "generation",
                   "cached", "tokenization"):
        assert marker in out.stdout, marker


def _bench(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_horizon_rate_recovers_a_known_rate_law():
    """Losses made from LR*(T) = 0.3 T^-0.4 (Bjorck et al.'s form), quadratic in log rate around it:
    the bench's vertices find each best rate and its slope finds 0.4; a best rate at the grid's
    edge is said, and left out of the slope."""
    import math

    import pytest

    horizon = _bench("horizon_rate")
    rows = []
    for iters in (100, 400, 1600):
        best = 0.3 * iters ** -0.4
        for mult in (0.25, 0.5, 1, 2):
            rate = 0.05 * mult * (iters / 100) ** -0.4 * 1.3  # a grid that does not sit on the optimum
            rows.append({"iters": iters, "learning_rate": rate, "best_val_bpb": 1 + (math.log(rate / best)) ** 2})
    out = horizon.analyse(rows)
    for iters in (100, 400, 1600):
        assert out["best_rate"][str(iters)]["rate"] == pytest.approx(0.3 * iters ** -0.4, rel=1e-6)
    assert out["beta"] == pytest.approx(0.4, rel=1e-6) and out["beta_from"] == [100, 400, 1600]
    edge = horizon.best_rate([(0.01, 1.0), (0.02, 1.1), (0.04, 1.2)])
    assert edge == (0.01, "grid edge (the best rate may lie beyond it)")
    rows += [{"iters": 50, "learning_rate": r, "best_val_bpb": y} for r, y in ((0.01, 1.0), (0.02, 1.1), (0.04, 1.2))]
    out = horizon.analyse(rows)
    assert out["best_rate"]["50"]["how"].startswith("grid edge") and out["beta_from"] == [100, 400, 1600]
    assert out["beta"] == pytest.approx(0.4, rel=1e-6)


def test_build_bench_counts_the_seconds_any_trial_ran(tmp_path):
    """busy_seconds: the union of the trials' spans (end - time_since_restore, end), overlaps once."""
    import json

    build = _bench("build")
    spans = [(100, 160), (150, 200), (300, 310), (305, 308)]  # union: 100..200 and 300..310 = 110 s
    paths = []
    for i, (a, b) in enumerate(spans):
        p = tmp_path / f"t{i}" / "result.json"
        p.parent.mkdir()
        p.write_text(json.dumps({"timestamp": a + 1, "time_since_restore": 1}) + "\n"
                     + json.dumps({"timestamp": b, "time_since_restore": b - a}) + "\n")
        paths.append(p)
    assert build.busy_seconds(paths) == 110


def test_build_bench_reuses_c_only_at_the_same_shape(tmp_path):
    """(c) stored for the same shape, length and settings is kept when only what (c) searches (and its
    text) differs; another width sets it aside, so (c) runs again at the new build's shape."""
    import json

    import pytest

    build = _bench("build")
    earlier, out = tmp_path / "earlier", tmp_path / "new"
    sp = {"n_embd": 64, "n_layer": 2, "max_iters": 6599, "learning_rate": 0.018, "hidden_init_std": 0.049,
          "description": "build's target"}
    for rel in ("ray_results/build_search/t/result.json", "ray_results/build_simple/t/result.json",
                "ray_results/direct/t/result.json", "ray_results/build_sweep/t/result.json",
                "experiments/direct_0001_results.json", "experiments/build_sweep_s1_1_results.json"):
        (earlier / rel).parent.mkdir(parents=True, exist_ok=True)
        (earlier / rel).write_text("{}")
    (earlier / "direct_base.json").write_text(json.dumps({"direct_base": sp}))
    (earlier / "experiments" / "build_plan.json").write_text(json.dumps(
        {"budget": 1e13, "horizon_exponent": 0.0, "sweep": "fixed", "sweep_sizes": [[2, 32], [2, 64], [4, 64]]}))
    with pytest.raises(SystemExit, match="holds no finished build"):  # a build still running, or no build
        build.reuse(earlier, out, {})
    assert not out.exists()
    (earlier / "experiments" / "build_report.json").write_text("{}")
    (earlier / "ray_results" / "run_search_direct_best").mkdir(parents=True)
    (earlier / "ray_results" / "run_search_direct_best" / "study.json").write_text(json.dumps({"repeats": 2}))
    one_seed = {"per_run": [{"status": "finished"}]}  # (c) retrained at one of its two seeds: still running
    (earlier / "experiments" / "search_direct_best_results.json").write_text(json.dumps(one_seed))
    build.reuse(earlier, tmp_path / "running", {"sweep": "budget"})
    assert (tmp_path / "running" / "ray_results" / "build_search").is_dir()
    assert not (tmp_path / "running" / "ray_results" / "direct").exists()
    assert not (tmp_path / "running" / "direct_base.json").exists()
    (earlier / "experiments" / "search_direct_best_results.json").write_text(
        json.dumps({"per_run": [{"status": "finished"}] * 2}))  # (c) finished: it is copied
    (earlier / "experiments" / "build_plan.json").write_text(json.dumps({"budget": 1e13, "horizon_exponent": 0.0}))
    grown = earlier / "ray_results" / "run_search_direct_best-2"  # a third seed being added: (c) unfinished again
    grown.mkdir(parents=True)
    (grown / "study.json").write_text(json.dumps({"repeats": 1, "first_seed": 2, "adds_to": "run_search_direct_best"}))
    assert not build._direct_finished(earlier)
    (earlier / "experiments" / "search_direct_best_results.json").write_text(
        json.dumps({"per_run": [{"status": "finished"}] * 3}))
    assert build._direct_finished(earlier)
    build.reuse(earlier, out, {"horizon_exponent": 0.45, "sweep": "budget"})
    assert (out / "ray_results" / "direct").is_dir() and (out / "ray_results" / "build_search").is_dir()
    assert (out / "ray_results" / "run_search_direct_best-2" / "study.json").is_file()  # the added seeds go along
    assert not (out / "ray_results" / "build_sweep").exists()  # the sweep and the target run again
    assert not (out / "experiments" / "build_sweep_s1_1_results.json").exists()
    copied = json.loads((out / "experiments" / "build_plan.json").read_text())  # the sizes are the new build's to record
    assert copied == {"budget": 1e13, "horizon_exponent": 0.45, "sweep": "budget"}
    from workflows.build import plan_changes

    assert plan_changes(copied, {**copied, "sweep_sizes": [[1, 24], [2, 40], [4, 56]]}) == []
    assert not build._set_aside_other_direct(out, {**sp, "learning_rate": 0.0045, "description": "other"})
    assert (out / "ray_results" / "direct").is_dir() and not (out / "stale_direct").exists()
    assert build._set_aside_other_direct(out, {**sp, "n_embd": 128})
    assert not (out / "ray_results" / "direct").exists() and not (out / "direct_base.json").exists()
    assert (out / "stale_direct" / "ray_results" / "direct").is_dir()
    assert (out / "stale_direct" / "experiments" / "direct_0001_results.json").is_file()
    assert (out / "stale_direct" / "ray_results" / "run_search_direct_best-2").is_dir()


def test_build_extrapolate_recovers_a_known_token_law():
    """Sweep losses made from c_s + 40 D^-0.5 (the shared form) and from 0.1 + B_s D^-beta_s (the
    per-size form), at the sweep's three token counts: each fit predicts its own law's loss at 30x
    the longest run's tokens."""
    import pytest

    ex = _bench("build_extrapolate")
    tokens = (1e5, 2e5, 4e5)
    shared = {"s1": 0.5, "s2": 0.3, "s3": 0.25}
    rows = [{"size": s, "D": d, "L": c + 40 * d ** -0.5} for s, c in shared.items() for d in tokens]
    fits, note = ex.fit_shared(rows, 0.1)
    assert note == "beta 0.50"
    for s, c in shared.items():
        assert fits[s](1.2e7) == pytest.approx(c + 40 * 1.2e7 ** -0.5, rel=1e-4)
    per = {"s1": (30.0, 0.4), "s2": (300.0, 0.6), "s3": (3e3, 0.8)}
    rows = [{"size": s, "D": d, "L": 0.1 + b * d ** -beta} for s, (b, beta) in per.items() for d in tokens]
    fits, note = ex.fit_per_size(rows, 0.1)
    assert note == "beta s1 0.40, s2 0.60, s3 0.80"
    for s, (b, beta) in per.items():
        assert fits[s](1.2e7) == pytest.approx(0.1 + b * 1.2e7 ** -beta, rel=1e-4)


def test_capacity_rate_probes_are_listed_beside_the_familys_rate():
    """A run at the family's rate and its probe at half of it: the probe line gives the whole-window
    difference and the paired se of the per-window differences (worked here by hand)."""
    import statistics

    cap = _bench("storyworld_capacity")
    ref = {"corpus": "c", "size": "s5", "iters": 10, "seed": 1, "learning_rate": 0.004, "best_val_bpb": 0.30,
           "best_val_bpb_context": 0.25, "window_bpb": [0.3, 0.31, 0.29, 0.30]}
    probe = {**ref, "lr_mult": 0.5, "learning_rate": 0.002, "best_val_bpb": 0.28, "window_bpb": [0.28, 0.30, 0.27, 0.27]}
    lines = cap.probe_lines([ref, probe])
    diffs = [b - a for a, b in zip(ref["window_bpb"], probe["window_bpb"])]
    se = statistics.stdev(diffs) / len(diffs) ** 0.5
    assert lines[1].startswith("c s5 10 it seed 1: x0.5 (rate 0.002) whole 0.2800") and lines[2].startswith("c s5 10 it seed 1: x1 ")
    assert f"whole -0.0200 against x1 (paired se {se:.4f})" in lines[1]
    assert cap.probe_lines([ref]) == []


def test_capacity_best_rate_compares_rates_only_on_the_same_windows():
    cap = _bench("storyworld_capacity")
    run = {"corpus": "c", "size": "s5", "iters": 10, "seed": 1, "status": "finished"}
    x1 = {**run, "lr_mult": 1.0, "best_val_bpb": 0.30, "eval_windows": "w1"}
    lower = {**run, "lr_mult": 0.5, "best_val_bpb": 0.28, "eval_windows": "w1"}
    elsewhere = {**run, "lr_mult": 0.25, "best_val_bpb": 0.20, "eval_windows": "w2"}
    failed = {**run, "lr_mult": 2.0, "best_val_bpb": 0.10, "eval_windows": "w1", "status": "error"}
    assert cap.best_rate([x1, lower, elsewhere, failed], "best_val_bpb") == [lower]
    assert cap.best_rate([x1, elsewhere], "best_val_bpb") == [x1]


def test_build_bench_keeps_each_finished_arm_in_its_json(tmp_path):
    """A row is stored arm by arm (the build, then (c)'s search) in place of its earlier state,
    beside rows another bench stored meanwhile; --replot tables the finished rows and names the
    pending ones."""
    import json

    build = _bench("build")
    stored = json.loads((ROOT / "bench" / "build.json").read_text())["results"]
    finished, other = stored[0], stored[1]
    out = tmp_path / "build.json"
    partial = {k: v for k, v in finished.items() if k not in ("direct", "verdicts")}
    build.store(out, {**partial, "pending": "(c)"})
    out.write_text(json.dumps({"results": [*json.loads(out.read_text())["results"], other]}))  # another bench's row
    build.store(out, {**partial, "pending": "(c)", "direct_best": {"toml": "x"}})
    rows = json.loads(out.read_text())["results"]
    assert len(rows) == 2 and rows[0] == other and rows[1]["direct_best"] == {"toml": "x"}
    ran = subprocess.run([sys.executable, str(ROOT / "bench" / "build.py"), "--replot", "--out", str(out)],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert ran.returncode == 0, ran.stderr[-3000:]
    table = [line for line in ran.stdout.splitlines() if line.startswith("| ") and "corpus" not in line]
    assert len(table) == 1 and table[0].startswith(f"| {other['tag']} | {other['budget']:.0e} |"), ran.stdout
    assert (f"not in the table: {finished['tag']} {finished['budget']:g} (fixed sweep), (c) pending" in ran.stdout)
    build.store(out, finished)  # the finished row replaces its partial state
    assert json.loads(out.read_text())["results"] == [other, finished]


def test_build_bench_rows_stored_by_two_benches_at_once_are_all_kept(tmp_path):
    """Two processes store 60 rows each into one file at the same time (each row read, merged and
    renamed over the file): every row of both is there at the end."""
    import json

    out = tmp_path / "build.json"
    program = ("import sys, importlib.util; spec = importlib.util.spec_from_file_location('b', sys.argv[1]); "
               "b = importlib.util.module_from_spec(spec); spec.loader.exec_module(b); from pathlib import Path; "
               "[b.store(Path(sys.argv[2]), {'tag': sys.argv[3], 'budget': i}) for i in range(60)]")
    procs = [subprocess.Popen([sys.executable, "-c", program, str(ROOT / "bench" / "build.py"), str(out), tag])
             for tag in ("first", "second")]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    rows = json.loads(out.read_text())["results"]
    assert sorted((r["tag"], r["budget"]) for r in rows) == sorted((t, i) for t in ("first", "second") for i in range(60))


def test_build_bench_retrains_c_from_its_saved_row_when_the_work_dir_is_lost(tmp_path):
    """A row saved with the build and (c)'s search (the work dir lost since, as on a new machine):
    the bench runs (c)'s retraining alone, from the row's TOML (a different TOML left in the folder
    is set aside), and the row it returns is finished: (c)'s seeds, the verdicts, each arm's
    machine and date, no pending keys."""
    import json

    import pytest

    from conftest import TINY_DATASET

    build = _bench("build")
    finished = json.loads((ROOT / "bench" / "build.json").read_text())["results"][0]
    toml = ('[search_direct_best]\nbase = "baseline"\nn_embd = 32\nn_head = 2\nn_layer = 1\nblock_size = 16\n'
            'batch_size = 2\neval_iters = 2\neval_interval = 5\nmax_iters = 10\nprecision = "float32"\n'
            'compile = false\nvocab_size = 1000\nlog_interval = 0\nlearning_rate = 0.003\nhidden_init_std = 0.03\n')
    row = {k: v for k, v in finished.items() if k not in ("direct", "verdicts", "wall_s_this_run")}
    row.update(pending="(c)", target_config={}, arms={"build": {"machine": "elsewhere"}},
               direct_best={"toml": toml, "search_trials": 3, "search_flops": 1e9, "earlier_set_aside": False})
    work = tmp_path / "work"
    (work / "experiments").mkdir(parents=True)
    (work / "experiments" / "search_direct_best.toml").write_text(toml.replace("0.003", "0.01"))  # another (c)'s
    saved = []
    done = build.run_budget(finished["budget"], work, ["--dataset", TINY_DATASET], 2, [], [], row,
                            lambda r: saved.append(dict(r)))
    assert not saved and not (work / "ray_results" / "build_target").exists()  # no arm before (c)'s retraining ran
    assert "0.01" in (work / "stale_direct" / "experiments" / "search_direct_best.toml").read_text()
    assert len(done["direct"]["runs"]) == 2 and done["direct"]["settings"]["learning_rate"] == 0.003
    assert done["direct"]["search_trials"] == 3 and done["direct"]["shape"] == finished["build"]["shape"]
    assert set(done["verdicts"]) == {"baseline", "chinchilla", "direct_search"}
    assert done["arms"]["build"] == {"machine": "elsewhere"} and done["arms"]["direct_retrain"]["date"]
    assert not {"pending", "target_config", "direct_best"} & set(done)
    with pytest.raises(SystemExit, match="more seeds need them"):  # more seeds for a row whose build's runs are gone
        build.more_seeds(done, work, [], 3, [], [])


def test_law_forms_bench_recovers_a_joint_law_and_holds_its_largest_model_out():
    """Runs made from Kaplan et al.'s eq. 1.5 (written out here, E added), the largest size's runs
    lifted by 10% of their gap to the floor: fitted without that size, the joint law predicts the
    equation's own values for it (so its errors are -0.10/1.10 of the lifted gap, signed: predicted
    minus measured, as printed) and recovers the exponents; the additive law, which gives every size
    one gain in D, misses by more. Only the family's finished seed-1337 runs on version 2 at the
    asked budgets are read, each at its best rate."""
    import json
    import re

    import numpy as np
    import pytest

    forms = _bench("scaling_law_forms")
    from search_spaces.scaling import SIZES

    entropy, n_c, d_c, alpha_n, alpha_d, lift = 0.08, 2e5, 3e5, 0.5, 0.4, 0.10
    names = [s[0] for s in SIZES]
    rows = []
    for k, size in enumerate([*names, "s6"]):
        for iters in (300, 600, 1200, 2400, 4800):
            n, d = 5e4 * 2.3 ** k, 2048.0 * iters
            loss = entropy + ((n_c / n) ** (alpha_n / alpha_d) + d_c / d) ** alpha_d
            if size == names[-1]:
                loss += lift * (loss - entropy)
            run = {"corpus": forms.CORPUS, "size": size, "iters": iters, "seed": 1337, "status": "finished",
                   "lr_mult": 1.0, "eval_windows": "w", "non_embedding_params": n, "tokens": d,
                   "entropy_bpb": entropy, "best_val_bpb_context": loss}
            worse = {**run, "lr_mult": 0.5, "best_val_bpb_context": loss + 0.05}  # a worse rate: not read
            rows += [run, worse, {**run, "seed": 1338, "best_val_bpb_context": loss + 0.2},
                     {**run, "corpus": "storyworld", "best_val_bpb_context": loss + 0.2},
                     {**run, "lr_mult": 2.0, "status": "error", "best_val_bpb_context": loss - 0.05}]
    runs = forms.family_runs(json.loads(json.dumps(rows)), [600, 1200, 2400, 4800])
    assert len(runs) == 4 * len(SIZES) and {r["lr_mult"] for r in runs} == {1.0}
    assert "s6" not in {r["size"] for r in runs}
    result = forms.held_out(runs)
    gap = result["L"] - entropy
    joint = (np.asarray(result["predicted"]["joint"]) - result["L"]) / gap
    additive = (np.asarray(result["predicted"]["additive"]) - result["L"]) / gap
    assert joint == pytest.approx(np.full(4, -lift / (1 + lift)), abs=0.005), joint
    assert np.abs(additive + lift / (1 + lift)).max() > 0.02, additive
    assert result["exponents"]["joint"] == pytest.approx((alpha_n, alpha_d), rel=0.02)
    lines = forms.lines(result, "600,1200,2400,4800")
    assert lines[0].startswith("budgets 600,1200,2400,4800 (iterations): 4 runs")
    printed = {line.split()[0]: [float(x) / 100 for x in re.findall(r"([+-]\d+\.\d)%", line)] for line in lines[1:]}
    assert printed["joint"] == pytest.approx(joint, abs=0.0006)
    assert printed["additive"] == pytest.approx(additive, abs=0.0006)


def test_seed_study_banks_each_run_and_a_lost_machine_trains_only_what_was_not_banked(tmp_path):
    """bench/seed_study.py on the seed's `vocab` study, tiny, at two seeds: every run that ended is
    banked with the figures its own result.json holds, and the comparison over the bank gives the
    Welch interval scipy gives for those figures. With the work dir lost (a new machine) and one
    banked run removed, a second run trains that run alone; other options than the bank's are refused."""
    import json
    import shutil

    import pandas as pd
    import pytest
    from scipy import stats

    from conftest import TINY_SETS, _lines

    bank, work = tmp_path / "bank", tmp_path / "work"
    args = [sys.executable, str(ROOT / "bench" / "seed_study.py"), "vocab", "--tag", "t", "--bank-root", str(bank),
            "--work", str(work), "--seeds", "2", "--max-iters", "10", "--set", "eval_interval=5",
            "--cpus-per-trial", "1", "--max-concurrent", "2", "--bank-every", "0.5", *TINY_SETS]
    first = subprocess.run(args, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert first.returncode == 0, first.stderr[-3000:]
    # runs are banked while their study trains: before it prints its own table at its end (the same stdout)
    assert first.stdout.index("banked ") < first.stdout.index("best_val_bpb"), first.stdout[:3000]
    files = sorted(p.name for p in (bank / "t").glob("*_seed*.json"))
    assert files == [f"{e}_seed{s}.json" for e in ("baseline", "vocab_medium", "vocab_small") for s in (1337, 1338)]
    for name in files:  # each banked figure is the best of its trial's own evals
        record = json.loads((bank / "t" / name).read_text())
        trial = next(work.glob(f"t/*/ray_results/*/{name[:-5]}"))  # one study, two seeds: EXPERIMENT_seedS
        evals = [r["val_bpb"] for r in _lines(trial / "result.json") if "val_bpb" in r]
        assert record["trial"]["best_val_bpb"] == pytest.approx(min(evals)) and len(record["history"]) >= 2
    table = pd.read_csv(bank / "t" / "comparison.csv").set_index("experiment")
    runs = {e: [json.loads((bank / "t" / f"{e}_seed{s}.json").read_text())["trial"]["best_val_bpb"]
                for s in (1337, 1338)] for e in ("baseline", "vocab_small")}
    ci = stats.ttest_ind(runs["vocab_small"], runs["baseline"], equal_var=False).confidence_interval(0.95)
    assert table.loc["vocab_small", "diff_low"] == pytest.approx(ci.low) and table.loc["vocab_small", "runs"] == 2
    assert table.loc["vocab_small", "diff_high"] == pytest.approx(ci.high) and (bank / "t" / "comparison.png").is_file()
    lines = {p: len(_lines(p)) for p in work.glob("t/*/ray_results/*/*/result.json")}
    (bank / "t" / "baseline_seed1337.json").unlink()  # the same machine, a run not banked: banked from its study
    again = subprocess.run(args, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert again.returncode == 0 and "banked baseline_seed1337.json" in again.stdout, again.stderr[-3000:]
    assert "seeds 13" not in again.stdout and (bank / "t" / "baseline_seed1337.json").is_file()  # no study ran
    assert lines == {p: len(_lines(p)) for p in work.glob("t/*/ray_results/*/*/result.json")}  # nothing trained
    shutil.rmtree(work)  # a new machine: the bank is all that is left, and one run is not in it
    (bank / "t" / "vocab_medium_seed1338.json").unlink()
    second = subprocess.run(args, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "seeds 1337, 1338: baseline, vocab_small, vocab_medium" in first.stdout
    assert "seeds 1338: vocab_medium" in second.stdout and "seeds 1337" not in second.stdout
    trained = [p for p in work.glob("t/*/ray_results/*/*") if p.is_dir()]
    assert [p.name for p in trained] == ["vocab_medium"] and trained[0].parts[-4] == "s1338x1_vocab_medium"
    assert {r["seed"] for r in _lines(trained[0] / "result.json")} == {1338}
    assert (bank / "t" / "vocab_medium_seed1338.json").is_file()
    other = subprocess.run([*args, "--set", "learning_rate=1e-2"], capture_output=True, text=True, timeout=120,
                           stdin=subprocess.DEVNULL)
    assert other.returncode != 0 and "was banked with options" in other.stderr, other.stderr[-2000:]
    seeded = subprocess.run([*args, "--set", "seed=5"], capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL)
    assert seeded.returncode != 0 and "the seeds are this script's" in seeded.stderr, seeded.stderr[-2000:]
