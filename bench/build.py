#!/usr/bin/env python
"""`build` measured against the simple ways of spending the same compute (issue 41's benchmark).

    python bench/build.py --budgets 1e13 3e13 1e14            resumable: run it again to go on
    python bench/build.py --budgets 3e13 --dataset corpus.txt --tag text
    python bench/build.py --replot

For each budget C, in WORK/<tag>_<C>[_h<exponent>][_sweep-budget] (every step is an slm-tune command, run with --resume, so an
interrupted bench continues where it stopped and a finished step is kept):
1. `build --budget C --against-simple --repeats SEEDS`: the build's model at SEEDS seeds, and
   (a) the seed's baseline settings and (b) the default settings at 20 tokens a parameter, each
   trained on all of C at SEEDS seeds;
2. (c) a random search (ASHA) over sp's rate and hidden init at the build's chosen shape and
   length, stopped at C training FLOPs; its best configuration retrained at the build's seeds
   (the search's own best run was chosen on the windows it is scored on: optimistic).
The build's seeds against each alternative's: Welch's 95% interval, Holm over the three.
Every run trains on PROXY's settings (one vocabulary and batch for every budget, so a budget of
1e13 fits the smallest sweep); the machine, date and command are recorded with each budget.
Writes OUT (JSON, one entry per corpus, budget, rate rule and sweep design) and OUT with .png (best val bits per byte by budget).
Each arm is saved into OUT as it finishes (the build with (a) and (b); (c)'s search, its best
configuration; (c)'s retraining), so a bench whose WORK is lost (a new machine) starts again at
the arm that was running; a row still pending is left out of the table and the plot.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROXY = ["--set", "vocab_size=2000", "--set", "batch_size=16", "--set", "n_layer=2", "--set", "n_embd=32",
         "--set", "mup_base_width=32", "--set", "compile=false", "--min-iters", "25"]
SEARCHED = ("learning_rate", "hidden_init_std", "description")  # what (c) searches, and its text
SP_SPACE = ('base = "{base}"\nlearning_rate = {{ loguniform = [3e-4, 3e-2] }}\n'
            'hidden_init_std = {{ loguniform = [0.01, 0.1] }}\n')


def studies(*args: str, log: Path) -> None:
    """One slm-tune command; its output appended to the budget's log; a failure stops the bench."""
    with log.open("a") as f:
        f.write(f"\n$ studies.py {' '.join(args)}\n")
        f.flush()
        code = subprocess.call([sys.executable, str(ROOT / "studies.py"), *args], stdout=f, stderr=f,
                               stdin=subprocess.DEVNULL)
    if code:
        sys.exit(f"studies.py {' '.join(args[:3])} ... failed ({code}); see {log}")


def run_budget(budget: float, work: Path, dataset: list[str], seeds: int, proxy: list[str],
               horizon: list[str], row: dict, save) -> dict:
    """One row, arm by arm. Each finished arm is saved into ROW and OUT at once (`save`), so a lost
    work dir (a new machine) costs only the arm that was running: the build (its report), (c)'s
    search (its best configuration), (c)'s retraining. ROW holds what an earlier run saved."""
    work.mkdir(parents=True, exist_ok=True)
    log, start = work / "bench.log", time.time()
    if "build" not in row:
        row.update(build_arm(budget, work, dataset, seeds, proxy, horizon, log), pending="(c)")
        row.setdefault("arms", {})["build"] = _arm(start)
        save(row)
    if "direct_best" not in row:
        t = time.time()
        row["direct_best"] = direct_search(work, budget, row["target_config"], dataset, log)
        row.setdefault("arms", {})["direct_search"] = _arm(t)
        save(row)
    t = time.time()
    row["direct"] = direct_retrain(work, row, dataset, seeds, log)
    row.setdefault("arms", {})["direct_retrain"] = _arm(t)
    row["verdicts"] = verdicts(row["build"], row["direct"])
    row["wall_s_this_run"] = time.time() - start  # the arms this invocation ran ("arms": each one's own)
    for k in ("pending", "target_config", "direct_best"):
        row.pop(k)
    return row


def more_seeds(row: dict, work: Path, dataset: list[str], seeds: int, proxy: list[str], horizon: list[str]) -> None:
    """A finished ROW at SEEDS seeds: `build --resume --repeats SEEDS` trains the target's and (a)'s
    and (b)'s next seeds, `run --resume --repeats SEEDS` (c)'s; nothing trained before is trained
    again, and the verdicts are taken again over every seed. Needs the row's work dir."""
    if not (work / "experiments" / "build_report.json").is_file():
        sys.exit(f"--seeds {seeds}: the row's runs are not in {work} (its work dir); more seeds need them")
    log, start = work / "bench.log", time.time()
    studies("build", "--budget", f"{row['budget']:g}", "--against-simple", "--repeats", str(seeds), "--seed", "0",
            *horizon, *proxy, *dataset, "--output-dir", str(work), "--resume", log=log)
    row["build"] = summary(json.loads((work / "experiments" / "build_report.json").read_text()))
    studies("run", "search_direct_best", "--experiments-file", str(work / "experiments" / "search_direct_best.toml"),
            "--repeats", str(seeds), "--output-dir", str(work), *dataset, "--resume", log=log)
    retrained = json.loads((work / "experiments" / "search_direct_best_results.json").read_text())
    row["direct"]["runs"] = _direct_runs(retrained)
    row["verdicts"], row["seeds"] = verdicts(row["build"], row["direct"]), seeds
    row.setdefault("arms", {})[f"more_seeds_{seeds}"] = _arm(start)


def _arm(start: float) -> dict:
    """Where and when an arm ran (a row's arms can run on different machines and days), and its wall time."""
    from slm_tune.tune.study_record import machine_info  # noqa: PLC0415

    return {"machine": machine_info()["cpu"], "date": time.strftime("%Y-%m-%d"), "wall_s": time.time() - start}


def build_arm(budget: float, out: Path, dataset: list[str], seeds: int, proxy: list[str], horizon: list[str],
              log: Path) -> dict:
    """The build with its simple alternatives, (a) and (b): the row's fields from its report."""
    common = [*proxy, *dataset, "--output-dir", str(out)]
    resume = ["--resume"] if (out / "ray_results").exists() else []
    start = time.time()
    studies("build", "--budget", f"{budget:g}", "--against-simple", "--repeats", str(seeds), "--seed", "0",
            *horizon, *common, *resume, log=log)
    build_end = time.time()
    report = json.loads((out / "experiments" / "build_report.json").read_text())
    import torch  # noqa: PLC0415  (the versions the runs used, for the record)
    import ray  # noqa: PLC0415

    from slm_tune.tune.study_record import machine_info  # noqa: PLC0415

    return {"budget": budget, "machine": machine_info()["cpu"], "date": time.strftime("%Y-%m-%d"), "seeds": seeds,
            "command": " ".join(["python bench/build.py", *sys.argv[1:]]), "versions": {"torch": torch.__version__,
            "ray": ray.__version__}, "build_wall_s": build_end - start,
            "build_resumed": bool(resume), "build_started_at": start, "build_ended_at": build_end,
            "horizon_exponent": report["proxy"].get("horizon_exponent", 0.0),
            **({"reused": json.loads((out / "reused.json").read_text())} if (out / "reused.json").exists() else {}),
            **(driver_accounting(out, start, build_end) if not resume else {}),
            "build": summary(report),
            "target_config": json.loads((out / "experiments" / "build_target_results.json").read_text())["config"]}


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()  # study.json's local time, as it was written


def driver_accounting(out: Path, start: float, end: float) -> dict:
    """What the build's driver adds beyond its own stages' training (issue 41: at most 10%). The
    build's own stages are search, sweep and target; the simple alternatives are the bench's, so
    their stage is left out, but what the driver does after it (report, export, sample) is in.
    training_s: the seconds in which at least one trial of the own stages was running;
    driver_s: the rest of the build's wall time up to the target stage's end, plus the tail after
    the simple stage. Stage ends come from each stage's study.json (whole seconds)."""
    runs = out / "ray_results"
    read = lambda stage: json.loads((runs / stage / "study.json").read_text())  # noqa: E731
    own = ("build_search", "build_sweep", "build_target")
    training = busy_seconds(sorted(p for stage in own for p in (runs / stage).glob("*/result.json")))
    last = read("build_simple") if (runs / "build_simple" / "study.json").exists() else read("build_target")
    driver = (_epoch(read("build_target")["ended_at"]) - start - training) + (end - _epoch(last["ended_at"]))
    return {"build_training_s": training, "build_driver_s": driver, "driver_over_training": driver / training,
            "driver_share": driver / (driver + training)}


def busy_seconds(results: list[Path]) -> float:
    """Seconds in which at least one of the trials was running: the union of each trial's
    [end - time_since_restore, end] (Ray's timestamps are whole seconds). The build's wall time
    less this is what the driver adds: Ray's start, stage changes, fits, reports, exports."""
    spans = []
    for path in results:
        lines = path.read_text().splitlines()
        if lines:
            last = json.loads(lines[-1])
            spans.append((last["timestamp"] - last["time_since_restore"], last["timestamp"]))
    busy, end = 0.0, float("-inf")
    for a, b in sorted(spans):
        if b > end:
            busy += b - max(a, end)
            end = b
    return busy


def direct_search(out: Path, budget: float, target: dict, dataset: list[str], log: Path) -> dict:
    """(c)'s search: sp's rate and init at the build's target shape and length (TARGET, its
    config), with all of the budget. Returns its best configuration (the TOML text) and counts."""
    from slm_tune.config import EXPERIMENT_CONFIGS  # noqa: F401  (the registry the TOML names)

    sp = {**{k: v for k, v in target.items() if k != "name"}, "parametrization": "sp", "depth_parametrization": "none",
          "base_depth": 0, "mup_base_head_size": 0, "mup_output_mult": 1.0, "mup_attn_mult": 1.0}
    set_aside = _set_aside_other_direct(out, sp) or (out / "stale_direct").exists()
    (out / "direct_base.json").write_text(json.dumps({"direct_base": sp}))
    (out / "direct.toml").write_text(SP_SPACE.format(base="direct_base"))
    files = ["--experiments-file", str(out / "direct_base.json"), "--output-dir", str(out), *dataset]
    resume = ["--resume"] if (out / "ray_results" / "direct").exists() else []
    studies("search", "--space", str(out / "direct.toml"), "--budget", f"{budget:g}", "--num-samples", "64",
            "--seed", "0", *files, *resume, log=log)
    search = sorted((out / "experiments").glob("direct_*_results.json"))
    started = list((out / "ray_results" / "direct").glob("*/result.json"))
    return {"toml": (out / "experiments" / "search_direct_best.toml").read_text(), "search_trials": len(search),
            "earlier_set_aside": set_aside, "search_flops": sum(_last_flops(p) for p in started),
            "search_trials_started": len(started),
            "search_trials_finished": sum(json.loads(p.read_text()).get("status") == "finished" for p in search)}


def direct_retrain(out: Path, row: dict, dataset: list[str], seeds: int, log: Path) -> dict:
    """(c)'s best configuration (ROW's, written back if the work dir lost it) retrained at the
    build's seeds; (c)'s entry of the row."""
    best = out / "experiments" / "search_direct_best.toml"
    if best.exists() and best.read_text() != row["direct_best"]["toml"]:
        _set_aside_direct(out)  # another (c)'s (a copied folder): the row's own search decides
    if not best.exists():
        best.parent.mkdir(parents=True, exist_ok=True)
        best.write_text(row["direct_best"]["toml"])
    resume = ["--resume"] if (out / "ray_results" / "run_search_direct_best").exists() else []
    studies("run", "search_direct_best", "--experiments-file", str(best), "--repeats", str(seeds),
            "--output-dir", str(out), *dataset, *resume, log=log)
    retrained = json.loads((out / "experiments" / "search_direct_best_results.json").read_text())
    return {"shape": row["build"]["shape"], **{k: v for k, v in row["direct_best"].items() if k != "toml"},
            "runs": _direct_runs(retrained),
            "settings": {k: retrained["config"][k] for k in ("learning_rate", "hidden_init_std")}}


def _direct_runs(retrained: dict) -> list[float]:
    """(c)'s retrained seeds' best val bits per byte, from its results file: the runs that ended with a figure."""
    from analysis.load import UNFINISHED

    return [r["best_val_bpb"] for r in retrained.get("per_run", [retrained])
            if r.get("status") not in UNFINISHED and r.get("best_val_bpb") is not None]


DIRECT = ("ray_results/direct", "ray_results/run_search_direct_best", "direct_base.json", "direct.toml")
DIRECT_GLOBS = ("experiments/direct_*", "experiments/search_direct_best*", "best_model_direct_*",
                "best_model_search_direct_best.pt", "ray_results/run_search_direct_best-*")  # -N: seeds added
REUSED = ("ray_results/build_search", "ray_results/build_simple")
REUSED_GLOBS = ("experiments/build_search_*", "experiments/build_simple_*", "best_model_build_search_*",
                "best_model_build_simple_*", "ray_results/build_simple-*")


def _set_aside_other_direct(out: Path, sp: dict) -> bool:
    """(c) stored for another shape or length (a reused work dir whose build chose differently) is
    moved to WORK/stale_direct, so (c) runs again at this build's shape (True: it was). What (c)
    searches (rate, init) and the description are not compared: the build's own rate does not change (c)."""
    stored = out / "direct_base.json"
    fixed = lambda c: {k: v for k, v in c.items() if k not in SEARCHED}  # noqa: E731
    if not stored.exists() or fixed(json.loads(stored.read_text())["direct_base"]) == fixed(sp):
        return False
    _set_aside_direct(out)
    return True


def _set_aside_direct(out: Path) -> None:
    """(c)'s files in OUT moved to OUT/stale_direct (stale_direct-2, -3... when set aside again), kept
    for the record, out of the way of a new (c)."""
    stale = next(p for p in (out / "stale_direct", *(out / f"stale_direct-{n}" for n in range(2, 1000)))
                 if not p.exists())
    for rel in [*DIRECT, *(str(p.relative_to(out)) for g in DIRECT_GLOBS for p in out.glob(g))]:
        if (out / rel).exists():
            (stale / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).rename(stale / rel)


def reuse(earlier: Path, out: Path, changes: dict) -> None:
    """A build with another rate rule or sweep design (`changes`: the plan's keys that differ) at
    the same budget, corpus and proxy: the search (run before either acts), the simple alternatives
    (which never use them) and (c) (kept only if the build chooses the same shape and length:
    _set_aside_other_direct) are copied from EARLIER's work dir; the sweep and the target run again.
    Said in WORK/reused.json and the bench's row."""
    import shutil

    if (out / "ray_results").exists():
        return
    if not (earlier / "experiments" / "build_report.json").is_file():
        raise SystemExit(f"--reuse-from: {earlier} holds no finished build (no experiments/build_report.json); name "
                         "a folder of WORK whose build has finished")
    finished = _direct_finished(earlier)  # (c) only once retrained at every seed: a copy taken while it runs is torn
    direct = [*DIRECT, *DIRECT_GLOBS] if finished else []
    for rel in [*REUSED, *(d for d in direct if d in DIRECT), *(str(p.relative_to(earlier)) for g in
                                                               (*REUSED_GLOBS, *(d for d in direct if d in DIRECT_GLOBS))
                                                               for p in earlier.glob(g))]:
        src, dst = earlier / rel, out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst)
        elif src.exists():
            shutil.copy2(src, dst)
    plan = {k: v for k, v in json.loads((earlier / "experiments" / "build_plan.json").read_text()).items()
            if k != "sweep_sizes"}  # the sizes follow the design: the build records its own
    (out / "experiments").mkdir(parents=True, exist_ok=True)
    (out / "experiments" / "build_plan.json").write_text(json.dumps({**plan, **changes}))
    (out / "reused.json").write_text(json.dumps({"from": str(earlier), "stages": ["build_search", "build_simple",
                                                 *(["direct (if the same shape)"] if finished else [])]}))


def _direct_finished(work: Path) -> bool:
    """Whether (c)'s retraining ended at every seed its study asked for (its results file is
    written as soon as the first seed ends)."""
    from analysis.load import UNFINISHED
    from slm_tune.tune.run import seeds_stored

    runs_dir = work / "ray_results"
    added = sorted((p for p in runs_dir.glob("run_search_direct_best-*") if p.name.rsplit("-", 1)[1].isdigit()),
                   key=lambda p: int(p.name.rsplit("-", 1)[1]))
    results, study = work / "experiments" / "search_direct_best_results.json", \
        [runs_dir / "run_search_direct_best", *added][-1] / "study.json"  # the newest run: seeds added last
    if not (results.is_file() and study.is_file()):
        return False
    r = json.loads(results.read_text())
    runs = r.get("per_run", [r])
    return len(runs) >= seeds_stored(json.loads(study.read_text())) and all(x.get("status") not in UNFINISHED
                                                                            for x in runs)


def _last_flops(result: Path) -> float:
    lines = result.read_text().splitlines()
    return json.loads(lines[-1]).get("train_flops", 0.0) if lines else 0.0


def summary(report: dict) -> dict:
    c, m = report["choice"], report["measured"]
    return {"spent": report["spent"], "how": c["how"], "shape": c["shape"], "predicted": c["predicted"],
            "predicted_interval_95": c["predicted_interval_95"], "measured_metric": m["metric"],
            "measured": m.get("mean"), "prediction_error": m.get("prediction_error"),
            "runs": m["best_val_bpb_runs"], "held_out": (report.get("fit") or {}).get("held_out"),
            "simple": {k: {kk: v.get(kk) for kk in ("runs", "shape", "flops_per_run")}
                       for k, v in report.get("simple", {}).items()}}


def verdicts(build: dict, direct: dict) -> dict:
    """The build's seeds against (a), (b) and (c) (BUILD: the row's summary of its report): Welch,
    Holm over the three."""
    import numpy as np

    from analysis.significance import holm, verdict, welch

    mine = np.asarray(build["runs"])
    others = {k.removeprefix("build_simple_"): v["runs"] for k, v in build.get("simple", {}).items()}
    others["direct_search"] = direct["runs"]
    rows = {k: dict(zip(("diff", "lo", "hi", "p"), welch(mine, np.asarray(v)))) for k, v in others.items()
            if len(v) > 1 and len(mine) > 1}
    for k, p in zip(rows, holm([r["p"] for r in rows.values()])):
        rows[k].update(p_holm=p, verdict=verdict(rows[k]["diff"], p))
    return rows


def plot(results: list[dict], path: Path) -> None:
    """Each seed's best val bits per byte, by budget, a panel per corpus (log scale: the seed's
    baseline is far above the rest at these budgets)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tags = sorted({r["tag"] for r in results})
    widths = [sum(r["tag"] == tag for r in results) for tag in tags]
    fig, axes = plt.subplots(1, len(tags), figsize=(2 + sum(2.7 + 1.3 * w for w in widths), 4.8), squeeze=False,
                             gridspec_kw={"width_ratios": [1.5 + 1.3 * w for w in widths]})
    names = ("build", "baseline", "chinchilla", "direct_search")
    for ax, tag in zip(axes[0], tags):
        rows = sorted((r for r in results if r["tag"] == tag), key=_order)
        for i, r in enumerate(rows):
            runs = {"build": r["build"]["runs"], "direct_search": r["direct"]["runs"],
                    **{k.removeprefix("build_simple_"): v["runs"] for k, v in r["build"]["simple"].items()}}
            for j, name in enumerate(names):
                ys = runs.get(name, [])
                ax.plot([i + (j - 1.5) * 0.18] * len(ys), ys, "o", color=f"C{j}", label=name if i == 0 else None)
        ax.set_xticks(range(len(rows)), [f"{r['budget']:.0e}\nrate rule {_beta(r):g}\n{_row_sweep(r)} sweep\n"
                                         f"{_cpu(r)}" for r in rows], fontsize=8)
        ax.set_xlim(-0.6, len(rows) - 0.4)
        ax.set_yscale("log")
        ax.set_xlabel("training FLOPs")
        ax.set_ylabel("best val bits per byte (each seed)")
        ax.set_title(tag, fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle("build against the simple ways of spending the same compute", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def table(results: list[dict]) -> str:
    """The docs page's table: one row per corpus and budget, every figure from the JSON."""
    head = ("| corpus | budget | CPU | build's model | how chosen | predicted / measured | build | (a) baseline | "
            "(b) 20 tokens/param | (c) whole-budget search | stages 1+2 | driver / training |")
    rows = [head, "|" + "---|" * 12]
    for r in sorted(results, key=lambda r: (r["tag"], *_order(r))):
        b, sh = r["build"], r["build"]["shape"]
        pred = (f"{b['predicted']:.4f} / {b['measured']:.4f} ({b['prediction_error']:+.1%})"
                if b.get("predicted") is not None else "none (fallback)")
        cells = [r["tag"], f"{r['budget']:.0e}", _cpu(r),
                 f"{sh['n_layer']}x{sh['n_embd']}, N {sh['non_embedding_params'] / 1e6:.2f}M, {sh['tokens'] / 1e6:.1f}M tok",
                 ("fit" if b["how"].startswith("fit") else "fallback") + f", rate rule {_beta(r):g}, "
                 f"{_row_sweep(r)} sweep", pred,
                 _mean(b["runs"])]
        for k in ("baseline", "chinchilla", "direct_search"):
            v = r["verdicts"].get(k)
            cells.append(f"{v['diff']:+.3f} [{v['lo']:+.3f}, {v['hi']:+.3f}] {v['verdict']}" if v else "n/a")
        shares = b["spent"]["shares"]
        cells.append(f"{shares['search'] + shares['sweep']:.0%}")
        cells.append(f"{r['driver_over_training']:.1%}" if r.get("driver_over_training") is not None else "resumed")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _cpu(row: dict) -> str:
    """The row's CPU, short: 'Intel Xeon', 'AMD EPYC'."""
    return " ".join(row["machine"].replace("(R)", "").split()[:2])


def _beta(row: dict) -> float:
    return row.get("horizon_exponent", 0.0)  # rows from before the rule ran at the search's rate


def _mean(runs: list[float]) -> str:
    return f"{sum(runs) / len(runs):.4f} (" + ", ".join(f"{x:.4f}" for x in runs) + ")"


def _work_name(tag: str, budget: float, exponent: float, sweep: str) -> str:
    """WORK's folder for a row: exponent 0 and the fixed sweep, the runs before either option, unmarked."""
    return f"{tag}_{budget:g}" + (f"_h{exponent:g}" if exponent else "") + (f"_sweep-{sweep}" if sweep != "fixed" else "")


def _order(row: dict) -> tuple:
    """A corpus's rows by budget, then the runs before each option (rule 0, fixed sweep) first."""
    return row["budget"], _beta(row), _row_sweep(row) != "fixed"


def _row_sweep(row: dict) -> str:
    return row.get("sweep", "fixed")  # rows stored before the budget-grown sweep ran the fixed one


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", type=float, nargs="+", default=[1e13, 3e13, 1e14])
    ap.add_argument("--dataset", help="a corpus other than storyworld (its results are tagged with --tag)")
    ap.add_argument("--tag", default="storyworld")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "build_runs")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "build.json")
    ap.add_argument("--replot", action="store_true")
    ap.add_argument("--horizon-exponent", type=float, default=None,
                    help="the build's --horizon-exponent (default: the build's own, 0); rows are kept per exponent")
    ap.add_argument("--sweep", choices=("budget", "fixed"), default="budget", help="the build's --sweep; rows are kept "
                    "per design")
    ap.add_argument("--reuse-from", metavar="FOLDER", help="copy the search, the simple alternatives and (c) from "
                    "this folder of WORK, the same budget's and corpus's run at another exponent or sweep (they do "
                    "not depend on either), e.g. storyworld2_1e+14; with one budget only")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting over PROXY's, for every run (a smoke run of the bench at a tiny proxy)")
    a = ap.parse_args()
    doc = json.loads(a.out.read_text()) if a.out.exists() else {"results": []}
    if not a.replot:
        dataset = ["--dataset", a.dataset] if a.dataset else []
        from workflows.build_plan import HORIZON_EXPONENT

        exponent = HORIZON_EXPONENT if a.horizon_exponent is None else a.horizon_exponent
        exponent = float(f"{exponent:g}")  # as the build reads it back (the row's key)
        if a.reuse_from and len(a.budgets) != 1:
            ap.error("--reuse-from names one budget's folder: give one --budgets")
        for budget in a.budgets:
            key = (a.tag, budget, exponent, a.sweep)
            row = next((r for r in doc["results"] if _key(r) == key), None)
            if row is not None and "pending" not in row:
                if row["seeds"] < a.seeds:  # a finished row, more seeds asked: each arm's next seeds
                    more_seeds(row, a.work / _work_name(a.tag, budget, exponent, a.sweep), dataset, a.seeds,
                               [*PROXY, *(x for kv in a.set for x in ("--set", kv))],
                               ["--horizon-exponent", f"{exponent:g}", "--sweep", a.sweep])
                    doc = store(a.out, row)
                continue
            work = a.work / _work_name(a.tag, budget, exponent, a.sweep)
            if a.reuse_from and not (row or {}).get("build"):  # once saved, the row's own arms decide
                reuse(a.work / a.reuse_from, work, {"horizon_exponent": exponent, "sweep": a.sweep})
            row = row or {"tag": a.tag, "sweep": a.sweep}
            run_budget(budget, work, dataset, a.seeds, [*PROXY, *(x for kv in a.set for x in ("--set", kv))],
                       ["--horizon-exponent", f"{exponent:g}", "--sweep", a.sweep], row, lambda r: store(a.out, r))
            doc = store(a.out, row)
            print(json.dumps({k: row[k] for k in ("tag", "budget", "verdicts")}, indent=1), flush=True)
    done = [r for r in doc["results"] if "pending" not in r]
    if done:
        plot(done, a.out.with_suffix(".png"))
        print(table(done))
    for r in doc["results"]:
        if "pending" in r:
            print(f"not in the table: {r['tag']} {r['budget']:g} ({_row_sweep(r)} sweep), {r['pending']} pending: "
                  "run the same command again to go on")


def _key(row: dict) -> tuple:
    return row.get("tag"), row["budget"], row.get("horizon_exponent", 0.0), _row_sweep(row)


def store(out: Path, row: dict) -> dict:
    """ROW into OUT, read afresh (another bench may have stored rows since this one started),
    replacing its earlier state (the row moves to the end); written whole to a temporary file, then
    renamed over OUT, under a lock file beside it (OUT.lock), so two benches storing at once both
    keep their rows. The document, as written."""
    import tempfile

    from filelock import FileLock

    with FileLock(out.with_name(out.name + ".lock")):
        doc = json.loads(out.read_text()) if out.exists() else {"results": []}
        doc["results"] = [r for r in doc["results"] if _key(r) != _key(row)] + [row]
        with tempfile.NamedTemporaryFile("w", dir=out.parent, suffix=".tmp", delete=False) as f:
            f.write(json.dumps(doc, indent=1))
        Path(f.name).replace(out)
    return doc


if __name__ == "__main__":
    main()
