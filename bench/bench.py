#!/usr/bin/env python
"""slm-tune's benchmark: trainer speed against this CPU's matmul peak, memory, data, study overhead.

    python bench/bench.py            the full benchmark (under 10 minutes on 2 cores)
    python bench/bench.py --smoke    a handful of iterations of a tiny model (CI)

Prints one table (config, precision, fused loss, compile, threads, median s/iter, tokens/s,
achieved GFLOP/s and its share of the matmul peak measured in the same run, peak RSS), then the
quality check (fast path vs float32), tokenization speed, and the quick study's Ray overhead.
Each training row runs in its own process, so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def matmul_peak(threads: int, dtype_name: str, n: int = 2048, reps: int = 8) -> float:
    """GFLOP/s of a square matmul, the best of `reps`."""
    import torch

    torch.set_num_threads(threads)
    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(reps))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def train_row(spec: dict) -> dict:
    """One row: time `iters` training iterations after warm-up, in this process."""
    import resource

    import torch

    from slm_tune.config import ExperimentConfig
    from slm_tune.model.counts import flops_per_token
    from slm_tune.model.gpt import GPT
    from slm_tune.train import make_optimizer, resolve_precision

    torch.set_num_threads(spec["threads"])
    c = ExperimentConfig.from_name(spec["experiment"], **spec["overrides"])
    torch.manual_seed(0)
    model = GPT(c)
    fwd = torch.compile(model) if c.compile != "false" else model
    opt = make_optimizer(model, c)
    precision = resolve_precision(c.precision)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, c.vocab_size, (c.batch_size, c.block_size), generator=g)
    y = torch.randint(0, c.vocab_size, (c.batch_size, c.block_size), generator=g)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            loss = fwd(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    t0 = time.perf_counter()
    for _ in range(spec["warmup"]):
        step()
    warm = time.perf_counter() - t0
    times = [_timed(step) for _ in range(spec["iters"])]
    med = statistics.median(times)
    tokens = c.batch_size * c.block_size
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"s_per_iter": med, "tokens_per_s": tokens / med,
            "gflops": flops_per_token(c) * tokens / med / 1e9, "rss_mb": rss_kb / 1024,
            "precision": precision, "warmup_s": warm}


def _run_row(spec: dict) -> dict:
    """A row in a fresh process, started with the environment trials get (slm_tune/tune/worker_env.py)
    unless the row is about glibc's allocator defaults."""
    from slm_tune.tune.worker_env import trial_env

    env = dict(os.environ)
    if spec.get("malloc_defaults"):
        env.pop("GLIBC_TUNABLES", None)
    else:
        env.update(trial_env())
    out = subprocess.run([sys.executable, __file__, "--row", json.dumps(spec)], capture_output=True, text=True,
                         cwd=ROOT, env=env)
    if out.returncode != 0:
        raise SystemExit(f"row {spec} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def quality(spec: dict) -> dict:
    """Validation loss after the same training run in float32 and on the fast path."""
    from slm_tune.config import ExperimentConfig
    from slm_tune.data.cache import prepare_tokens
    from slm_tune.train import train

    import torch

    torch.set_num_threads(2)
    out = {}
    for label, overrides in (("float32", {"precision": "float32", "compile": False, "fused_loss": False}),
                             ("fast", {"precision": "auto"})):
        c = ExperimentConfig.from_name(spec["experiment"], **{**spec["overrides"], **overrides})
        data = prepare_tokens(c.dataset, c.vocab_size, c.data_fraction)
        t = time.perf_counter()
        result = train(c, data, threads=2)
        out[label] = {"val_loss": result.final["val_loss"], "seconds": time.perf_counter() - t}
    return out


def tokenization(corpus: str = "storyworld") -> dict:
    """Build a corpus's token cache from nothing (the default corpus, or a small one for --smoke),
    then load it again."""
    import datasets

    from slm_tune.data.cache import prepare_tokens

    datasets.disable_progress_bars()  # the figures below say it; keep the table readable
    tmp = tempfile.mkdtemp(prefix="slm-bench-cache-")
    try:
        t = time.perf_counter()
        data = prepare_tokens(corpus, 50_257, cache_dir=tmp)
        build = time.perf_counter() - t
        t = time.perf_counter()
        prepare_tokens(corpus, 50_257, cache_dir=tmp)
        reuse = time.perf_counter() - t
        mb = (data.meta["splits"]["train"]["bytes"] + data.meta["splits"]["validation"]["bytes"]) / 1e6
        return {"mb": mb, "build_s": build, "tokenize_s": data.meta["tokenize_seconds"],
                "mb_per_s": mb / data.meta["tokenize_seconds"], "reuse_s": reuse}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def study_overhead(study: str, extra: list[str]) -> dict:
    """Wall time of a study against its trials' own training time."""
    out_dir = Path(tempfile.mkdtemp(prefix="slm-bench-study-"))
    try:
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, str(ROOT / "studies.py"), study, "--output-dir", str(out_dir), *extra],
                              capture_output=True, text=True, cwd=ROOT, stdin=subprocess.DEVNULL)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            raise SystemExit(f"study failed:\n{proc.stderr[-3000:]}")
        from analysis.load import find_runs, load_runs

        trials, _ = load_runs(find_runs(out_dir))
        train_s = float(trials["training_time_s"].sum())
        # When was any trial training? Each trial trained for training_time_s up to its last report.
        spans = sorted((float(ts) - float(tr), float(ts)) for ts, tr in zip(trials["ended_at"], trials["training_time_s"]))
        busy, end = 0.0, -float("inf")
        for a, b in spans:
            busy += max(0.0, b - max(a, end))
            end = max(end, b)
        return {"wall_s": wall, "train_s": train_s, "busy_s": busy, "overhead": max(0.0, (wall - busy) / wall)}
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def tensorboard_cost(trials: int, reports: int, evals: int) -> float:
    """Seconds the trial-side TensorBoard writer costs a study: its import (after torch, as in a
    trial), and per trial opening, `reports` scalar reports (`evals` of them flushed) and closing
    with the HParams row."""
    __import__("torch")  # a trial has it already

    from slm_tune.config import EXPERIMENT_CONFIGS
    from slm_tune.train.board import TrialBoard

    config = EXPERIMENT_CONFIGS["optimal_fast"].to_dict()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        for t in range(trials):
            board = TrialBoard(Path(d) / f"t{t}")
            for i in range(1, reports + 1):
                kind = "eval" if i % (reports // evals) == 0 else "train"
                board.log({"iteration": 10 * i, "kind": kind, "train_loss": 3.0 - i * 0.01, "val_loss": 3.1,
                           "val_bpb": 1.2, "best_val_bpb": 1.2, "lr": 1e-3, "tokens_per_s": 9000.0})
            board.close(config, {"best_val_bpb": 1.2, "val_loss": 3.1, "train_loss": 3.0})
    return time.perf_counter() - start


def tracking_costs() -> None:
    """The quick study with training-loss reports and TensorBoard files (the default), without
    TensorBoard, and with evals only (log_interval=0: the reports as before); then the
    TensorBoard writer's own cost for the quick study's reports, timed directly."""
    for label, extra in (("default (log every 10, TensorBoard)", []),
                         ("log every 10, no TensorBoard", ["--no-tensorboard"]),
                         ("evals only, no TensorBoard", ["--no-tensorboard", "--set", "log_interval=0"])):
        ov = study_overhead("quick", extra)
        print(f"quick study, {label}: wall {ov['wall_s']:.0f} s, Ray's share of wall time "
              f"{100 * ov['overhead']:.1f}%", flush=True)
    trials, reports, evals = quick_reports()
    cost = tensorboard_cost(trials=trials, reports=reports, evals=evals)
    print(f"TensorBoard writer for the quick study's {trials} trials x {reports} reports: {cost:.2f} s "
          f"({100 * cost / ov['wall_s']:.2f}% of its wall time)")


def quick_reports() -> tuple[int, int, int]:
    """The quick study's trials, and each one's training-loss reports and evals, from its settings."""
    from search_spaces import STUDIES
    from slm_tune.config import EXPERIMENT_CONFIGS

    quick = STUDIES["quick"]
    c = EXPERIMENT_CONFIGS[quick.experiments[0]].replace(**quick.overrides)
    return len(quick.experiments), c.max_iters // c.log_interval, c.max_iters // c.eval_interval


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--smoke", action="store_true", help="tiny and fast: for CI")
    p.add_argument("--row", help=argparse.SUPPRESS)
    p.add_argument("--skip-study", action="store_true", help="leave out the quick-study overhead")
    p.add_argument("--all-rows", action="store_true",
                   help="also the float32 + fused loss, bfloat16 unfused and glibc malloc defaults rows (about 2 minutes more)")
    p.add_argument("--cpu-split", action="store_true",
                   help="only: the quick study as 2 trials x 1 thread and as 1 trial x 2 threads")
    p.add_argument("--architectures", action="store_true",
                   help="only: tokens/s and memory of the block designs (arch_*) against baseline")
    p.add_argument("--generation", action="store_true",
                   help="only: generation tokens/s with the key/value cache against without, at 64 and 512 tokens of context")
    p.add_argument("--tracking", action="store_true",
                   help="only: what watching a study costs (training-loss reports, TensorBoard files)")
    args = p.parse_args()
    if args.row:
        print(json.dumps(train_row(json.loads(args.row))))
        return
    if args.tracking:
        tracking_costs()
        return
    if args.generation:
        generation_table(args.smoke)
        return
    if args.architectures:
        architecture_table(args.smoke)
        return
    if args.cpu_split:
        for label, extra in (("2 trials x 1 thread", ["--max-concurrent", "2", "--cpus-per-trial", "1"]),
                             ("1 trial x 2 threads", ["--max-concurrent", "1", "--cpus-per-trial", "2"])):
            ov = study_overhead("quick", extra)
            print(f"quick study, {label}: wall {ov['wall_s']:.0f} s", flush=True)
        return

    base, rows = _rows(args.smoke, args.all_rows)
    _speed_table(base, rows, peak_size=512 if args.smoke else 2048)
    _quality_line(args.smoke)
    generation_table(args.smoke)
    corpus = "storyworld:train=3000,validation=150" if args.smoke else "storyworld"
    tok = tokenization(corpus)
    print(f"tokenization: {tok['mb']:.1f} MB of {corpus} in {tok['tokenize_s']:.2f} s = {tok['mb_per_s']:.1f} MB/s "
          f"(whole build with generation {tok['build_s']:.1f} s); second use {tok['reuse_s']:.2f} s")

    if not args.skip_study:
        extra = ["--max-iters", "10", "--set", "batch_size=4"] if args.smoke else []
        ov = study_overhead("quick", extra)
        print(f"quick study: wall {ov['wall_s']:.0f} s; some trial was training for {ov['busy_s']:.0f} s of it "
              f"(trial-seconds of training: {ov['train_s']:.0f}); Ray's share of wall time {100 * ov['overhead']:.1f}%")




def _rows(smoke: bool, all_rows: bool) -> tuple[dict, list]:
    """The base config and the (label, overrides, threads) rows of the speed table."""
    if smoke:
        base = {"experiment": "optimal_fast", "overrides": {"batch_size": 4, "block_size": 32}, "warmup": 1, "iters": 3}
        rows = [("float32 reference", {"precision": "float32", "fused_loss": False, "compile": False}, 2),
                ("fast path (default)", {"precision": "auto", "compile": False}, 2)]
    else:
        base = {"experiment": "baseline", "overrides": {}, "warmup": 2, "iters": 6}
        extra_rows = [("float32 + fused loss", {"precision": "float32", "compile": False}, 2),
                      ("bfloat16 unfused", {"precision": "bfloat16", "fused_loss": False, "compile": False}, 2),
                      ("fast, malloc defaults", {"precision": "auto"}, 2)]
        rows = [("float32 reference", {"precision": "float32", "fused_loss": False, "compile": False}, 2),
                *(extra_rows if all_rows else []),
                ("fast path, no compile", {"precision": "auto", "compile": False}, 2),
                ("fast path (default)", {"precision": "auto"}, 2),
                ("fast path, 1 thread", {"precision": "auto"}, 1)]

    return base, rows


def _speed_table(base: dict, rows: list, peak_size: int = 2048) -> None:
    """Each row's speed, FLOP rate against the matmul peak and memory; the default path's speed-up."""
    from slm_tune.train.loop import bf16_supported

    dtypes = ("float32", "bfloat16") if bf16_supported() else ("float32",)
    peaks = {(t, d): matmul_peak(t, d, n=peak_size) for t in (1, 2) for d in dtypes}
    print(f"matmul peak ({peak_size}^2), GFLOP/s with 2 threads / 1 thread: "
          + ", ".join(f"{d} {peaks[(2, d)]:.0f} / {peaks[(1, d)]:.0f}" for d in dtypes)
          + ("" if len(dtypes) == 2 else " (bfloat16 is not native on this CPU: precision=auto trains in float32, "
                                         "and the bfloat16 rows are left out)"))
    header = f"{'row':<22} {'config':<13} {'precision':<9} {'fused':<5} {'compile':<7} {'thr':>3} " \
             f"{'s/iter':>7} {'tok/s':>7} {'GFLOP/s':>8} {'peak%':>6} {'RSS MB':>7}"
    print(header)
    print("-" * len(header))
    results = {}
    for label, overrides, threads in rows:
        if overrides.get("precision") not in (None, "auto", *dtypes):
            continue
        spec = dict(base, overrides={**base["overrides"], **overrides}, threads=threads,
                    malloc_defaults="malloc defaults" in label)
        r = _run_row(spec)
        results[label] = r
        peak = peaks[(threads, r["precision"])]
        print(f"{label:<22} {base['experiment']:<13} {r['precision']:<9} {str(overrides.get('fused_loss', True)):<5} "
              f"{str(overrides.get('compile', True)):<7} {threads:>3} {r['s_per_iter']:>7.3f} {r['tokens_per_s']:>7.0f} "
              f"{r['gflops']:>8.1f} {100 * r['gflops'] / peak:>5.0f}% {r['rss_mb']:>7.0f}", flush=True)
    ref = results["float32 reference"]["tokens_per_s"]
    fast = results["fast path (default)"]["tokens_per_s"]
    print(f"speed-up of the default path over the float32 reference: {fast / ref:.2f}x")



def generation_table(smoke: bool) -> None:
    """Generation speed at batch 1, float32, 2 threads: tokens/s with the key/value cache against
    recomputing the context every token, after 64 and 512 tokens of context (baseline's shape with
    a 1024-token window; untrained weights: speed does not depend on them)."""
    import torch

    from slm_tune.config import ExperimentConfig
    from slm_tune.model.gpt import GPT

    torch.set_num_threads(2)
    overrides = {"n_layer": 1, "n_embd": 64, "n_head": 2, "vocab_size": 1000} if smoke else {}
    c = ExperimentConfig.from_name("baseline", block_size=1024, **overrides)
    torch.manual_seed(0)
    model = GPT(c).eval()
    new = 8 if smoke else 32
    print(f"generation, {c.name} shape ({c.n_layer} x {c.n_embd}, block 1024), batch 1, float32, 2 threads, "
          f"{new} new tokens, median of 3:")
    for context in (64, 512):
        prompt = torch.randint(0, c.vocab_size, (1, context))
        speeds = {}
        for use_cache in (True, False):
            model.generate(prompt, 2, temperature=0, use_cache=use_cache)  # warm-up
            seconds = statistics.median(_timed(lambda: model.generate(prompt, new, temperature=0, use_cache=use_cache))
                                        for _ in range(3))
            speeds[use_cache] = new / seconds
        print(f"  context {context:>4}: cached {speeds[True]:>7.1f} tokens/s, uncached {speeds[False]:>7.1f} "
              f"tokens/s ({speeds[True] / speeds[False]:.1f}x)", flush=True)


ARCHITECTURES = ("baseline", "arch_llama", "arch_gqa", "arch_deep_thin", "arch_untied")


def architecture_table(smoke: bool) -> None:
    """The block designs on the default path (bfloat16 where native, fused loss, compiled), 2 threads,
    each in a fresh process: tokens/s and peak RSS against baseline at (about) equal parameters."""
    from slm_tune.config import EXPERIMENT_CONFIGS
    from slm_tune.model.counts import kv_cache_bytes_per_token, param_counts

    size = {"batch_size": 4, "block_size": 32, "compile": False} if smoke else {}
    timing = {"warmup": 1, "iters": 2} if smoke else {"warmup": 3, "iters": 8}
    print(f"{'experiment':<15} {'params':>10} {'KV B/token':>10} {'s/iter':>7} {'tok/s':>7} {'vs base':>7} {'RSS MB':>7}")
    base_speed = None
    for name in ARCHITECTURES:
        r = _run_row({"experiment": name, "overrides": size, "threads": 2, **timing})
        base_speed = base_speed or r["tokens_per_s"]
        c = EXPERIMENT_CONFIGS[name]
        print(f"{name:<15} {param_counts(c)[0]:>10,} {kv_cache_bytes_per_token(c):>10,} {r['s_per_iter']:>7.3f} "
              f"{r['tokens_per_s']:>7.0f} {r['tokens_per_s'] / base_speed:>6.2f}x {r['rss_mb']:>7.0f}", flush=True)


def _quality_line(smoke: bool) -> None:
    """The fast path's validation loss against float32's, same data and seed."""
    if smoke:  # the generation table's tiny shape: the smoke runs the code, the full bench measures the gap
        q = {"experiment": "optimal_fast", "overrides": {"n_layer": 1, "n_embd": 64, "n_head": 2, "vocab_size": 1000,
                                                        "batch_size": 4, "block_size": 32, "max_iters": 20,
                                                        "eval_interval": 10, "eval_iters": 2, "warmup_iters": 2,
                                                        "dataset": "storyworld:train=300,validation=30",
                                                        "compile": False}}
    else:
        q = {"experiment": "optimal_fast", "overrides": {"max_iters": 200, "eval_interval": 100, "eval_iters": 16,
                                                        "warmup_iters": 20}}
    qual = quality(q)
    diff = (qual["fast"]["val_loss"] - qual["float32"]["val_loss"]) / qual["float32"]["val_loss"]
    print(f"quality ({q['experiment']}, {q['overrides']['max_iters']} iterations, same data and seed): "
          f"val_loss float32 {qual['float32']['val_loss']:.4f}, fast path {qual['fast']['val_loss']:.4f} "
          f"({100 * diff:+.2f}%)")


if __name__ == "__main__":
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    main()
