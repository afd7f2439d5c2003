"""The version floors pyproject.toml declares hold for the features the code uses.

Only the newest versions are installed here, so a floor set too low would pass every other test
and break a user on an older version. Two checks keep the floors honest: every third-party
module the code imports is declared, and every feature that needs a newer version than a
package's first release is listed below with that version, found in the code by its own text
(adding `enable_gqa=` somewhere without raising torch's floor fails here)."""

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [*(ROOT / "slm_tune").rglob("*.py"), *(ROOT / "analysis").rglob("*.py"),
           *(ROOT / "search_spaces").rglob("*.py"), *(ROOT / "workflows").rglob("*.py"), ROOT / "studies.py",
           *(ROOT / "docs").glob("*.py")]
# tiktoken_ext: tiktoken's own; gen_reference: docs/'s, which docs/hooks.py imports
LOCAL = {"slm_tune", "analysis", "search_spaces", "workflows", "studies", "tiktoken_ext", "gen_reference"}

# (text in the code, distribution, the first version that has it, what it is)
FEATURES = [
    (r"enable_gqa=", "torch", "2.5", "scaled_dot_product_attention's enable_gqa"),
    (r"nn\.RMSNorm\(", "torch", "2.4", "torch.nn.RMSNorm"),
    (r"get_autocast_dtype\(", "torch", "2.4", "torch.get_autocast_dtype"),
    (r"\"rope_parameters\"", "transformers", "5.0", "config.rope_parameters (4.x reads rope_theta and ignores it)"),
    (r"\.confidence_interval\(", "scipy", "1.11", "ttest_ind(...).confidence_interval"),
    (r"^import tomllib", "python", "3.11", "tomllib"),
    (r"File\.generated\(", "mkdocs", "1.6", "mkdocs' File.generated (docs/hooks.py)"),
]


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-")


def _floors() -> dict[str, tuple[Version, str]]:
    """Each declared distribution's lowest allowed version anywhere (core or an extra), and where."""
    project = _project()
    floors = {"python": (_lowest(SpecifierSet(project["requires-python"])), "requires-python")}
    for group, deps in [("dependencies", project["dependencies"]), *project["optional-dependencies"].items()]:
        for req in map(Requirement, deps):
            low = _lowest(req.specifier)
            if _canonical(req.name) not in floors or low < floors[_canonical(req.name)][0]:
                floors[_canonical(req.name)] = (low, group)
    return floors


def _lowest(spec: SpecifierSet) -> Version:
    lows = [Version(s.version) for s in spec if s.operator in (">=", "==", "~=")]
    return max(lows) if lows else Version("0")


def _guarded(node: ast.Try) -> bool:
    """A try whose handlers catch ImportError: what it imports is optional."""
    names = {n.id for h in node.handlers if h.type is not None for n in ast.walk(h.type) if isinstance(n, ast.Name)}
    return bool(names & {"ImportError", "ModuleNotFoundError"})


def _module_imports(path: Path) -> set[str]:
    """Top-level names of every module this file imports (at any depth, but not in a try that
    handles ImportError)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    optional = {id(n) for t in ast.walk(tree) if isinstance(t, ast.Try) and _guarded(t) for n in ast.walk(t)}
    names = set()
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_every_imported_package_is_declared():
    floors = _floors()
    dists = packages_distributions()
    missing = {}
    for path in SOURCES:
        for name in _module_imports(path) - set(sys.stdlib_module_names) - LOCAL:
            declared = [d for d in dists.get(name, [name]) if _canonical(d) in floors]
            if not declared:
                missing[name] = path.relative_to(ROOT).as_posix()
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_each_feature_is_within_the_declared_floor():
    floors = _floors()
    text = {p: p.read_text(encoding="utf-8") for p in SOURCES}
    for pattern, dist, needs, what in FEATURES:
        users = [p.relative_to(ROOT).as_posix() for p, t in text.items() if re.search(pattern, t, re.M)]
        assert users, f"{what}: no longer used; drop its line from FEATURES"
        floor, group = floors[dist]
        assert floor >= Version(needs), f"{what} ({users[0]}) needs {dist}>={needs}; pyproject allows {floor} ({group})"
