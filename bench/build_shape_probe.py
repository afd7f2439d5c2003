#!/usr/bin/env python
"""A stored build's target settings at another shape, for the same compute: was the shape or the
settings what decided the build's comparison? (Its target's settings: the proxy search's best,
muP and depth_mup from the proxy, the build's vocabulary and batch; only the width and depth
change, as build_plan's candidates change them, the iterations are those the build's compute left
buys at the new shape, and the rate is the search's moved to that length by the build's own
rule.) One training per seed in this process; a rerun skips seeds already in the output JSON.

    python bench/build_shape_probe.py /work/build_runs/storyworld2_1e+14 --shape 4x96 --seeds 1337

Prints and writes WORK/shape_probe.json (or --out): per shape and seed, best val bits per byte
(whole windows and second halves) beside the build's target's own seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def probe_config(work: Path, layers: int, width: int, seed: int):
    """The build's target config at `layers` x `width`, trained for the compute the build left it."""
    from slm_tune.config import ExperimentConfig
    from workflows import build_plan as plan

    exp = work / "experiments"
    target = ExperimentConfig(**json.loads((exp / "build_target_results.json").read_text())["config"])
    report = json.loads((exp / "build_report.json").read_text())
    left, proxy = report["choice"]["compute_left"], report["proxy"]
    search = target.replace(learning_rate=proxy["best_learning_rate"], max_iters=proxy["max_iters"])
    c = plan._shape(target, width, layers)
    c = plan.at_horizon(plan.run_length(c, plan.iterations_for(c, left)), search, proxy["horizon_exponent"])
    return c.replace(name=f"probe_{layers}x{width}", seed=seed), left


def run(work: Path, layers: int, width: int, seed: int, threads: int) -> dict:
    from slm_tune.data.cache import prepare_tokens
    from slm_tune.model.counts import param_counts, tokens_per_iter
    from slm_tune.train import train
    from slm_tune.tune.study_record import machine_info

    c, left = probe_config(work, layers, width, seed)
    t = time.perf_counter()
    result = train(c, prepare_tokens(c.dataset, c.vocab_size), threads=threads)
    history = [h for h in result.history if h.get("val_bpb") is not None]
    return {"work": str(work), "shape": f"{layers}x{width}", "seed": seed, "status": result.status,
            "iterations": c.max_iters,
            "tokens": c.max_iters * tokens_per_iter(c), "non_embedding_params": param_counts(c)[1],
            "learning_rate": c.learning_rate, "compute_left": left,
            "best_val_bpb": min(h["val_bpb"] for h in history),
            "best_val_bpb_context": min(h["val_bpb_context"] for h in history),
            "seconds": round(time.perf_counter() - t, 1), "threads": threads, "machine": machine_info()["cpu"],
            "ended": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("work", type=Path, help="a bench/build.py work directory (its build finished)")
    ap.add_argument("--shape", required=True, help="LAYERSxWIDTH, e.g. 4x96 (width a multiple of the head size)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1337])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, help="the JSON the rows go to (default WORK/shape_probe.json)")
    a = ap.parse_args()
    layers, width = (int(x) for x in a.shape.lower().split("x"))
    out = a.out or a.work / "shape_probe.json"
    rows = json.loads(out.read_text()) if out.exists() else []
    for seed in a.seeds:
        if any(r["shape"] == f"{layers}x{width}" and r["seed"] == seed for r in rows):
            continue
        rows.append(run(a.work, layers, width, seed, a.threads))
        out.write_text(json.dumps(rows, indent=1))
    target = json.loads((a.work / "experiments" / "build_target_results.json").read_text())
    runs = target.get("per_run") or [target]  # one seed: the results file is that run's
    print(f"build's target: {[round(r['best_val_bpb'], 4) for r in runs]} whole-window bpb")
    for r in rows:
        print(f"{r['shape']} seed {r['seed']}: {r['non_embedding_params']:,} non-embedding parameters, "
              f"{r['iterations']} iterations ({r['tokens'] / 1e6:.1f}M tokens), rate {r['learning_rate']:.3g}: "
              f"whole {r['best_val_bpb']:.4f}, second halves {r['best_val_bpb_context']:.4f} ({r['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
