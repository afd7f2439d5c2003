#!/usr/bin/env python
"""The replay benchmark: searchers and schedulers against a table of slm-tune's own learning curves.

    python studies.py tabular --max-concurrent 2 --cpus-per-trial 1 --output-dir DIR    train the table (resumes)
    python bench/tabular.py export --from DIR          DIR's stored runs -> bench/tabular.parquet
    python bench/tabular.py replay [--seeds 20]        every searcher x scheduler, 20 searcher seeds each
    python bench/tabular.py replay --replot            the figures and plot again from bench/tabular_replay.json
    python bench/tabular.py replay --searchers gp --schedulers fifo asha --no-multi --out bench/tabular_replay_gp.json
    python bench/tabular.py replay --replot --merge bench/tabular_replay_gp.json     (gp suggests slowly: apart)
    python bench/tabular.py replay --seeds 100 --searchers random --schedulers fifo asha asha-rf4-g1 --no-multi --out X.json
    python bench/tabular.py replay --seeds 100 --trials 24 --searchers random --schedulers fifo --multi random qmc nsga2 --out Y.json

`replay` runs each pairing's search against the table (slm_tune.tune.replay: the real Optuna
samplers and Ray schedulers, ask-and-tell on a simulated clock of two concurrent trials) and
writes bench/tabular_replay.json (every search's incumbent against compute) and
bench/tabular_replay.png (median normalised regret against training FLOPs, with the interquartile
band). A scheduler named asha-rfR-gG[-bB] is ASHA with reduction factor R, a grace period of G
evals and B brackets in place of the library's (2, 1, 1): the variants the benchmark measured
before keeping the library's. It prints (bench/tabular_report.py), at normalised regret 0.05, 0.02
and 0.01, how many of the table's runs end within it and per pairing the median and interquartile
range of the compute to reach it, with the pairing against random search as a ratio of medians
with a bootstrap interval and a Holm-adjusted Mann-Whitney verdict; how many seeds that reached
0.01 end on the table's best run; each sampler's final best with ASHA against FIFO, seed by seed;
then the 2-objective searches' hypervolumes. `--replot` recomputes all of it from the stored JSON
(every search's incumbents are stored, so any threshold can be read off without replaying).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TABLE = ROOT / "bench" / "tabular.parquet"
OUT = ROOT / "bench" / "tabular_replay.json"
SEARCHERS = ("random", "optuna", "tpe-independent", "gp", "qmc")
SCHEDULERS = ("fifo", "asha", "hyperband", "median")
MULTI = ("random", "optuna", "nsga2")
OBJECTIVES = ("best_val_bpb", "total_params")
ASHA_VARIANT = re.compile(r"asha-rf(\d+)-g(\d+)(?:-b(\d+))?$")


def export(source: Path, path: Path) -> None:
    """The stored `tabular` study's runs -> one parquet table (a row per eval)."""
    import pandas as pd

    from analysis.load import evals, find_runs, load_runs
    from search_spaces import get_search

    trials, history = load_runs(find_runs(source, ["tabular"]))
    trials = trials[trials["status"] == "finished"]
    keys = get_search("tiny_lm").searched
    rows = []
    for _, t in trials.iterrows():
        h = evals(history[(history["experiment"] == t["experiment"]) & (history["seed"] == t["seed"])])
        h = h.sort_values("iteration")
        c = t["config"]
        tokens = h["iteration"].to_numpy() * c["batch_size"] * c["block_size"]
        rows.append(pd.DataFrame({
            "run": t["experiment"], "seed": int(t["seed"]), **{f"p_{k}": c[k] for k in keys},
            "total_params": t["total_params"], "non_embedding_params": t["non_embedding_params"],
            "flops_per_token": t["flops_per_token"], "iteration": h["iteration"].to_numpy(),
            "train_flops": tokens * t["flops_per_token"], "elapsed_s": h["elapsed_s"].to_numpy(),
            "val_bpb": h["val_bpb"].to_numpy(), "best_val_bpb": np.minimum.accumulate(h["val_bpb"].to_numpy())}))
    table = pd.concat(rows, ignore_index=True)
    table.to_parquet(path, compression="zstd", index=False)
    print(f"{path}: {table['run'].nunique()} runs, {len(table)} evals, {path.stat().st_size / 1e3:.0f} kB; "
          f"training time {trials['training_time_s'].sum() / 3600:.2f} h in all")


def study_run(search_alg: str, scheduler: str, seed: int, trials: int, objectives=("best_val_bpb",)):
    from search_spaces import get_search
    from slm_tune.tune.study_run import StudyRun

    space = get_search("tiny_lm")
    return StudyRun(study="tiny_lm", configs={space.base.name: space.base}, search=space, num_samples=trials,
                    search_alg=search_alg, scheduler=scheduler, sampler_seed=seed,
                    metric=objectives[0], objectives=tuple(objectives) if len(objectives) > 1 else ())


def incumbents(events, key: str = "best_val_bpb") -> tuple[list[float], list[float]]:
    """(FLOPs, best value so far) at every eval that improved the incumbent."""
    flops, best, out_f, out_b = events["flops"].to_numpy(), np.minimum.accumulate(events[key].to_numpy()), [], []
    for f, b in zip(flops, best):
        if not out_b or b < out_b[-1]:
            out_f.append(float(f))
            out_b.append(float(b))
    return out_f, out_b


@contextlib.contextmanager
def scheduler_named(name: str):
    """The library's scheduler name for `name`, with an ASHA variant (asha-rfR-gG[-bB]) built in
    place of the library's ASHA while the block runs."""
    match = ASHA_VARIANT.match(name)
    if match is None:
        yield name
        return
    from ray.tune.schedulers import ASHAScheduler

    import slm_tune.tune.replay.simulation as simulation
    from slm_tune.tune.schedulers import horizon

    rf, grace, brackets = int(match[1]), int(match[2]), int(match[3] or 1)

    library = simulation.make_scheduler

    def make(run):
        _, metric, mode = library(run)
        time_attr, max_t, interval = horizon(run)
        return (ASHAScheduler(time_attr=time_attr, max_t=max_t, grace_period=grace * interval, reduction_factor=rf,
                              brackets=brackets), metric, mode)

    simulation.make_scheduler = make
    try:
        yield "asha"
    finally:
        simulation.make_scheduler = library


def replay_all(seeds: int, trials: int, searchers, schedulers, multi=MULTI, table_path: Path = TABLE) -> dict:
    from slm_tune.tune.replay.simulation import replay_search
    from slm_tune.tune.replay.table import ReplayTable

    table = ReplayTable.load(table_path)
    out = {"table": _table_facts(table), "trials": trials, "seeds": seeds, "single": {}, "multi": {}}
    for search_alg, scheduler in ((a, s) for a in searchers for s in schedulers):
        with scheduler_named(scheduler) as library_name:
            started, runs = time.perf_counter(), []
            for seed in range(seeds):
                events = replay_search(table, study_run(search_alg, library_name, seed, trials))
                f, b = incumbents(events)
                runs.append({"flops": f, "best": b, "spent": float(events["flops"].iloc[-1]),
                             "trials": int(events["trial"].nunique())})
            out["single"][f"{search_alg}+{scheduler}"] = runs
            print(f"{search_alg:>15} + {scheduler:<9} {seeds} seeds in {time.perf_counter() - started:5.1f} s",
                  flush=True)
    for search_alg in multi:
        started, fronts = time.perf_counter(), []
        for seed in range(seeds):
            events = replay_search(table, study_run(search_alg, "fifo", seed, trials, OBJECTIVES))
            ends = events[events["ended"]]
            fronts.append(ends[["best_val_bpb", "total_params"]].to_numpy().tolist())
        out["multi"][search_alg] = fronts
        print(f"{search_alg:>15} 2-objective  {seeds} seeds in {time.perf_counter() - started:5.1f} s", flush=True)
    return out


def _table_facts(table) -> dict:
    final = table.final()
    noise = []
    for run in {r.split("_s")[0] for r in table.noise_runs}:
        values = table.frame[table.frame["run"].str.startswith(run)].groupby("run")["best_val_bpb"].min()
        noise.append(float(values.std(ddof=1)))
    params = np.array([c.figures["total_params"] for c in table.curves])
    return {"runs": len(table.curves), "best": float(final.min()), "worst": float(np.nanmax(final)),
            "max_params": float(params.max()), "points": np.stack([final, params], axis=1).tolist(),
            "total_flops": float(sum(c.train_flops[-1] for c in table.curves)),
            "seed_sd": noise, "keys": table.keys}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export")
    e.add_argument("--from", dest="source", type=Path, required=True, help="the tabular study's output dir")
    e.add_argument("--to", type=Path, default=TABLE)
    r = sub.add_parser("replay")
    r.add_argument("--seeds", type=int, default=20)
    r.add_argument("--trials", type=int, default=100, help="trials per search (default 100)")
    r.add_argument("--searchers", nargs="+", default=list(SEARCHERS))
    r.add_argument("--schedulers", nargs="+", default=list(SCHEDULERS))
    r.add_argument("--replot", action="store_true", help="only the figures and plot, from the stored JSON")
    r.add_argument("--out", type=Path, default=OUT, help=f"where the replays go (default {OUT.name})")
    r.add_argument("--merge", type=Path, nargs="+", default=[],
                   help="other replays' JSON (e.g. the slow gp's, run apart) merged in before the figures")
    r.add_argument("--multi", nargs="+", default=list(MULTI), help="the 2-objective searchers (default %(default)s)")
    r.add_argument("--no-multi", action="store_true", help="skip the 2-objective searches")
    args = p.parse_args(argv)
    if args.command == "export":
        export(args.source, args.to)
        return 0
    if args.replot:
        data = json.loads(args.out.read_text())
    else:
        data = replay_all(args.seeds, args.trials, args.searchers, args.schedulers, () if args.no_multi else args.multi)
    for other in args.merge:
        more = json.loads(other.read_text())
        data["single"].update(more["single"])
        data["multi"].update(more["multi"])
    args.out.write_text(json.dumps(data))
    if "random+fifo" not in data["single"]:
        print(f"wrote {args.out} (no random+fifo: the figures compare against it; merge this into a run that has it)")
        return 0
    sys.path.insert(0, str(ROOT / "bench"))  # as a script, `bench` is bench/bench.py: import its neighbour by name
    from tabular_report import plot, summary

    print(summary(data))
    plot(data, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
