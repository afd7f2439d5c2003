"""The docs: the site builds with no broken link or missing page or image, every command written in
them parses with the CLI's own parser, and the reference pages' generator reads the code right."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "docs"))

import gen_reference  # noqa: E402
import studies  # noqa: E402

# The programs a written command may start with, and the placeholders a command may use in place
# of a value (each stands for an example that must parse in its place).
PROGRAMS = (("python", "studies.py"), (".venv/bin/python", "studies.py"), ("slm-tune",))
PLACEHOLDERS = {"NAME": "baseline"}


def _doc_files():
    return [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _command_texts(markdown: str) -> list[str]:
    """Every line of a fenced block, and every inline code span (which may wrap across lines)."""
    texts = []
    fences = re.compile(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```", re.S | re.M)
    for block in fences.findall(markdown):
        texts += block.splitlines()
    prose = fences.sub("", markdown)
    texts += [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose)]
    return texts


def _argv(text: str) -> list[str] | None:
    """The arguments after the program, or None when the text is not a command of slm-tune's."""
    try:
        words = shlex.split(text, comments=True)
    except ValueError as e:  # a quote left open: a command of ours is caught, not skipped
        if any(" ".join(p) in text for p in PROGRAMS):
            raise AssertionError(f"cannot read {text!r} as a command: {e}") from e
        return None
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # PYTHONPATH=. python studies.py ...
        words = words[1:]
    for program in PROGRAMS:
        if tuple(words[:len(program)]) == program:
            return words[len(program):]
    return None


def _variants(argv: list[str]) -> list[list[str]]:
    """`--scheduler fifo|asha` stands for each choice; a placeholder for its example."""
    out = [[]]
    for word in argv:
        choices = word.split("|") if "|" in word and not word.startswith("-") else [word]
        out = [prefix + [PLACEHOLDERS.get(c, c)] for prefix in out for c in choices]
    return out


def written_commands() -> list[tuple[str, str]]:
    found = []
    for path in _doc_files():
        for text in _command_texts(path.read_text(encoding="utf-8")):
            argv = _argv(text)
            if argv not in (None, [], ["..."]):  # `slm-tune`, `slm-tune ...`: the program named, no command
                found.append((f"{path.relative_to(ROOT)}: {text.strip()}", argv))
    return found


def _failures(parser, argv: list[str]) -> list[str]:
    """The variants of a command the parser refuses, with its message, or whose names and settings
    the CLI would refuse (_unknown_names)."""
    bad = []
    for variant in _variants(argv):
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                args = parser.parse_args(variant)
            bad += [f"{' '.join(variant)}: {why}" for why in (["no command"] if not args.command else _unknown_names(args))]
        except SystemExit:
            bad.append(f"{' '.join(variant)}: {err.getvalue().strip()}")
    return bad


def _unknown_names(args) -> list[str]:
    """What the parser takes as free strings and the CLI checks later: every `--set KEY=VALUE` (by
    slm_tune.config.parse_overrides, as the CLI does), and the experiment or search a command names
    when no experiments file or space of the reader's own is given (placeholders in capitals pass)."""
    from search_spaces import search_files
    from slm_tune.config import EXPERIMENT_CONFIGS, parse_overrides
    from slm_tune.errors import UserError

    out = []
    try:
        parse_overrides([o for o in getattr(args, "overrides", None) or [] if not o.split("=")[-1].isupper()])
    except UserError as e:
        out.append(str(e))
    names = getattr(args, "name", None)
    names = [names] if isinstance(names, str) else names or []  # `run` takes several
    if getattr(args, "experiments_file", None) or getattr(args, "space", None):
        return out
    known = set(search_files()) if args.command in ("search", "build") else set(EXPERIMENT_CONFIGS)
    for name in names:
        if not name.isupper() and args.command in ("run", "details", "search", "build") and name not in known:
            out.append(f"{name!r} is not a named {'search' if args.command in ('search', 'build') else 'experiment'}")
    return out


def strict_parser():
    """studies.py's parser, refusing abbreviated options (`--num-sample` for --num-samples): the docs
    spell every option out."""
    parser = studies.build_parser()
    parsers = [parser, *(p for _, _, p in gen_reference.subcommands(parser))]
    for p in parsers:
        p.allow_abbrev = False
    return parser


def test_every_written_command_parses():
    commands = written_commands()
    assert len(commands) > 60  # the README's and the guide's commands were found
    parser = strict_parser()
    bad = [f"{where}\n    {failure}" for where, argv in commands for failure in _failures(parser, argv)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("text", ["python studies.py search lr --num-sample 16",
                                  "python studies.py search learning_rates --num-samples 16",
                                  "python studies.py run basline",
                                  "python studies.py vocab --set widht=3",
                                  "slm-tune search lr --scheduler fifo|bohb",
                                  "python studies.py quick --output-dir",
                                  "python studies.py vocab --max-iters 100 --set"])
def test_a_drifted_command_is_caught(text):
    """What drift looks like (a renamed option, a choice that is gone, a value left out) fails."""
    assert _failures(strict_parser(), _argv(text))


def _mkdocs_build(site, config=None) -> subprocess.CompletedProcess:
    # not --quiet: it hides the warnings, and --strict then counts none and passes
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)] + (["-f", str(config)] if config else [])
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


def test_mkdocs_build_strict(tmp_path):
    """The site builds with --strict: a broken link or anchor, a page missing from the nav or an
    image that is not there fails it."""
    out = _mkdocs_build(tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert (tmp_path / "reference" / "settings" / "index.html").is_file()
    assert (tmp_path / "bench" / "tabular_replay_100.png").is_file()
    home = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert 'href="getting-started/"' in home  # README's docs/ links point into the site


def test_mkdocs_build_strict_fails_on_a_missing_image(tmp_path):
    """The same command and validation settings on a page whose image is not there: it fails."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# x\n\n![a plot](plot.png)\n", encoding="utf-8")
    import yaml

    ours = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    config = {k: ours[k] for k in ("site_name", "theme", "markdown_extensions", "validation")}
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump({**config, "docs_dir": str(tmp_path / "docs")}),
                                         encoding="utf-8")
    out = _mkdocs_build(tmp_path / "site", tmp_path / "mkdocs.yml")
    assert out.returncode != 0 and "plot.png" in out.stdout + out.stderr


def test_every_setting_has_a_meaning():
    from slm_tune.config import FIELD_TYPES, ExperimentConfig

    docs = gen_reference.field_docs(ExperimentConfig)
    assert [d.name for d in docs] == list(FIELD_TYPES)
    assert not [d.name for d in docs if not d.meaning], "settings without a comment saying what they mean"
    assert {d.group for d in docs} >= {"model", "evaluation", "data", "run"}


def test_validation_rules_are_read_from_the_code():
    from slm_tune.config import FIELD_TYPES

    rules = gen_reference.validation_rules()
    assert {r.key for r in rules} <= set(FIELD_TYPES)
    found = {(r.key, r.text, r.when) for r in rules}
    assert ("dropout", "must be in [0, 1)", "") in found
    assert ("vocab_size", "the GPT-2 tokenizer gives 257 to 50,257 tokens", "") in found
    assert ("norm", "must be one of layernorm, rmsnorm", "") in found
    assert ("n_embd", "must be divisible by n_head", "") in found
    assert ("dropout", "must be a finite number", "") in found  # floats only
    assert ("n_layer", "must be a finite number", "") not in found
    rope = [r for r in rules if r.key == "n_head" and "rope" in r.text]
    assert rope and rope[0].when == "pos == 'rope'"


def test_every_rule_in_the_code_is_on_the_settings_page():
    import ast
    import inspect

    from slm_tune import config

    rules = gen_reference.validation_rules()
    tree = ast.parse(inspect.getsource(config))
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("_validate")]
    nodes = [n for f in functions for n in ast.walk(f) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "rule"]
    calls = {n.lineno for n in nodes}
    assert len(functions) == 2 and len(calls) > 30
    assert calls == {r.line for r in rules}
    # every rule whose message the code writes as a plain string is on the page, found here from the
    # code's syntax tree, not from the generator's reading of it
    page = " ".join(gen_reference.settings_page().split())
    literal = [n.args[2].value for n in nodes if len(n.args) > 2 and isinstance(n.args[2], ast.Constant)]
    assert len(literal) > 20
    assert [m for m in literal if " ".join(m.split()) not in page] == []


def test_reference_pages_load_neither_torch_nor_ray():
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'docs')!r}); import gen_reference\n"
            "pages = {k: f() for k, f in gen_reference.pages().items()}\n"
            "assert all(len(p) > 1000 for p in pages.values())\n"
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert not {"torch", "ray"} & set(out.stdout.split())


@pytest.mark.parametrize("target, page, expected", [
    ("docs/getting-started.md", "index.md", "getting-started.md"),
    ("docs/assets/quick_comparison.png", "index.md", "assets/quick_comparison.png"),
    ("bench/README.md", "index.md", "bench/index.md"),
    ("../docs/bench/tabular.md#live-on-the-same-space", "bench/index.md", "tabular.md#live-on-the-same-space"),
    ("../../bench/search.png", "bench/search.md", "search.png"),
    ("../bench/pareto_bench.png", "trade-offs.md", "bench/pareto_bench.png"),
    ("reference/cli.md#search", "search.md", "reference/cli.md#search"),
    ("https://example.org/x.md", "index.md", "https://example.org/x.md"),
    ("../slm_tune/config.py", "search.md", "../slm_tune/config.py"),  # not on the site: left for --strict to report
])
def test_links_written_for_the_repository_point_into_the_site(target, page, expected):
    import hooks

    assert hooks.repo_link(target, page) == expected


def test_readme_is_one_screen_with_what_a_newcomer_needs():
    """Issue 42's README: at most 150 lines; the plot, the two commands, the files the main job
    writes, and links into the guide, the reference and the benchmarks."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    assert "docs/assets/quick_comparison.png" in text and (ROOT / "docs/assets/quick_comparison.png").is_file()
    assert "python bootstrap.py        #" in text and "python bootstrap.py test" in text
    assert "experiments/experiment_comparison.csv" in text
    links = set(re.findall(r"\]\(([^)#]+)", text))
    assert {"docs/getting-started.md", "docs/reference/cli.md", "bench/README.md"} <= links
    assert all((ROOT / link).exists() for link in links if not link.startswith(("http", "docs/reference/")))
