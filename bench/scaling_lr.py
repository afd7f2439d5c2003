#!/usr/bin/env python
"""The scaling family's learning rates: each model size at its shortest token budget, over a
grid of peak learning rates, as one Ray Tune study through the library.

    python bench/scaling_lr.py                                  every size x 4 rates (about 25 minutes on 2 cores, from its parts)
    python bench/scaling_lr.py --sizes s1 s3 --lrs 4e-3 8e-3    a part of it

A scaling law describes models trained well for their size and data; one learning rate for a
63x range of sizes leaves the small ones far from their best (at 1e-3 the 50k model's 1.2M-token
run ends at 1.05 bits per byte, at 1e-2 at 0.39). It prints best val bits per byte for every
size and rate, the best rate per size next to the rate search_spaces/scaling.py gives it, and
plots bits per byte against rate (OUTPUT/scaling_lr.png).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LRS = (2e-3, 4e-3, 8e-3, 1.6e-2)


def main() -> None:
    from analysis.load import find_runs, load_run
    from search_spaces import get_study
    from search_spaces.scaling import ITERATIONS, SIZES
    from slm_tune.tune.callbacks.progress import StudyProgress
    from slm_tune.tune.run import StudyRun, run_study

    names = [s[0] for s in SIZES]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", choices=names, default=names)
    parser.add_argument("--lrs", nargs="+", type=float, default=list(LRS))
    parser.add_argument("--output-dir", type=Path, default=None, help="default: a new temporary directory")
    args = parser.parse_args()
    out = args.output_dir or Path(tempfile.mkdtemp(prefix="slm-bench-scaling-lr-"))

    family = get_study("scaling").configs()
    shortest = min(ITERATIONS)
    configs, tuned = {}, {}
    for size in args.sizes:
        base = family[f"scaling_{size}_{shortest}"]
        tuned[size] = base.learning_rate
        for lr in args.lrs:
            name = f"lr_{size}_{lr:g}"
            configs[name] = base.replace(name=name, learning_rate=lr, description=f"{size} at lr {lr:g}")
    start = time.time()
    run_study(StudyRun(study="scaling_lr", configs=configs, output_dir=out, tensorboard=False,
                       log=lambda msg: print(msg, file=sys.stderr, flush=True),
                       callbacks=[StudyProgress(max_iters={n: c.max_iters for n, c in configs.items()})]))
    trials, _ = load_run(find_runs(out, ["scaling_lr"])[-1])
    best = dict(zip(trials["experiment"], trials["best_val_bpb"].astype(float)))

    print(f"\n{len(configs)} runs of {shortest} iterations in {time.time() - start:.0f} s; best val bits per byte:")
    print("size  " + "".join(f"{lr:>10g}" for lr in args.lrs) + "   best lr   scaling.py's lr")
    table = {}
    for size in args.sizes:
        row = [best.get(f"lr_{size}_{lr:g}", float("nan")) for lr in args.lrs]
        table[size] = row
        finite = [(v, lr) for v, lr in zip(row, args.lrs) if v == v]
        top = min(finite)[1] if finite else float("nan")
        print(f"{size:<6}" + "".join(f"{v:>10.4f}" for v in row) + f"{top:>10g}{tuned[size]:>18g}")
    (out / "scaling_lr.json").write_text(json.dumps({"lrs": args.lrs, "best_val_bpb": table}, indent=1))
    plot(table, args.lrs, tuned, out / "scaling_lr.png")
    print(f"plot: {out / 'scaling_lr.png'}")


def plot(table: dict[str, list[float]], lrs: list[float], tuned: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(8, 5))
    for size, row in table.items():
        line, = ax.plot(lrs, row, "o-", label=size)
        ax.axvline(tuned[size], color=line.get_color(), ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.2f"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%.2f"))
    ax.set_xlabel("peak learning rate")
    ax.set_ylabel("best val bits per byte (shortest budget)")
    ax.set_title("Scaling family: learning rate per size (dotted: the rate scaling.py uses)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="size")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
