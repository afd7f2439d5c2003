"""The benchmark's smoke version: it runs end to end and prints every figure."""

import subprocess
import sys

from conftest import ROOT


def test_bench_smoke():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "bench.py"), "--smoke", "--skip-study"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    for marker in ("matmul peak", "float32 reference", "fast path (default)", "speed-up", "quality", "generation",
                   "cached", "tokenization"):
        assert marker in out.stdout, marker


def _bench(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_horizon_rate_recovers_a_known_rate_law():
    """Losses made from LR*(T) = 0.3 T^-0.4 (Bjorck et al.'s form), quadratic in log rate around it:
    the bench's vertices find each best rate and its slope finds 0.4; a best rate at the grid's
    edge is said, and left out of the slope."""
    import math

    import pytest

    horizon = _bench("horizon_rate")
    rows = []
    for iters in (100, 400, 1600):
        best = 0.3 * iters ** -0.4
        for mult in (0.25, 0.5, 1, 2):
            rate = 0.05 * mult * (iters / 100) ** -0.4 * 1.3  # a grid that does not sit on the optimum
            rows.append({"iters": iters, "learning_rate": rate, "best_val_bpb": 1 + (math.log(rate / best)) ** 2})
    out = horizon.analyse(rows)
    for iters in (100, 400, 1600):
        assert out["best_rate"][str(iters)]["rate"] == pytest.approx(0.3 * iters ** -0.4, rel=1e-6)
    assert out["beta"] == pytest.approx(0.4, rel=1e-6) and out["beta_from"] == [100, 400, 1600]
    edge = horizon.best_rate([(0.01, 1.0), (0.02, 1.1), (0.04, 1.2)])
    assert edge == (0.01, "grid edge (the best rate may lie beyond it)")
    rows += [{"iters": 50, "learning_rate": r, "best_val_bpb": y} for r, y in ((0.01, 1.0), (0.02, 1.1), (0.04, 1.2))]
    out = horizon.analyse(rows)
    assert out["best_rate"]["50"]["how"].startswith("grid edge") and out["beta_from"] == [100, 400, 1600]
    assert out["beta"] == pytest.approx(0.4, rel=1e-6)


def test_build_bench_counts_the_seconds_any_trial_ran(tmp_path):
    """busy_seconds: the union of the trials' spans (end - time_since_restore, end), overlaps once."""
    import json

    build = _bench("build")
    spans = [(100, 160), (150, 200), (300, 310), (305, 308)]  # union: 100..200 and 300..310 = 110 s
    paths = []
    for i, (a, b) in enumerate(spans):
        p = tmp_path / f"t{i}" / "result.json"
        p.parent.mkdir()
        p.write_text(json.dumps({"timestamp": a + 1, "time_since_restore": 1}) + "\n"
                     + json.dumps({"timestamp": b, "time_since_restore": b - a}) + "\n")
        paths.append(p)
    assert build.busy_seconds(paths) == 110
