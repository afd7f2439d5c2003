#!/usr/bin/env python
"""Export benchmark: what writing the results layout costs for a 64-trial search.

    python bench/export.py              a 64-trial tiny search, then the export timings (~3 minutes)
    python bench/export.py --trials 16  a smaller one

Runs a random search of tiny trials (`studies.py search`, so every trial reports, checkpoints
and is exported live as in real use), then times, on the stored run:
- one trial's live export (what the exporter does when a trial ends: read that trial's files,
  write its results JSON, loss plot and best model), for the last trial, against reading the
  whole run for it as the exporter did before (so that the sum over a study grew with trials^2);
- the study's final export (every file of the layout, the search's plot and importance), as it
  runs after the last trial (the live files already written) and from an empty output directory.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SPACE = """base = "optimal_fast"
learning_rate = { loguniform = [1e-4, 1e-2] }
n_layer = { choice = [1, 2] }
"""
TINY = ["--set", "n_embd=32", "--set", "n_head=2", "--set", "block_size=32", "--set", "eval_iters=2",
        "--set", "precision=float32", "--set", "compile=false", "--set", "vocab_size=1000", "--set", "batch_size=4",
        "--set", "eval_interval=10", "--set", "log_interval=5", "--dataset", "storyworld:train=300,validation=30"]


def timed(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=64)
    p.add_argument("--output", help="keep the search here (default: a temporary directory)")
    args = p.parse_args()
    out = Path(args.output or tempfile.mkdtemp(prefix="slm-export-bench-"))
    space = out / "bench.toml"
    out.mkdir(parents=True, exist_ok=True)
    space.write_text(SPACE)
    print(f"export benchmark: a {args.trials}-trial search of tiny trials in {out}", flush=True)
    t = time.time()
    proc = subprocess.run([sys.executable, str(ROOT / "studies.py"), "search", "--space", str(space),
                           "--num-samples", str(args.trials), "--search-alg", "random", "--seed", "0",
                           "--output-dir", str(out), "--max-iters", "20", *TINY],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    print(f"  search: {time.time() - t:.0f} s end to end (its exports included)", flush=True)

    from analysis.export import export_experiment, export_runs
    from analysis.load import _ray_trials, load_run

    run = out / "ray_results" / "bench"
    view = _ray_trials(run)
    last = sorted(view)[-1]
    one = {last: {**view[last], "log_dir": str(run / last)}}

    def live_now():
        trials, history = load_run(run, experiments=[last], ray_view=one)
        export_experiment(last, trials, history, out)

    def live_before():
        trials, history = load_run(run, experiments=[last])  # every trial's files read for one
        export_experiment(last, trials, history, out)

    now, before = timed(live_now), timed(live_before)
    print(f"  one trial's live export, trial {args.trials} of {args.trials}: {now * 1000:.0f} ms "
          f"(reading the whole run for it, as before: {before * 1000:.0f} ms)")
    print(f"  live exports over the study: about {now * args.trials:.1f} s now; before, growing with the "
          f"trial count, about {before * (args.trials + 1) / 2:.1f} s")
    final = timed(lambda: export_runs([run], out, "bench"), repeats=2)
    fresh_dir = out / "fresh"

    def fresh():
        shutil.rmtree(fresh_dir, ignore_errors=True)
        export_runs([run], fresh_dir, "bench")

    scratch = timed(fresh, repeats=1)
    print(f"  final export of {args.trials} trials: {final:.1f} s with the live files in place, "
          f"{scratch:.1f} s from an empty output directory")
    return 0


if __name__ == "__main__":
    sys.exit(main())
