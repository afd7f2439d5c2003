#!/usr/bin/env python
"""Pareto benchmark: a 2-objective search (bits per byte and parameters) against single-objective
searches of the same budget, by the hypervolume of the front each one finds.

    python bench/pareto.py                 24 trials per search, 3 searches (about 15 minutes on 2 cores)
    python bench/pareto.py --smoke         4 trials per search, tiny (CI)

Each search runs through `studies.py search` in its own process and output directory, on
storyworld, over a shape space (depth, heads, head size, vocabulary) at a fixed learning rate and
token budget: Optuna's multi-objective TPE on (best_val_bpb, params); TPE on best_val_bpb alone;
random search. Every search's trials are then read as a front of (bits per byte, parameters), and
its hypervolume is measured in (bits per byte, log10 parameters), up to one fixed reference point
for every search and seed (REFERENCE_BPB bits per byte, the space's largest model): the larger,
the more of the trade-off the search found. Prints a table; writes OUTPUT/pareto_bench.json and
OUTPUT/pareto_bench.png (every search's trials and front). `--rescore FILE.json ...` recomputes
stored runs' hypervolumes with today's reference and redraws their plots.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SPACE = """
description = "pareto bench: shape at a fixed rate and token budget"
base = "optimal_fast"
n_layer = { randint = [1, 5] }
n_head = { choice = [2, 4] }
head_size = { choice = [16, 32, 64] }
vocab_size = { choice = [2000, 5000, 10000] }
learning_rate = 3e-3
batch_size = 16
block_size = 64
eval_iters = 8
compile = false
"""
METHODS = {"2-objective TPE": ["--search-alg", "optuna", "--objective", "best_val_bpb", "--objective", "params"],
           "TPE on bpb": ["--search-alg", "optuna", "--scheduler", "fifo", "--metric", "best_val_bpb"],
           "random": ["--search-alg", "random", "--scheduler", "fifo"]}
OBJECTIVES = ["best_val_bpb", "total_params"]
# the bits-per-byte side of the reference point, the same for every seed (a reference taken from
# each seed's worst trial would make seeds' hypervolumes incomparable): above every trial measured
REFERENCE_BPB = 2.0


def run_search(method: str, space: Path, samples: int, iters: int, seed: int, out: Path, extra: list[str]) -> dict:
    """One search, end to end: its trials' (bits per byte, parameters) and its wall time."""
    from analysis.load import find_runs, load_run

    cmd = [sys.executable, str(ROOT / "studies.py"), "search", "--space", str(space), "--num-samples", str(samples),
           "--seed", str(seed), "--output-dir", str(out), "--max-iters", str(iters),
           "--set", f"eval_interval={max(1, iters // 4)}", *METHODS[method], *extra]
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{method} failed:\n{proc.stderr[-3000:]}")
    trials, _ = load_run(find_runs(out)[0])
    points = [(float(b), float(p), str(n)) for b, p, n in
              zip(trials["best_val_bpb"], trials["total_params"], trials["experiment"]) if b == b and p == p]
    return {"method": method, "wall_s": time.time() - start, "points": points, "trials": len(trials)}


def score(results: list[dict], largest_params: float) -> None:
    """Each search's front and hypervolume in (bpb, log10 params), from the one fixed reference."""
    import pandas as pd

    from analysis.pareto import hypervolume, pareto_mask

    reference = [REFERENCE_BPB, math.log10(largest_params)]
    for r in results:
        table = pd.DataFrame([(b, math.log10(p), n) for b, p, n in r["points"]], columns=[*OBJECTIVES, "trial"])
        mask = pareto_mask(table, OBJECTIVES)
        r["front"] = sorted((b, 10 ** lp, n) for b, lp, n, m in zip(table.best_val_bpb, table.total_params,
                                                                     table.trial, mask) if m)
        r["hypervolume"] = hypervolume(table, OBJECTIVES, reference)
        r["best_bpb"] = float(table.best_val_bpb.min())
        r["smallest_params"] = float(10 ** table.total_params.min())
        r["reference"] = reference


def rescore(paths: list[Path]) -> None:
    """Stored runs' hypervolumes again from today's reference; their plots redrawn."""
    for path in paths:
        results = json.loads(path.read_text())
        score(results, 10 ** results[0]["reference"][1])
        path.write_text(json.dumps(results, indent=1))
        plot(results, path.with_suffix(".png"))
        print(path.name, ", ".join(f"{r['method']} {r['hypervolume']:.4f}" for r in results))


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from analysis.plots import log_count_axis

    fig, ax = plt.subplots(figsize=(9, 6))
    style = {"random": ("tab:gray", "o", 70), "TPE on bpb": ("tab:red", "s", 50), "2-objective TPE": ("tab:blue", "D", 36)}
    # the TPE searches share their first (random) trials: drawn one over another, largest marker first
    for r in sorted(results, key=lambda r: -style[r["method"]][2]):
        c, marker, size = style[r["method"]]
        ax.scatter([p for _, p, _ in r["points"]], [b for b, _, _ in r["points"]], s=18, color=c, alpha=0.35,
                   marker=marker)
        fb, fp = [b for b, _, _ in r["front"]], [p for _, p, _ in r["front"]]
        order = sorted(range(len(fp)), key=fp.__getitem__)
        ax.step([fp[i] for i in order], [fb[i] for i in order], where="post", color=c, lw=1.8,
                label=f"{r['method']}: hypervolume {r['hypervolume']:.3f}, front of {len(fb)}")
        ax.scatter(fp, fb, s=size, color=c, edgecolor="black", zorder=3, marker=marker)
    log_count_axis(ax)
    ax.set_xlabel("parameters, lower is better")
    ax.set_ylabel("best validation bits per byte, lower is better")
    ax.set_title(f"Fronts of {results[0]['trials']}-trial searches (faint: every trial)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--samples", type=int, default=24)
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--output", type=Path, default=ROOT / "bench")
    p.add_argument("--smoke", action="store_true", help="4 tiny trials per search, on a small corpus")
    p.add_argument("--replot", action="store_true", help="only redraw OUTPUT/pareto_bench.png from its JSON")
    p.add_argument("--rescore", type=Path, nargs="+", metavar="JSON", help="rescore stored runs' JSON files")
    args = p.parse_args(argv)
    if args.rescore:
        rescore(args.rescore)
        return 0
    if args.replot:
        plot(json.loads((args.output / "pareto_bench.json").read_text()), args.output / "pareto_bench.png")
        return 0
    extra = []
    if args.smoke:
        args.samples, args.iters = 4, 6
        extra = ["--dataset", "storyworld:train=300,validation=30", "--set", "batch_size=4", "--set", "block_size=32"]
    from slm_tune.config import EXPERIMENT_CONFIGS
    from slm_tune.model.counts import param_counts
    from slm_tune.space import load_space_file

    with tempfile.TemporaryDirectory(prefix="pareto-bench-") as tmp:
        space = Path(tmp) / "pareto_bench.toml"
        space.write_text(SPACE)
        largest = max(param_counts(load_space_file(space, EXPERIMENT_CONFIGS).config_for(
            {"n_layer": 4, "n_head": 4, "head_size": 64, "vocab_size": 10000}))[0], 1)
        results = []
        for method in METHODS:
            results.append(run_search(method, space, args.samples, args.iters, args.seed, Path(tmp) / method.replace(" ", "_"), extra))
            print(f"{method}: {results[-1]['trials']} trials in {results[-1]['wall_s']:.0f} s", flush=True)
    score(results, largest)
    args.output.mkdir(parents=True, exist_ok=True)
    print(f"\n{'search':<16} {'hypervolume':>11} {'front':>5} {'best bpb':>9} {'smallest':>10} {'wall':>6}")
    for r in results:
        print(f"{r['method']:<16} {r['hypervolume']:>11.4f} {len(r['front']):>5} {r['best_bpb']:>9.4f} "
              f"{r['smallest_params']:>10,.0f} {r['wall_s']:>5.0f}s")
    print(f"reference point: {results[0]['reference'][0]:.4f} bits per byte, {10 ** results[0]['reference'][1]:,.0f} "
          "parameters; hypervolume in (bits per byte x decades of parameters)")
    (args.output / "pareto_bench.json").write_text(json.dumps(results, indent=1))
    plot(results, args.output / "pareto_bench.png")
    print(f"wrote {args.output / 'pareto_bench.json'} and {args.output / 'pareto_bench.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
