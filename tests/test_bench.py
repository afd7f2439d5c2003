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
