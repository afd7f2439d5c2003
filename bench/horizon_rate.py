#!/usr/bin/env python
"""How the best learning rate moves with training length at one shape (the rate rule of `build`).

    python bench/horizon_rate.py --config CONFIG.json          resumable: run it again to go on
    python bench/horizon_rate.py --replot

muP transfers the rate across width, not across training length: Bjorck et al. (ICLR 2025) find
the best peak rate falls with the tokens trained as LR*(D) = B D^-beta. `build` tunes its rate at
its proxy's short horizon and trains the sweep and the target for other lengths; with
--horizon-exponent BETA it moves the rate by (iterations / the search's)^-BETA
(workflows/build_plan.at_horizon; off by default). This bench measures
beta at one shape: CONFIG (an experiment as a results file stores it, e.g. a build's
`build_target_results.json`) trained for each of --iters iterations (warmup 10%, 8 evaluations,
as build's runs) at the rate x each of --mults, one seed, one trial per core. For each length the
best rate is the vertex of a parabola through the three lowest points in log rate (or the grid's
best when the lowest is at an edge, said so); beta is the least-squares slope of log best rate on
log iterations. Writes OUT (JSON) and OUT with .png.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def name(iters: int, mult: float) -> str:
    return f"h{iters}_x{mult:g}"  # WORK/<this>: the run's output dir; a finished results file there is kept


def run(config: dict, iters: int, mult: float, work: Path, dataset: str) -> subprocess.Popen | None:
    """Start one run (None if it finished before): `studies.py run` on a one-experiment file."""
    key = name(iters, mult)
    out = work / key
    if _result(out) is not None:
        return None
    out.mkdir(parents=True, exist_ok=True)
    from slm_tune.config import ExperimentConfig
    from workflows.build_plan import run_length  # build's own length rule: warmup and evaluations

    c = run_length(ExperimentConfig(**config), iters).replace(learning_rate=config["learning_rate"] * mult,
                                                              dataset=dataset).to_dict()
    c = {k: v for k, v in c.items() if k not in ("name", "description")}
    (out / "exp.json").write_text(json.dumps({key: c}))
    resume = ["--resume"] if (out / "ray_results").exists() else []
    log = (out / "run.log").open("a")
    return subprocess.Popen([sys.executable, str(ROOT / "studies.py"), "run", key, "--experiments-file",
                             str(out / "exp.json"), "--output-dir", str(out), "--cpus-per-trial", "1", *resume],
                            stdout=log, stderr=log, stdin=subprocess.DEVNULL)


def _result(out: Path) -> dict | None:
    for p in sorted((out / "experiments").glob("*_results.json")) if (out / "experiments").exists() else []:
        if p.name == "batch_results.json":
            continue
        r = json.loads(p.read_text())
        if r.get("status") == "finished" and r.get("best_val_bpb") is not None:
            return r
    return None


def best_rate(points: list[tuple[float, float]]) -> tuple[float, str]:
    """(rate, how): the vertex of the parabola in log rate through the lowest point and its two
    neighbours, or the lowest point itself when it is at the grid's edge."""
    points = sorted(points)
    i = int(np.argmin([y for _, y in points]))
    if i in (0, len(points) - 1):
        return points[i][0], "grid edge (the best rate may lie beyond it)"
    x = np.log([points[j][0] for j in (i - 1, i, i + 1)])
    y = [points[j][1] for j in (i - 1, i, i + 1)]
    a, b, _ = np.polyfit(x, y, 2)
    return float(np.exp(-b / (2 * a))), "parabola vertex"


def analyse(rows: list[dict]) -> dict:
    by_iters: dict[int, list[tuple[float, float]]] = {}
    for r in rows:
        by_iters.setdefault(r["iters"], []).append((r["learning_rate"], r["best_val_bpb"]))
    best = {it: best_rate(pts) for it, pts in sorted(by_iters.items()) if len(pts) >= 2}
    out = {"best_rate": {str(it): {"rate": r, "how": how} for it, (r, how) in best.items()}}
    inner = {it: r for it, (r, how) in best.items() if how == "parabola vertex"}
    if len(inner) >= 2:
        slope = np.polyfit(np.log(list(inner)), np.log(list(inner.values())), 1)[0]
        out["beta"] = float(-slope)
        out["beta_from"] = sorted(inner)
    return out


def plot(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    lengths = sorted({r["iters"] for r in doc["runs"]})
    for k, it in enumerate(lengths):
        pts = sorted((r["learning_rate"], r["best_val_bpb"]) for r in doc["runs"] if r["iters"] == it)
        ax.plot(*zip(*pts), "o-", color=f"C{k}", label=f"{it} iterations")
        best = doc["analysis"]["best_rate"].get(str(it))
        if best:
            ax.axvline(best["rate"], color=f"C{k}", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("peak learning rate (muP base)")
    ax.set_ylabel("best val bits per byte (one seed)")
    beta = doc["analysis"].get("beta")
    ax.set_title(f"{doc['shape']}: best rate by training length" + (f" (beta {beta:.2f})" if beta else ""),
                 fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, help="a results JSON whose 'config' is the shape and settings")
    ap.add_argument("--grid", nargs="+", default=["290:0.5,1,1.5,2,3,4", "1096:0.25,0.5,1,2", "4382:0.25,0.5,1"],
                    metavar="ITERS:MULT,...", help="each length and the rate multiples it is trained at")
    ap.add_argument("--dataset", default="storyworld:version=2")
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "horizon_runs")
    ap.add_argument("--concurrent", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "horizon_rate.json")
    ap.add_argument("--replot", action="store_true")
    a = ap.parse_args()
    if not a.replot:
        config = json.loads(a.config.read_text())["config"]
        grid = [(int(it), float(m)) for g in a.grid for it, ms in [g.split(":")] for m in ms.split(",")]
        todo = list(grid)
        running: list[subprocess.Popen] = []
        while todo or running:
            running = [p for p in running if p.poll() is None]
            while todo and len(running) < a.concurrent:
                p = run(config, *todo.pop(0), a.work, a.dataset)
                if p is not None:
                    running.append(p)
            time.sleep(2)
        rows = []
        for it, m in grid:
            r = _result(a.work / name(it, m))
            if r is None:
                sys.exit(f"{name(it, m)} did not finish; see {a.work / name(it, m) / 'run.log'}")
            rows.append({"iters": it, "mult": m, "learning_rate": r["config"]["learning_rate"],
                         "best_val_bpb": r["best_val_bpb"], "best_val_bpb_se": r.get("best_val_bpb_se"),
                         "seed": r["config"]["seed"]})
        from slm_tune.tune.study_record import machine_info  # noqa: PLC0415

        cpu = machine_info()["cpu"]
        doc = {"command": " ".join(["python bench/horizon_rate.py", *sys.argv[1:]]), "machine": cpu,
               "date": time.strftime("%Y-%m-%d"), "shape": f"{config['n_layer']} x {config['n_embd']} "
               f"{config['parametrization']}", "config": config, "runs": rows, "analysis": analyse(rows)}
        a.out.write_text(json.dumps(doc, indent=1))
    doc = json.loads(a.out.read_text())
    plot(doc, a.out.with_suffix(".png"))
    print(json.dumps(doc["analysis"], indent=1))
    for r in doc["runs"]:
        print(f"{r['iters']:>6} x{r['mult']:<5g} rate {r['learning_rate']:.4g}  best val bpb {r['best_val_bpb']:.4f}")


if __name__ == "__main__":
    main()
