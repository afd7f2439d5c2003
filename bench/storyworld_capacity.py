#!/usr/bin/env python
"""Does more capacity buy lower loss on a corpus? Model sizes of the scaling family (search_spaces/
scaling.py: its shapes, rates and settings) trained for one token budget on each corpus, every run
in this process through the library's training loop, one row per run in a JSON file that a rerun
extends (runs already there are skipped: stop it any time, run it again to go on).

    python bench/storyworld_capacity.py                                   s2, s4, s5 x v1, v2 at 600 iterations
    python bench/storyworld_capacity.py --sizes s1 s2 s3 s4 s5 --iters 2400 --corpora storyworld:version=2
    python bench/storyworld_capacity.py --sizes s6 --iters 600            one size beyond the family (10.6M)
    python bench/storyworld_capacity.py --sizes --fit storyworld:version=2   no runs: the table, and the law fitted

It prints, per corpus, each size's best val bits per byte (whole windows and second halves), the
floor (the corpus's entropy) and, on storyworld version 2, the world-free level (a model that
knows the grammar but no character); and each size step's gain with its paired evaluation noise
(the standard error of the per-window difference on the shared eval windows,
analysis/significance.py's paired_se) and their ratio. It writes the JSON (default
bench/storyworld_capacity.json) and a plot beside it (.png): bits per byte against non-embedding
parameters, one line per corpus and budget, the floors dashed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EXTRA_SIZES = (("s6", 6, 384, 6, 2e-3),)  # (name, n_layer, n_embd, n_head, learning_rate): 10.6M non-embedding
CORPORA = ("storyworld", "storyworld:version=2")
EVALS = 8
MARKERS = {150: "v", 300: "o", 600: "s", 1200: "D", 2400: "^", 4800: "P", 9600: "X"}  # a budget's marker in every plot


def size_config(size: str, corpus: str, iters: int, seed: int, lr_mult: float = 1.0):
    """The scaling family's run of this size, at `iters` iterations on `corpus` (its rate x lr_mult)."""
    from search_spaces import get_study
    from search_spaces.scaling import ITERATIONS

    family = get_study("scaling").configs()
    extra = {s[0]: s for s in EXTRA_SIZES}
    base = family[f"scaling_{size if size not in extra else 's5'}_{min(ITERATIONS)}"]
    if size in extra:
        _, layers, width, heads, lr = extra[size]
        base = base.replace(n_layer=layers, n_embd=width, n_head=heads, learning_rate=lr)
    return base.replace(name=f"capacity_{size}_{iters}", dataset=corpus, seed=seed, max_iters=iters,
                        learning_rate=base.learning_rate * lr_mult,
                        eval_interval=max(1, iters // EVALS), warmup_iters=round(iters * 0.1))


def run_one(size: str, corpus: str, iters: int, seed: int, threads: int, lr_mult: float = 1.0) -> dict:
    from slm_tune.data.cache import prepare_tokens
    from slm_tune.model.counts import param_counts
    from slm_tune.train import train
    from slm_tune.tune.study_record import machine_info

    c = size_config(size, corpus, iters, seed, lr_mult)
    data = prepare_tokens(c.dataset, c.vocab_size)
    best: dict = {}

    def report(metrics, _save):
        if metrics.get("kind") == "eval" and "window_bpb" in metrics:
            best.update(window_bpb=metrics["window_bpb"], val_bpb_se=metrics["val_bpb_se"],
                        eval_windows=metrics.get("eval_windows"))

    t = time.perf_counter()
    result = train(c, data, report=report, threads=threads)
    history = [h for h in result.history if math.isfinite(h["val_bpb"])]
    source = data.meta["source"]
    return {"corpus": corpus, "size": size, "iters": iters, "seed": seed, "status": result.status,
            "n_layer": c.n_layer, "n_embd": c.n_embd, "learning_rate": c.learning_rate, "lr_mult": lr_mult,
            "non_embedding_params": param_counts(c)[1], "tokens": iters * c.batch_size * c.block_size,
            "best_val_bpb": min(h["val_bpb"] for h in history),
            "best_val_bpb_context": min(h["val_bpb_context"] for h in history),
            "entropy_bpb": source.get("entropy_bpb"), "world_free_bpb": source.get("world_free_bpb"),
            "seconds": round(time.perf_counter() - t, 1), "threads": threads, "machine": machine_info()["cpu"], **best}


def _run(r: dict) -> tuple:
    """A run's identity apart from its rate: corpus, size, budget, seed."""
    return r["corpus"], r["size"], r["iters"], r["seed"]


def _mult(r: dict) -> float:
    """The run's rate multiplier (rows written before --lr-mult ran at the family's rate)."""
    return r.get("lr_mult", 1.0)


def difference_se(a: dict, b: dict) -> tuple[float, str]:
    """The evaluation noise of b - a: paired over the windows when both runs were evaluated on the
    same ones (the same eval_windows fingerprint; rows written before it was stored, all by one
    earlier evaluator, count as the same as each other), else the two standard errors combined."""
    from analysis.significance import paired_se

    if a.get("eval_windows") == b.get("eval_windows") and a.get("window_bpb") and b.get("window_bpb"):
        return paired_se(a["window_bpb"], b["window_bpb"]), "paired se"
    return math.hypot(a.get("val_bpb_se", math.nan), b.get("val_bpb_se", math.nan)), "unpaired se, other windows"


def step_table(rows: list[dict]) -> list[str]:
    """Per corpus, budget and seed: each size, and each step's gain against its evaluation noise."""
    lines = []
    for corpus, iters, seed in dict.fromkeys((r["corpus"], r["iters"], r["seed"]) for r in rows):
        mine = sorted((r for r in rows if (r["corpus"], r["iters"], r["seed"]) == (corpus, iters, seed)),
                      key=lambda r: r["non_embedding_params"])
        floor, free = mine[0]["entropy_bpb"], mine[0].get("world_free_bpb")
        lines.append(f"\n{corpus}, {iters} iterations ({mine[0]['tokens'] / 1e6:.1f}M tokens), seed {seed}: "
                     f"floor {floor:.4f}"
                     + (f", world-free {free:.4f}" if free else "") + " bits per byte")
        lines.append("size   non-emb N   val_bpb   (se)     context   gap to floor   step gain   paired se   gain/se")
        for prev, r in zip([None] + mine[:-1], mine):
            step = ""
            if prev is not None and prev.get("window_bpb") and r.get("window_bpb"):
                gain = prev["best_val_bpb"] - r["best_val_bpb"]
                se, kind = difference_se(prev, r)
                step = f"{gain:+11.4f} {se:11.4f} {gain / se:9.1f}" + ("" if kind == "paired se" else f" ({kind})")
            lines.append(f"{r['size']:<6}{r['non_embedding_params'] / 1e6:9.3f}M {r['best_val_bpb']:9.4f} "
                         f"({r.get('val_bpb_se', math.nan):.4f}) {r['best_val_bpb_context']:9.4f} "
                         f"{r['best_val_bpb_context'] - floor:14.4f} {step}")
    return lines


def best_rate(rows: list[dict], metric: str) -> list[dict]:
    """Per corpus, size, budget and seed, the finished run at the rate that ended lowest on `metric`,
    among the runs evaluated on the same windows as the family's rate's run (or, without a finished
    one, the first finished run's): rates scored on other windows do not compete."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["status"] == "finished":
            groups.setdefault(_run(r), []).append(r)
    out = []
    for runs in groups.values():
        ref = next((r for r in runs if _mult(r) == 1.0), runs[0])
        out.append(min((r for r in runs if r.get("eval_windows") == ref.get("eval_windows")), key=lambda r: r[metric]))
    return out


def probe_lines(rows: list[dict]) -> list[str]:
    """Each run that has rate probes (--lr-mult): its rates side by side, with the evaluation noise
    of each probe's difference from the family's rate (difference_se; one seed each: a probe, not a
    tuning)."""
    probes = [r for r in rows if _mult(r) != 1.0]
    lines = ["\nrate probes (the family's rate x lr_mult; context = second-half bpb)"] if probes else []
    for key in dict.fromkeys(_run(r) for r in probes):
        same = sorted((r for r in rows if _run(r) == key), key=_mult)
        ref = next((r for r in same if _mult(r) == 1.0), None)
        for r in same:
            vs = ""
            if ref is not None and r is not ref and r.get("window_bpb") and ref.get("window_bpb"):
                se, kind = difference_se(ref, r)
                vs = f"  whole {r['best_val_bpb'] - ref['best_val_bpb']:+.4f} against x1 ({kind} {se:.4f})"
            lines.append(f"{key[0]} {key[1]} {key[2]} it seed {key[3]}: x{_mult(r):g} "
                         f"(rate {r['learning_rate']:.3g}) whole {r['best_val_bpb']:.4f} context "
                         f"{r['best_val_bpb_context']:.4f}{vs}")
    return lines


def fit_lines(rows: list[dict], corpus: str, metric: str) -> list[str]:
    """The scaling law fitted to one corpus's runs of the scaling family's sizes (every budget there,
    seed 1337) with E fixed at its entropy, as `studies.py fit` prints it, held-out error included
    (the largest size predicted from the others)."""
    import pandas as pd

    from analysis.scaling import ScalingRuns, fit_scaling, format_fit
    from search_spaces.scaling import SIZES

    family = {s[0] for s in SIZES}
    mine = [r for r in rows if r["corpus"] == corpus and r["seed"] == 1337 and r["status"] == "finished"
            and r["size"] in family]
    table = pd.DataFrame([{"experiment": f"{r['size']}_{r['iters']}", "N": float(r["non_embedding_params"]),
                           "D": float(r["tokens"]), "L": r[metric], "C": 6.0 * r["non_embedding_params"] * r["tokens"],
                           "L_se": r.get("val_bpb_se", math.nan) if metric == "best_val_bpb" else math.nan}
                          for r in mine], columns=["experiment", "N", "D", "L", "C", "L_se"])
    runs = ScalingRuns(table, mine[0]["entropy_bpb"], dataset=corpus, tokenizer="gpt2-2000", metric=metric)
    return ["", format_fit(fit_scaling(runs, bootstrap=100))]


def plot(rows: list[dict], path: Path, rates: str = "each run at the rate it was run at (lr_mult 1)") -> None:
    """Left: best val bits per byte (whole windows) against N, the floors dashed and version 2's
    world-free level dotted; right: the second-half figure's gap to the floor, log-log (what a
    scaling law's reducible terms describe). One colour per corpus, one line style per budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    corpora = list(dict.fromkeys(r["corpus"] for r in rows))
    for (corpus, iters), mine in sorted(_groups(rows).items(), key=lambda g: (corpora.index(g[0][0]), g[0][1])):
        color = f"C{corpora.index(corpus)}"
        n = [r["non_embedding_params"] for r in mine]
        label = (f"{corpus}, " if len(corpora) > 1 else "") + f"{mine[0]['tokens'] / 1e6:.1f}M tokens"
        style = dict(marker=MARKERS.get(iters, "*"), color=color, lw=1.2)
        left.plot(n, [r["best_val_bpb"] for r in mine], label=label, **style)
        right.plot(n, [r["best_val_bpb_context"] - r["entropy_bpb"] for r in mine], **style)
    for corpus in corpora:
        first = next(r for r in rows if r["corpus"] == corpus)
        left.axhline(first["entropy_bpb"], color=f"C{corpora.index(corpus)}", ls="--", lw=0.8)
        if first.get("world_free_bpb"):
            left.axhline(first["world_free_bpb"], color=f"C{corpora.index(corpus)}", ls=":", lw=0.8)
    left.set_ylabel("best val bits per byte (whole windows)")
    right.set_ylabel("second-half val bits per byte minus the floor")
    right.set_yscale("log")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("non-embedding parameters")
        ax.grid(True, which="both", alpha=0.3)
    fig.legend(*left.get_legend_handles_labels(), loc="lower center", ncol=6, fontsize=8,
               title=corpora[0] if len(corpora) == 1 else None, title_fontsize=8)
    fig.suptitle(f"storyworld capacity, {rates} (left: dashed each corpus's entropy, dotted version 2's world-free level)")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _groups(rows: list[dict]) -> dict[tuple[str, int], list[dict]]:
    """Seed 1337's runs by (corpus, budget), smallest model first."""
    out: dict[tuple[str, int], list[dict]] = {}
    for r in sorted((r for r in rows if r["seed"] == 1337), key=lambda r: r["non_embedding_params"]):
        out.setdefault((r["corpus"], r["iters"]), []).append(r)
    return out


def main() -> None:
    from search_spaces.scaling import SIZES

    names = [s[0] for s in SIZES] + [s[0] for s in EXTRA_SIZES]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", nargs="+", default=list(CORPORA))
    parser.add_argument("--sizes", nargs="*", choices=names, default=["s2", "s4", "s5"])
    parser.add_argument("--iters", type=int, default=600)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1337])
    parser.add_argument("--lr-mult", type=float, default=1.0,
                        help="each size's rate x this (a rate probe: kept out of the tables, the plot and the fit)")
    parser.add_argument("--best-rate", action="store_true",
                        help="tables, plot and fit take each run at the best of the rates it was run at (a best-of-k "
                             "on the windows it is judged on: optimistic by the evaluation's and the training's noise)")
    parser.add_argument("--budgets", nargs="+", type=int, metavar="ITERS",
                        help="the stored budgets (iterations) the tables, the plot and the fit read (default: all; "
                             "the plot's file name then says which)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "storyworld_capacity.json")
    parser.add_argument("--fit", metavar="CORPUS", help="also fit L(N, D) to this corpus's stored runs, E at its floor")
    parser.add_argument("--metric", default="best_val_bpb_context", choices=["best_val_bpb_context", "best_val_bpb"])
    args = parser.parse_args()
    rows = json.loads(args.out.read_text()) if args.out.exists() else []
    done = {(*_run(r), _mult(r)) for r in rows}
    for corpus in args.corpora:
        for seed in args.seeds:
            for size in args.sizes:
                if (corpus, size, args.iters, seed, args.lr_mult) in done:
                    continue
                rows.append(run_one(size, corpus, args.iters, seed, args.threads, args.lr_mult))
                r = rows[-1]
                print(f"{corpus} {size} {args.iters} it seed {seed} rate {r['learning_rate']:.3g}: "
                      f"{r['best_val_bpb']:.4f} bpb, context {r['best_val_bpb_context']:.4f} ({r['seconds']:.0f} s, "
                      f"{r['machine']})", flush=True)
                args.out.write_text(json.dumps(rows, indent=1))
    read = [r for r in rows if args.budgets is None or r["iters"] in args.budgets]
    missing = sorted(set(args.budgets or ()) - {r["iters"] for r in read})
    if missing:
        sys.exit(f"--budgets {' '.join(map(str, missing))}: no stored run in {args.out} has that many iterations; "
                 f"stored: {' '.join(map(str, sorted({r['iters'] for r in rows})))}")
    family = (best_rate(read, args.metric) if args.best_rate
              else [r for r in read if _mult(r) == 1.0 and r["status"] == "finished"])
    if args.best_rate:
        print("each run at the best of its rates:", ", ".join(f"{r['size']} {r['iters']} it x{_mult(r):g}"
                                                                for r in family))
    print("\n".join(step_table(family) + probe_lines(read)
                    + (fit_lines(family, args.fit, args.metric) if args.fit else [])))
    which = f"_{'-'.join(map(str, sorted(set(args.budgets))))}" if args.budgets else ""
    figure = args.out.with_name(args.out.stem + ("_best_rate" if args.best_rate else "") + which + ".png")
    plot(family, figure, *(["each run at the best of the rates tried (one seed)"] if args.best_rate else []))
    print(f"\n{args.out} and {figure}")


if __name__ == "__main__":
    main()
