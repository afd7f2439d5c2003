#!/usr/bin/env python
"""muP's learning-rate transfer, measured: a sweep of peak learning rates at widths 64 to 512
(fixed depth, heads and tokens), in sp and in muP (base width 64), every run in this process
through the library's training loop.

    python bench/transfer.py                       7 rates x 4 widths x 2 parametrizations (about 35 minutes on 2 cores)
    python bench/transfer.py --widths 64 128 --lrs 1e-3 4e-3 --iters 40     a part of it

It prints best val bits per byte for every width and rate, the best rate per width and how far
it moves over the widths, and what the widest model loses at the rate found at the narrowest;
it writes OUTPUT/transfer.json and OUTPUT/transfer.png (bits per byte against rate, one line
per width, sp and muP side by side).

    python bench/transfer.py --output-mults 1 4 16 --widths 64 512 --lrs 7.8e-3 1.6e-2

sweeps muP's output multiplier (mup_output_mult) instead, under muP only, and writes
OUTPUT/transfer_output_mult.json: whether the multiplier best at the narrow width is best wide too.

    python bench/transfer.py --depths 2 4 8 --width 128       (about 11 minutes per seed)
    python bench/transfer.py --depths 2 4 8 --width 128 --seeds 1338 1339 --add    two more seeds beside the stored
    python bench/transfer.py --depths 2 4 8 --width 128 --seeds 1337 1338 1339 --depth-parametrizations completep depth_mup --add
                                                              those two again, the stored none rows kept

sweeps the rate over depths instead (base depth the first), under no depth parametrization (sp's
GPT-2 init), completep and depth_mup, and writes OUTPUT/transfer_depth.json and .png: how far the
best rate moves from the shallowest to the deepest model under each.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LRS = tuple(2.0 ** k for k in range(-11, -4))  # 4.9e-4 .. 3.1e-2, a factor 2 apart
WIDTHS = (64, 128, 256, 512)
BASE = dict(vocab_size=2000, n_layer=2, n_head=4, block_size=64, batch_size=16, warmup_iters=20,
            min_lr_ratio=0.1, eval_iters=16, compile=False, dataset="storyworld", mup_base_width=64)


def best_bpb(result) -> float:
    """A finished run's best finite val bits per byte (NaN for a diverged run): the figure every
    transfer bench records."""
    evals = [h["val_bpb"] for h in result.history if math.isfinite(h["val_bpb"])]
    return min(evals) if result.status == "finished" and evals else math.nan


def sweep(widths, lrs, iters: int, threads: int, parametrizations=("sp", "mup"), mults=(1.0,)) -> list[dict]:
    from slm_tune.config import ExperimentConfig
    from slm_tune.data.cache import prepare_tokens
    from slm_tune.train import train

    base = ExperimentConfig(name="transfer", **BASE, max_iters=iters, eval_interval=iters)
    data = prepare_tokens(base.dataset, base.vocab_size)
    rows = []
    for parametrization, width, lr, mult in itertools.product(parametrizations, widths, lrs, mults):
        c = base.replace(n_embd=width, learning_rate=lr, parametrization=parametrization, mup_output_mult=mult)
        t = time.perf_counter()
        result = train(c, data, threads=threads)
        bpb = best_bpb(result)
        rows.append({"parametrization": parametrization, "width": width, "lr": lr, "mup_output_mult": mult,
                     "best_val_bpb": bpb, "seconds": time.perf_counter() - t})
        print(f"{parametrization:<4} width {width:>4} lr {lr:.2e} output mult {mult:g}: {bpb:.4f} bits/byte "
              f"({rows[-1]['seconds']:.0f} s)", flush=True)
    return rows


def depth_sweep(depths, kinds, lrs, iters: int, threads: int, width: int, seeds=(1337,)) -> list[dict]:
    """Every rate at every depth under each depth parametrization (base depth depths[0]), for each
    seed; at the base depth they are all the standard model, so it is trained once and recorded
    for each."""
    from slm_tune.config import ExperimentConfig
    from slm_tune.data.cache import prepare_tokens
    from slm_tune.train import train

    base = ExperimentConfig(name="transfer", **BASE, max_iters=iters, eval_interval=iters, n_embd=width)
    data = prepare_tokens(base.dataset, base.vocab_size)
    rows = []
    for seed, depth, lr in itertools.product(seeds, depths, lrs):
        for kind in (kinds[:1] if depth == depths[0] else kinds):
            c = base.replace(n_layer=depth, learning_rate=lr, depth_parametrization=kind, seed=seed,
                             base_depth=depths[0] if kind != "none" else 0)
            t = time.perf_counter()
            result = train(c, data, threads=threads)
            bpb = best_bpb(result)
            same = kinds if depth == depths[0] else [kind]
            rows += [{"depth_parametrization": k, "depth": depth, "width": width, "lr": lr, "seed": seed,
                      "best_val_bpb": bpb, "seconds": time.perf_counter() - t} for k in same]
            print(f"{kind:<9} depth {depth:>2} lr {lr:.2e} seed {seed}: {bpb:.4f} bits/byte "
                  f"({rows[-1]['seconds']:.0f} s)", flush=True)
    return rows


def seed_means(rows: list[dict]) -> list[dict]:
    """The rows averaged over seeds (a run that diverged makes its cell's mean NaN), with the seeds
    each mean is over; rows stored before seeds were recorded are seed 1337's."""
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        cells.setdefault((r["depth_parametrization"], r["depth"], r["lr"]), []).append(r)
    return [{**same[0], "best_val_bpb": sum(r["best_val_bpb"] for r in same) / len(same),
             "seeds": sorted(r.get("seed", 1337) for r in same)} for same in cells.values()]


def depth_summary(rows: list[dict]) -> dict:
    """Per depth parametrization, on the seeds' mean: the best rate at each depth and how many grid
    steps (factors of 2) it moves from the shallowest to any depth, the best bpb at each depth,
    and how far the best rate moved in each seed alone."""
    per_seed = {seed: _depth_moves([r for r in rows if r.get("seed", 1337) == seed])
                for seed in sorted({r.get("seed", 1337) for r in rows})}
    out = _depth_moves(seed_means(rows))
    for kind in out:
        out[kind]["grid_steps_moved_per_seed"] = {seed: moves[kind]["max_grid_steps_moved"] for seed, moves in per_seed.items()}
    return out


def _depth_moves(rows: list[dict]) -> dict:
    out = {}
    for kind in dict.fromkeys(r["depth_parametrization"] for r in rows):
        mine = [r for r in rows if r["depth_parametrization"] == kind and not math.isnan(r["best_val_bpb"])]
        depths = sorted({r["depth"] for r in mine})
        best = {d: min((r for r in mine if r["depth"] == d), key=lambda r: r["best_val_bpb"]) for d in depths}
        steps = [abs(math.log2(best[d]["lr"] / best[depths[0]]["lr"])) for d in depths]
        deep = next(r for r in mine if r["depth"] == depths[-1] and r["lr"] == best[depths[0]]["lr"])
        out[kind] = {"best_lr": {d: best[d]["lr"] for d in depths}, "best_bpb": {d: best[d]["best_val_bpb"] for d in depths},
                     "max_grid_steps_moved": max(steps), "deep_at_shallow_lr_bpb": deep["best_val_bpb"],
                     "deep_loss_vs_best": deep["best_val_bpb"] / best[depths[-1]]["best_val_bpb"] - 1}
    return out


def plot_depth(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    kinds = list(dict.fromkeys(r["depth_parametrization"] for r in rows))
    depths = sorted({r["depth"] for r in rows})
    colors = dict(zip(depths, plt.get_cmap("viridis")(np.linspace(0, 0.85, len(depths)))))
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 4.4), sharey=True)
    for ax, kind in zip(np.atleast_1d(axes), kinds):
        for d in depths:
            pts = sorted((r["lr"], r["best_val_bpb"]) for r in rows if r["depth_parametrization"] == kind and r["depth"] == d)
            ax.plot(*zip(*pts), marker="o", color=colors[d], label=f"{d} layers")
            good = [pt for pt in pts if not math.isnan(pt[1])]
            if good:
                ax.scatter(*zip(min(good, key=lambda pt: pt[1])), marker="*", s=160, color=colors[d], edgecolors="black", zorder=3)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("peak learning rate")
        ax.set_title(f"depth_parametrization={kind}: best rate starred", fontsize=10)
        ax.grid(alpha=0.3, which="both")
    low = min(r["best_val_bpb"] for r in rows if not math.isnan(r["best_val_bpb"]))
    np.atleast_1d(axes)[0].set_ylim(low * 0.95, low * 2.2)
    np.atleast_1d(axes)[0].set_ylabel("best val bits per byte")
    np.atleast_1d(axes)[-1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary(rows: list[dict]) -> dict:
    """Per parametrization: the best rate at each width, its spread, and the widest model at the
    narrowest width's best rate against its own best."""
    out = {}
    for p in ("sp", "mup"):
        mine = [r for r in rows if r["parametrization"] == p and not math.isnan(r["best_val_bpb"])]
        widths = sorted({r["width"] for r in mine})
        best = {w: min((r for r in mine if r["width"] == w), key=lambda r: r["best_val_bpb"]) for w in widths}
        narrow, wide = widths[0], widths[-1]
        at_narrow_rate = next(r for r in mine if r["width"] == wide and r["lr"] == best[narrow]["lr"])
        rates = [best[w]["lr"] for w in widths]
        out[p] = {"best_lr": {w: best[w]["lr"] for w in widths}, "best_bpb": {w: best[w]["best_val_bpb"] for w in widths},
                  "lr_spread": max(rates) / min(rates),
                  "wide_at_narrow_lr_bpb": at_narrow_rate["best_val_bpb"],
                  "wide_loss_vs_best": at_narrow_rate["best_val_bpb"] / best[wide]["best_val_bpb"] - 1}
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    widths = sorted({r["width"] for r in rows})
    colors = dict(zip(widths, plt.get_cmap("viridis")(np.linspace(0, 0.85, len(widths)))))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for ax, p, title in zip(axes, ("sp", "mup"), ("standard parametrization", "muP (base width 64)")):
        for w in widths:
            pts = sorted((r["lr"], r["best_val_bpb"]) for r in rows if r["parametrization"] == p and r["width"] == w)
            ax.plot(*zip(*pts), marker="o", color=colors[w], label=f"width {w}")
            good = [pt for pt in pts if not math.isnan(pt[1])]
            if good:
                lr, bpb = min(good, key=lambda pt: pt[1])
                ax.scatter([lr], [bpb], marker="*", s=160, color=colors[w], edgecolors="black", zorder=3)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("peak learning rate")
        ax.set_title(f"{title}: best rate per width starred", fontsize=10)
        ax.grid(alpha=0.3, which="both")
        low = min(r["best_val_bpb"] for r in rows if r["parametrization"] == p and not math.isnan(r["best_val_bpb"]))
        ax.set_ylim(low * 0.92, low * 4)
    axes[0].set_ylabel("best val bits per byte")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", nargs="+", type=int, default=list(WIDTHS))
    parser.add_argument("--lrs", nargs="+", type=float, default=list(LRS))
    parser.add_argument("--iters", type=int, default=200, help="iterations per run (default 200: 205k tokens)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=ROOT / "bench")
    parser.add_argument("--replot", action="store_true", help="only redraw OUTPUT/transfer.png from its transfer.json")
    parser.add_argument("--output-mults", nargs="+", type=float, help="sweep mup_output_mult under muP instead")
    parser.add_argument("--depths", nargs="+", type=int, help="sweep the rate over these depths instead (base: the first)")
    parser.add_argument("--depth-parametrizations", nargs="+", default=["none", "completep", "depth_mup"])
    parser.add_argument("--width", type=int, default=128, help="the width of the depth sweep")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1337], help="the depth sweep's seeds (default 1337)")
    parser.add_argument("--add", action="store_true",
                        help="keep the rows of other seeds and other depth parametrizations already in "
                             "OUTPUT/transfer_depth.json and add these")
    args = parser.parse_args()
    if args.depths:
        return depth_main(args)
    if args.output_mults:
        rows = sweep(args.widths, args.lrs, args.iters, args.threads, ("mup",), args.output_mults)
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / "transfer_output_mult.json").write_text(json.dumps({"rows": rows}, indent=1))
        for w in sorted({r["width"] for r in rows}):
            best = min((r for r in rows if r["width"] == w), key=lambda r: r["best_val_bpb"])
            print(f"width {w}: best {best['best_val_bpb']:.4f} at lr {best['lr']:.2e}, output mult {best['mup_output_mult']:g}")
        return
    if args.replot:
        plot(json.loads((args.output / "transfer.json").read_text())["rows"], args.output / "transfer.png")
        return
    rows = sweep(args.widths, args.lrs, args.iters, args.threads)
    result = summary(rows)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "transfer.json").write_text(json.dumps({"rows": rows, "summary": result}, indent=1))
    plot(rows, args.output / "transfer.png")
    for p, s in result.items():
        rates = ", ".join(f"{w}: {lr:.2e}" for w, lr in s["best_lr"].items())
        print(f"{p}: best rate per width {rates}; spread {s['lr_spread']:.0f}x; the widest at the narrowest's rate "
              f"{s['wide_at_narrow_lr_bpb']:.4f} bits/byte, {100 * s['wide_loss_vs_best']:+.2f}% from its best")


def depth_main(args) -> None:
    out = args.output / "transfer_depth.json"
    if args.replot:
        rows = json.loads(out.read_text())["rows"]
    else:
        rows = depth_sweep(args.depths, args.depth_parametrizations, args.lrs, args.iters, args.threads, args.width,
                           args.seeds)
        if args.add and out.is_file():  # the other seeds' and depth parametrizations' rows, kept
            rows = [r for r in json.loads(out.read_text())["rows"] if r.get("seed", 1337) not in args.seeds
                    or r["depth_parametrization"] not in args.depth_parametrizations] + rows
        args.output.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "summary": depth_summary(rows)}, indent=1))
    plot_depth(seed_means(rows), out.with_suffix(".png"))
    for kind, s in depth_summary(rows).items():
        rates = ", ".join(f"{d}: {lr:.2e}" for d, lr in s["best_lr"].items())
        bpbs = ", ".join(f"{d}: {b:.4f}" for d, b in s["best_bpb"].items())
        print(f"{kind}: best rate per depth {rates} (moves {s['max_grid_steps_moved']:.0f} grid steps); best bpb {bpbs}; "
              f"the deepest at the shallowest's rate {s['deep_at_shallow_lr_bpb']:.4f} ({100 * s['deep_loss_vs_best']:+.1f}%); "
              f"steps moved per seed {s['grid_steps_moved_per_seed']}")


if __name__ == "__main__":
    main()
