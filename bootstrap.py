#!/usr/bin/env python
"""Set up slm-tune from nothing and run something in it: one command, any OS.

    python bootstrap.py                 set up, then run the quick study (the main job)
    python bootstrap.py test            set up, then run the test suite
    python bootstrap.py bench [--smoke] set up, then run the benchmark
    python bootstrap.py -- ARGS...      set up, then `python studies.py ARGS...`

Setup makes a virtual environment in .venv (once), installs torch==2.13.0 (the CPU build; an
unpinned torch would pull a CUDA build of several GB), then this project: with its test extras
(and Microsoft's mup) for `test`, without them otherwise (a study does not use them; `.ci/run`
runs the quick study in that lean environment before the tests). pip skips its bytecode compile
of every installed file; what a study imports is compiled after the installs (every installed package, in
parallel, for the tests). From nothing with an empty pip cache, the main job took 129, 119 and
113 s against 164, 138 and 145 s with pip's compile (three pairs, each pair back to back, nothing
else running, 2-core AMD EPYC Zen 4, 2026-12-07). A marker file skips the installs when nothing changed (an environment set
up for the tests serves a study too).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
TORCH = "torch==2.13.0"
# the tests' reference for muP (Microsoft's mup), without its dependencies: it asks for torchvision,
# whose PyPI build does not load beside torch's CPU build (and then breaks transformers' imports)
MUP = "mup==1.0.0"
# what a study imports at start: compiled to bytecode once after the installs (pip's own compile of
# every file of torch, ray and scipy costs more than the study; the rest compile on first use)
WARM = "import torch, ray.tune, pandas, matplotlib.pyplot, pyarrow, optuna, scipy.stats, tiktoken, studies, slm_tune.tune.trainable"


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def run(cmd: list[str], **kw) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def needs_install(marker: str, stamp: str, extras: bool) -> bool:
    """Whether the marker's record (the stamp, then "test" when the extras went in) falls short:
    another pyproject or pin, or the extras asked for and not installed."""
    have = marker.split()
    return have[:1] != [stamp] or (extras and "test" not in have[1:])


def setup(extras: bool) -> Path:
    """The environment's python, with the project installed (and its test extras when `extras`)."""
    py = venv_python()
    if not py.exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
    stamp = hashlib.sha256((TORCH + MUP + (ROOT / "pyproject.toml").read_text()).encode()).hexdigest()
    marker = VENV / ".slm-tune-installed"
    if needs_install(marker.read_text() if marker.exists() else "", stamp, extras):
        pip = [py, "-m", "pip", "install", "--quiet", "--no-compile"]
        run([*pip, "--upgrade", "pip"])
        run([*pip, TORCH])
        # torch pinned again: a dependency's torchvision would otherwise replace the CPU build with a newer CUDA one
        run([*pip, "-e", f"{ROOT}[test]" if extras else str(ROOT), TORCH])
        if extras:
            run([*pip, "--no-deps", MUP])
        compile_bytecode(py, everything=extras)
        marker.write_text(f"{stamp} test" if extras else stamp)
    return py


def compile_bytecode(py: Path, everything: bool) -> None:
    """Bytecode for what a study imports (written even where PYTHONDONTWRITEBYTECODE is set), or
    for every file in site-packages (the tests' many processes import far more) in parallel."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    if everything:
        site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              check=True, capture_output=True, text=True).stdout.strip()
        # not checked: a few packages ship files for other Python versions, which do not compile
        subprocess.run([str(py), "-m", "compileall", "-q", "-j", "0", site], stdout=subprocess.DEVNULL)
    run([py, "-c", WARM], cwd=ROOT, env=env)


def main(argv: list[str]) -> int:
    what = argv[0] if argv else "quick"
    py = setup(extras=what == "test")
    if what == "test":
        cmd = [py, "-m", "pytest", *argv[1:]]
    elif what == "bench":
        cmd = [py, str(ROOT / "bench" / "bench.py"), *argv[1:]]
    elif what == "--":
        cmd = [py, str(ROOT / "studies.py"), *argv[1:]]
    else:
        cmd = [py, str(ROOT / "studies.py"), *(argv or ["quick"])]
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run([str(c) for c in cmd], cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
