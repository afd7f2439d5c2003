"""MkDocs hooks: the pages the build makes rather than anyone writing them.

- the home page is README.md, and the benchmarks' index bench/README.md (one source each);
- the reference pages come from the code (docs/gen_reference.py, run in its own process);
- the benchmarks' figures are the PNGs the benches write into bench/, served as they are.

Every page is written with links relative to its own file in the repository (so they work on
GitHub too); `repo_link` maps them to the site's paths.
"""

from __future__ import annotations

import json
import posixpath
import re
import subprocess
import sys
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent

# pages made from a Markdown file outside docs/: site path -> the file in the repository
OUTSIDE = {"index.md": "README.md", "bench/index.md": "bench/README.md"}
LINK = re.compile(r"(\]\()([^)\s]+)(\))")


def source_of(src_uri: str) -> str:
    """The repository path a site page was written at."""
    return OUTSIDE.get(src_uri, f"docs/{src_uri}")


def site_path(repo_path: str) -> str | None:
    """Where a file of the repository is on the site, or None when the site does not have it."""
    inverse = {v: k for k, v in OUTSIDE.items()}
    if repo_path in inverse:
        return inverse[repo_path]
    if repo_path.startswith("docs/"):
        return repo_path.removeprefix("docs/")
    if repo_path.startswith("bench/") and repo_path.endswith(".png"):
        return repo_path
    return None


def repo_link(target: str, page_src: str) -> str:
    """A link written relative to the page's file in the repository, relative to its site path."""
    if re.match(r"^[a-z][a-z0-9+.-]*:|^#|^/", target):
        return target
    path, hash_, anchor = target.partition("#")
    repo_dir = posixpath.dirname(source_of(page_src))
    resolved = posixpath.normpath(posixpath.join(repo_dir, path))
    site = site_path(resolved)
    if site is None:
        return target
    return posixpath.relpath(site, posixpath.dirname(page_src) or ".") + hash_ + anchor


def rewrite_links(markdown: str, page_src: str) -> str:
    """Every Markdown link of a page, outside code, mapped from the repository to the site."""
    parts = re.split(r"(```.*?```|`[^`\n]*`)", markdown, flags=re.S)
    return "".join(part if i % 2 else LINK.sub(lambda m: m[1] + repo_link(m[2], page_src) + m[3], part)
                   for i, part in enumerate(parts))


def reference_pages() -> dict[str, str]:
    """docs/gen_reference.py's pages, from a fresh process (the code as it is now, not as a
    long-running `mkdocs serve` first imported it)."""
    out = subprocess.run([sys.executable, str(DOCS / "gen_reference.py")], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise PluginError(f"docs/gen_reference.py failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout)


def on_files(files: Files, config) -> Files:
    for site, repo in OUTSIDE.items():
        files.append(File.generated(config, site, content=(ROOT / repo).read_text(encoding="utf-8")))
    for site, content in reference_pages().items():
        files.append(File.generated(config, site, content=content))
    for png in sorted((ROOT / "bench").glob("*.png")):
        files.append(File.generated(config, f"bench/{png.name}", abs_src_path=str(png)))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    return rewrite_links(markdown, page.file.src_uri)
