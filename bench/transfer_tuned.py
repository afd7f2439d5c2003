#!/usr/bin/env python
"""Tune small, train large, measured (issue 31's goals): muP with its base settings tuned at 64
wide, trained at 512, against sp tuned directly at 512, at 3 seeds, in training FLOPs spent.

    python bench/transfer_tuned.py              (about 15 minutes on 2 cores)
    python bench/transfer_tuned.py --replot

1. Proxy: a grid at the base width (one seed) of muP's rate, output multiplier and hidden init std.
2. sp's tuning at the target width: bench/transfer.py's seven rates (one seed).
3. Each side's best at the target width at --seeds, compared with Welch's interval (slm-tune's
   analysis/significance.py): a verdict at 95%.
4. The width ladder: both at every width at those seeds (sp at the rate bench/transfer.json found
   best at that width, muP at the proxy's settings): does width pay under muP as under sp?
The tuning compute of each side is the training FLOPs of its runs (slm_tune.model.counts).
Writes OUTPUT/transfer_tuned.json (every run) and OUTPUT/transfer_tuned.png (the ladder).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from transfer import BASE, LRS, best_bpb  # noqa: E402  (bench/transfer.py: the same model, data and schedule)

PROXY_GRID = {"learning_rate": (7.8125e-3, 1.5625e-2), "mup_output_mult": (2.0, 4.0, 8.0),
              "hidden_init_std": (0.02, 0.04, 0.08)}
SP_RATE = {64: 7.8125e-3, 128: 7.8125e-3, 256: 3.90625e-3, 512: 1.953125e-3}  # bench/transfer.json's best sp rates


class Runs:
    """Every run of this bench, kept in the JSON as it goes (a rerun skips what is there)."""

    def __init__(self, path: Path, iters: int, threads: int):
        from slm_tune.data.cache import prepare_tokens

        self.path, self.iters, self.threads = path, iters, threads
        self.rows = json.loads(path.read_text())["rows"] if path.exists() else []
        self.data = prepare_tokens(BASE["dataset"], BASE["vocab_size"])

    def run(self, stage: str, **settings) -> dict:
        from slm_tune.config import ExperimentConfig
        from slm_tune.model.counts import training_flops
        from slm_tune.train import train

        key = {"stage": stage, "iters": self.iters, **settings}
        for row in self.rows:
            if all(row.get(k) == v for k, v in key.items()):
                return row
        c = ExperimentConfig(name="tuned", **BASE, max_iters=self.iters, eval_interval=self.iters).replace(**settings)
        t = time.perf_counter()
        result = train(c, self.data, threads=self.threads)
        row = {**key, "best_val_bpb": best_bpb(result),
               "flops": training_flops(c), "seconds": time.perf_counter() - t}
        self.rows.append(row)
        self.path.write_text(json.dumps({"rows": self.rows}, indent=1))
        print(f"{stage:<7} {json.dumps(settings)}: {row['best_val_bpb']:.4f} bits/byte ({row['seconds']:.0f} s)", flush=True)
        return row


def tune(runs: Runs, base: int, target: int, grid: dict) -> tuple[dict, dict, float, float]:
    """The proxy grid (muP at `base`) and sp's rates at `target`: each side's best settings and FLOPs."""
    proxy = [runs.run("proxy", parametrization="mup", n_embd=base, seed=1337, **dict(zip(grid, values)))
             for values in itertools.product(*grid.values())]
    sp = [runs.run("sp_grid", parametrization="sp", n_embd=target, seed=1337, learning_rate=lr) for lr in LRS]
    best_proxy = min(proxy, key=lambda r: r["best_val_bpb"])
    best_sp = min(sp, key=lambda r: r["best_val_bpb"])
    mup = {k: best_proxy[k] for k in grid}
    return mup, {"learning_rate": best_sp["learning_rate"]}, sum(r["flops"] for r in proxy), sum(r["flops"] for r in sp)


def ladder(runs: Runs, mup: dict, widths, seeds, sp_rates: dict) -> list[dict]:
    rows = []
    for width, seed in itertools.product(widths, seeds):
        rows.append(runs.run("ladder", parametrization="mup", n_embd=width, seed=seed, **mup))
        rows.append(runs.run("ladder", parametrization="sp", n_embd=width, seed=seed, learning_rate=sp_rates[width]))
    return rows


def compare(rows: list[dict], width: int) -> dict:
    """muP against sp at one width over the seeds: mean difference, Welch interval, p, verdict."""
    import numpy as np

    from analysis.significance import verdict, welch

    mup = np.array([r["best_val_bpb"] for r in rows if r["n_embd"] == width and r["parametrization"] == "mup"])
    sp = np.array([r["best_val_bpb"] for r in rows if r["n_embd"] == width and r["parametrization"] == "sp"])
    diff, low, high, p = welch(mup, sp)
    return {"width": width, "mup_mean": float(mup.mean()), "sp_mean": float(sp.mean()), "mup_sd": float(mup.std(ddof=1)),
            "sp_sd": float(sp.std(ddof=1)), "diff": diff, "ci95": [low, high], "p": p, "verdict": verdict(diff, p)}


def compare_all(rows: list[dict]) -> list[dict]:
    """compare() at every width, verdicts Holm-adjusted over the widths."""
    from analysis.significance import holm, verdict

    out = [compare(rows, w) for w in sorted({r["n_embd"] for r in rows})]
    for c, p in zip(out, holm([c["p"] for c in out])):
        c["p_holm"], c["verdict"] = p, verdict(c["diff"], p)
    return out


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    rows = report["ladder"]
    for p, label, color in (("sp", "sp, rate tuned at each width", "tab:blue"),
                            ("mup", f"muP, base settings tuned at {report.get('proxy_width', 64)} wide", "tab:orange")):
        mine = sorted((r["n_embd"], r["best_val_bpb"]) for r in rows if r["parametrization"] == p)
        ax.scatter(*zip(*mine), color=color, alpha=0.5, s=18)
        widths = sorted({w for w, _ in mine})
        means = [sum(b for w2, b in mine if w2 == w) / sum(1 for w2, _ in mine if w2 == w) for w in widths]
        ax.plot(widths, means, marker="o", color=color, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(widths, [str(w) for w in widths])
    ax.set_xlabel("width (n_embd)")
    ax.set_ylabel("best val bits per byte (dots: seeds)")
    m = report["mup"]
    attn = f", attention mult {m['mup_attn_mult']:g}" if "mup_attn_mult" in m else ""
    ax.set_title(f"muP at {report.get('proxy_width', 64)} wide's best (rate {m['learning_rate']:.2g}, output mult {m['mup_output_mult']:g}, "
                 f"hidden init {m['hidden_init_std']:g}{attn})\nagainst sp at each width's best rate, {rows[0]['iters']} iterations",
                 fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1337, 1338, 1339])
    parser.add_argument("--widths", nargs="+", type=int, default=[64, 128, 256, 512])
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=ROOT / "bench")
    parser.add_argument("--grid", nargs="+", default=[], metavar="KEY=V1,V2",
                        help=f"replace a proxy grid entry (default {PROXY_GRID})")
    parser.add_argument("--tag", default="", help="a suffix for the output files")
    parser.add_argument("--replot", action="store_true")
    args = parser.parse_args()
    grid = {**PROXY_GRID, **{k: tuple(float(v) for v in vs.split(",")) for k, vs in (g.split("=") for g in args.grid)}}
    out = args.output / f"transfer_tuned{'' if args.iters == 200 else f'_{args.iters}'}{args.tag}.json"
    if args.replot:
        doc = json.loads(out.read_text())
        doc["report"]["compare"] = compare_all(doc["report"]["ladder"])
        out.write_text(json.dumps(doc, indent=1))
        return plot(doc["report"], out.with_suffix(".png"))
    args.output.mkdir(parents=True, exist_ok=True)
    runs = Runs(out, args.iters, args.threads)
    base, target = args.widths[0], args.widths[-1]
    mup, sp, proxy_flops, sp_flops = tune(runs, base, target, grid)
    rows = ladder(runs, mup, args.widths, args.seeds, {**SP_RATE, target: sp["learning_rate"]})
    target_flops = next(r["flops"] for r in rows if r["n_embd"] == target)
    report = {"proxy_width": base, "grid": grid, "mup": mup, "sp": sp, "proxy_flops": proxy_flops, "sp_tuning_flops": sp_flops,
              "mup_tuning_share": (proxy_flops + target_flops) / sp_flops, "ladder": rows,
              "compare": compare_all(rows)}
    out.write_text(json.dumps({"rows": runs.rows, "report": report}, indent=1))
    plot(report, out.with_suffix(".png"))
    print(f"muP's tuning (proxy grid + one target run): {report['mup_tuning_share']:.2f} of sp's grid at {target}")
    for c in report["compare"]:
        print(f"width {c['width']}: muP {c['mup_mean']:.4f} (sd {c['mup_sd']:.4f}) sp {c['sp_mean']:.4f} (sd {c['sp_sd']:.4f}) "
              f"diff {c['diff']:+.4f} [{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}] p {c['p']:.3f} (Holm {c['p_holm']:.3f}): {c['verdict']}")


if __name__ == "__main__":
    main()
