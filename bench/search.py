#!/usr/bin/env python
"""Search benchmark: random search against TPE and TPE+ASHA, at the same trial budget.

    python bench/search.py                 the benchmark (about 10 minutes on 2 cores)
    python bench/search.py --smoke         two tiny searches of 2 trials each (CI)

Each search runs through `studies.py search lr` in its own process and output directory, on
storyworld, with a small model (so a trial takes seconds): the lr space (peak learning rate,
warmup, weight decay, final ratio) from optimal_fast shrunk to a 2-layer, 64-wide, 2k-vocabulary
model. For every method and sampler seed it prints the best val bits per byte found and the wall
time, and for TPE and TPE+ASHA the wall time at which their best so far first reached random
search's best (same seed): the goal is TPE+ASHA there in at most 60% of random's wall time.
A figure of best-so-far against wall time goes to OUTPUT/search_bench.png.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METHODS = {"random": ["--search-alg", "random", "--scheduler", "fifo"], "tpe": ["--search-alg", "optuna", "--scheduler", "fifo"],
           "tpe+asha": ["--search-alg", "optuna", "--scheduler", "asha"]}
SMALL = ["--set", "vocab_size=2000", "--set", "n_embd=64", "--set", "n_layer=2", "--set", "n_head=2",
         "--set", "batch_size=16", "--set", "block_size=64", "--set", "eval_iters=8", "--set", "compile=false"]


def run_search(method: str, seed: int, samples: int, iters: int, out: Path, extra: list[str]) -> dict:
    """One search, end to end; its trials' best values and the times they ended."""
    from analysis.load import find_runs, load_run

    cmd = [sys.executable, str(ROOT / "studies.py"), "search", "lr", "--num-samples", str(samples),
           "--seed", str(seed), "--output-dir", str(out), "--max-iters", str(iters),
           "--set", f"eval_interval={max(1, iters // 8)}", *METHODS[method], *extra]
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=ROOT)
    wall = time.time() - start
    if proc.returncode != 0:
        raise SystemExit(f"{method} seed {seed} failed:\n{proc.stderr[-3000:]}")
    trials, _ = load_run(find_runs(out)[0])
    points = sorted((float(t) - start, float(v)) for t, v in zip(trials["ended_at"], trials["best_val_bpb"])
                    if v == v)
    best, curve = float("inf"), []
    for t, v in points:
        best = min(best, v)
        curve.append((t, best))
    stopped = int((trials["status"] == "stopped early").sum())
    return {"method": method, "seed": seed, "wall_s": wall, "best": best, "curve": curve,
            "trials": len(trials), "stopped_early": stopped,
            "iterations": int(trials["iterations"].sum())}


def time_to_reach(curve: list[tuple[float, float]], target: float) -> float | None:
    return next((t for t, best in curve if best <= target + 1e-12), None)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    colors = {"random": "tab:gray", "tpe": "tab:blue", "tpe+asha": "tab:red"}
    styles = ["-", "--", ":", "-."]
    for r in results:
        t = [c[0] for c in r["curve"]] + [r["wall_s"]]  # from the first trial's end: no value before it
        v = [c[1] for c in r["curve"]] + [r["curve"][-1][1]]
        ax.step(t, v, where="post", color=colors[r["method"]], ls=styles[r["seed"] % len(styles)], lw=1.8,
                label=f"{r['method']}, seed {r['seed']} ({r['wall_s']:.0f} s)")
    ax.set_yscale("log")
    ax.set_xlim(left=0)
    ax.set_xlabel("wall time (s)")
    ax.set_ylabel("best val bits per byte so far")
    ax.set_title("lr search on storyworld, same trial budget: best so far against wall time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="two tiny searches of 2 trials (CI)")
    p.add_argument("--samples", type=int, default=16, help="trials per search (default 16)")
    p.add_argument("--iters", type=int, default=200, help="iterations per trial (default 200)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--output", help="keep the searches here (default: a temporary directory)")
    p.add_argument("--replot", metavar="JSON", help=argparse.SUPPRESS)  # redraw a stored run's figure
    args = p.parse_args()
    if args.replot:
        plot(json.loads(Path(args.replot).read_text()), Path(args.replot).with_suffix(".png"))
        return 0
    methods, extra = list(METHODS), list(SMALL)
    if args.smoke:
        args.samples, args.iters, args.seeds, methods = 2, 8, [0], ["random", "tpe+asha"]
        extra += ["--set", "n_embd=32", "--set", "vocab_size=1000", "--dataset", "storyworld:train=300,validation=30",
                  "--set", "precision=float32"]
    out = Path(args.output or tempfile.mkdtemp(prefix="slm-search-bench-"))
    env_note = f"{os.cpu_count()} CPUs"
    print(f"search benchmark: lr space, {args.samples} trials x {args.iters} iterations per search, "
          f"seeds {args.seeds}, {env_note}; output {out}", flush=True)
    from slm_tune.data.cache import prepare_tokens

    dataset = extra[extra.index("--dataset") + 1] if "--dataset" in extra else "storyworld"
    vocab = int([a for a in extra if a.startswith("vocab_size=")][-1].split("=")[1])
    prepare_tokens(dataset, vocab, 1.0)  # tokenized before the clocks start: every search finds it cached
    results = []
    t0 = time.time()
    for seed in args.seeds:
        for method in methods:
            r = run_search(method, seed, args.samples, args.iters, out / f"{method}-{seed}", extra)
            results.append(r)
            print(f"  {method:<9} seed {seed}: best val_bpb {r['best']:.4f}, wall {r['wall_s']:6.1f} s, "
                  f"{r['trials']} trials ({r['stopped_early']} stopped early), {r['iterations']} iterations",
                  flush=True)
    print(f"\n{'method':<9} {'seed':>4} {'best bpb':>9} {'wall s':>7} {'reached random best at':>23} {'of random wall':>15}")
    for r in results:
        rnd = next(x for x in results if x["method"] == "random" and x["seed"] == r["seed"])
        reach = time_to_reach(r["curve"], rnd["best"])
        r["reached_random_best_s"] = reach
        r["share_of_random_wall"] = reach / rnd["wall_s"] if reach is not None else None
        reached = f"{reach:.1f} s" if reach is not None else "not reached"
        share = f"{r['share_of_random_wall']:.0%}" if reach is not None else "-"
        print(f"{r['method']:<9} {r['seed']:>4} {r['best']:>9.4f} {r['wall_s']:>7.1f} {reached:>23} {share:>15}")
    print("\nmean over seeds:")
    for method in methods:
        rs = [r for r in results if r["method"] == method]
        shares = [r["share_of_random_wall"] for r in rs if r["share_of_random_wall"] is not None]
        print(f"  {method:<9} best {sum(r['best'] for r in rs) / len(rs):.4f}, wall {sum(r['wall_s'] for r in rs) / len(rs):.1f} s, "
              f"reached random's best in {len(shares)}/{len(rs)} runs"
              + (f", at {sum(shares) / len(shares):.0%} of random's wall time" if shares else ""))
    plot(results, out / "search_bench.png")
    (out / "search_bench.json").write_text(json.dumps(results, indent=2))
    print(f"\nfigure: {out / 'search_bench.png'}; total {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
