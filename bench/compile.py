#!/usr/bin/env python
"""compile = auto against always and never: the quick study end to end, and a baseline trial.

    python bench/compile.py                 both (about 25 minutes on 2 cores)
    python bench/compile.py --skip-quick    the baseline trial only

The quick study (3 trials of 150 iterations) runs once per setting through the CLI, and the
wall time is printed with what each trial chose. A baseline trial is too long to run three
times here (1,200 iterations, about half an hour), so its iterations are timed: eager and
compiled steps on the trial's threads, and the compile cost (first compiled step and eval beyond
the rest). Its whole run is then priced each way from those figures, and auto is priced as the
plan decides it (slm_tune/model/compiling.py: PROBE_STEPS eager steps, then compile or not).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def quick(setting: str) -> tuple[float, list[str]]:
    out = Path(tempfile.mkdtemp(prefix="slm-bench-compile-"))
    try:
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, str(ROOT / "studies.py"), "quick", "--output-dir", str(out),
                               "--set", f"compile={setting}", "--no-tensorboard"],
                              capture_output=True, text=True, cwd=ROOT, stdin=subprocess.DEVNULL)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            raise SystemExit(f"quick study failed:\n{proc.stderr[-3000:]}")
        notes = []
        for f in sorted((out / "experiments").glob("*_results.json")):
            r = json.loads(f.read_text())
            if "experiment" not in r:  # batch_results.json
                continue
            notes.append(f"{r['experiment']}: {r.get('compile_note')}")
        return wall, notes
    finally:
        shutil.rmtree(out, ignore_errors=True)


def baseline_steps(compiled: bool, steps: int, threads: int) -> dict:
    """The row in its own process, started with the environment trial workers get (workers.py:
    without glibc's allocator setting eager steps lose 13% to page faults, compiled ones less)."""
    import os

    from slm_tune.tune.worker_env import trial_env

    proc = subprocess.run([sys.executable, __file__, "--row", "compiled" if compiled else "eager",
                           "--steps", str(steps), "--threads", str(threads)],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, **trial_env()})
    if proc.returncode != 0:
        raise SystemExit(f"baseline row failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _row(compiled: bool, steps: int, threads: int) -> dict:
    """Seconds per training step (median after the first) and the first step's excess, and the
    same for two evals, for baseline on `threads` threads."""
    import torch

    from slm_tune.config import EXPERIMENT_CONFIGS
    from slm_tune.data.cache import prepare_tokens
    from slm_tune.train import train

    c = EXPERIMENT_CONFIGS["baseline"].replace(max_iters=steps, eval_interval=steps // 2, log_interval=1,
                                               compile="true" if compiled else "false", warmup_iters=2)
    data = prepare_tokens(c.dataset, c.vocab_size)
    torch.set_num_threads(threads)
    times: list[float] = []
    last = {"t": time.perf_counter()}

    def report(metrics, save):
        now = time.perf_counter()
        times.append((metrics["kind"], now - last["t"]))
        last["t"] = time.perf_counter()

    train(c, data, report=report, threads=threads)
    train_steps = [dt for kind, dt in times if kind == "train"]
    evals = [dt for kind, dt in times if kind == "eval"]
    step = statistics.median(train_steps[1:])
    return {"step_s": step, "first_extra_s": train_steps[0] - step, "evals": evals}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--skip-quick", action="store_true")
    p.add_argument("--steps", type=int, default=24, help="baseline steps timed each way (default 24)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--row", choices=("eager", "compiled"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.row:
        print(json.dumps(_row(args.row == "compiled", args.steps, args.threads)))
        return

    if not args.skip_quick:
        print("quick study (3 trials x 150 iterations), wall time by compile setting:")
        for setting in ("false", "true", "auto"):
            wall, notes = quick(setting)
            print(f"  compile={setting}: {wall:.0f} s")
            for n in notes:
                print(f"    {n}")

    from slm_tune.model.compiling import GAIN, PROBE_STEPS
    from slm_tune.config import EXPERIMENT_CONFIGS

    iters = EXPERIMENT_CONFIGS["baseline"].max_iters
    eager = baseline_steps(False, args.steps, args.threads)
    compiled = baseline_steps(True, args.steps, args.threads)
    cost = compiled["first_extra_s"] + max(0.0, compiled["evals"][0] - compiled["evals"][-1])
    gain = 1 - compiled["step_s"] / eager["step_s"]
    never = iters * eager["step_s"]
    always = cost + iters * compiled["step_s"]
    left = iters - PROBE_STEPS - 1
    chooses = left * eager["step_s"] * GAIN > cost  # as the plan decides, with this run's cost
    auto = (PROBE_STEPS + 1) * eager["step_s"] + (cost + left * compiled["step_s"] if chooses else left * eager["step_s"])
    print(f"baseline trial ({iters} iterations, {args.threads} threads), priced from {args.steps} timed steps each way:")
    print(f"  eager {eager['step_s']:.3f} s/iter, compiled {compiled['step_s']:.3f} s/iter ({gain:+.1%} faster), "
          f"compile cost {cost:.1f} s")
    print(f"  compile=false {never / 60:.1f} min, compile=true {always / 60:.1f} min, "
          f"compile=auto {auto / 60:.1f} min ({'compiles' if chooses else 'stays eager'})")


if __name__ == "__main__":
    main()
