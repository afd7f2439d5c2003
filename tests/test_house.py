"""The house: the driver side loads no torch, the trial side no Ray, the command line's quick paths
no Ray; no import cycle; no function longer than a reader can hold in mind."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGES = ("slm_tune", "search_spaces", "analysis", "workflows")
MAX_FUNCTION_LINES = 60


def _loaded_after(code: str) -> set[str]:
    """Top-level modules loaded by running `code` in a fresh interpreter."""
    probe = f"import sys\n{code}\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return set(out.stdout.split())


def test_driver_side_loads_no_torch_or_datasets():
    loaded = _loaded_after("import slm_tune.tune.run, slm_tune.tune.callbacks.progress, "
                           "slm_tune.tune.callbacks.live_export, slm_tune.tune.callbacks.mlflow, analysis.export")
    assert "ray" in loaded
    assert not {"torch", "datasets"} & loaded


def test_trial_side_loads_no_ray():
    loaded = _loaded_after("import slm_tune.train, slm_tune.train.resume, slm_tune.train.board, "
                           "slm_tune.model.gpt, slm_tune.model.generation, slm_tune.data.cache")
    assert "torch" in loaded
    assert "ray" not in loaded


@pytest.mark.parametrize("argv", [["list"], ["details", "baseline"], ["--help"], ["run", "nope"],
                                  ["details", "baseline", "--set", "n_head=3"], ["search", "lr", "--metric", "x"]])
def test_quick_commands_load_no_ray(argv):
    loaded = _loaded_after(f"import studies\ntry:\n    studies.main({argv!r})\nexcept SystemExit:\n    pass")
    assert "ray" not in loaded and "torch" not in loaded


def _project_modules() -> dict[str, Path]:
    files = {"studies": ROOT / "studies.py"}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """The project's modules that `path` imports, anywhere in it (a function's import counts too);
    importing a.b.c imports its packages a and a.b as well."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            parts = t.split(".")
            found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & modules
    return found - {name}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        state[n] = 2
        stack.pop()
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_no_import_cycle():
    modules = _project_modules()
    graph = {name: _imports(path, name, set(modules)) for name, path in modules.items()}
    # a package importing its own modules (its __init__ re-exporting them) is not a cycle
    graph = {n: {m for m in deps if not m.startswith(n + ".")} for n, deps in graph.items()}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))
    layers = {n.split(".")[0]: set() for n in graph}
    for n, deps in graph.items():
        layers[n.split(".")[0]] |= {m.split(".")[0] for m in deps} - {n.split(".")[0]}
    assert _cycle(layers) is None, " -> ".join(_cycle(layers))  # studies -> analysis -> search_spaces -> slm_tune


def test_no_long_functions():
    long = []
    for path in [*_project_modules().values(), *(ROOT / "bench").glob("*.py"), *(ROOT / "docs").glob("*.py"),
                 ROOT / "bootstrap.py"]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "\n".join(long)


def test_no_silent_broad_except():
    silent = []
    for path in _project_modules().values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ExceptHandler) and (node.type is None or (
                    isinstance(node.type, ast.Name) and node.type.id in ("Exception", "BaseException"))):
                if all(isinstance(s, (ast.Pass, ast.Continue, ast.Return)) for s in node.body):
                    silent.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not silent, "broad excepts that hide a failure: " + ", ".join(silent)


@pytest.mark.parametrize("marker,extras,install", [
    ("", False, True), ("", True, True),              # nothing installed yet
    ("S", False, False), ("S", True, True),           # the study's set-up; the tests want their extras too
    ("S test", False, False), ("S test", True, False),  # the tests' set-up serves a study too
    ("OLD test", False, True), ("OLD test", True, True),  # pyproject or a pin changed since
])
def test_bootstrap_installs_when_its_marker_falls_short(marker, extras, install):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bootstrap", ROOT / "bootstrap.py")
    bootstrap = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bootstrap)
    assert bootstrap.needs_install(marker, "S", extras) is install
