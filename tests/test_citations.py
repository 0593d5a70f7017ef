"""Every source citation on the site names a version, a file and a definition, and the source agrees.

The ``{kernel}`` and ``{glibc}`` roles (``pkeyspec/sphinxext/kernel.py``) are
collected from ``docs/**/*.md`` and, as ``:kernel:`` and ``:glibc:``, from the
docstrings of ``pkeyspec/`` that autodoc shows on ``docs/reference/api.md``.

* ``test_citation_names_version_file_and_definition`` (always): each parses.
* ``test_no_bare_source_paths``: a page names a kernel or glibc file only
  through a role, so that no citation escapes the check below.
* ``test_citation_holds_in_source`` (one per citation, after ``make sources``):
  the file exists in the tree of the cited release, and each cited name is
  defined there: a function, a macro, a struct, enum or enumerator, a
  variable, ``SYSCALL_DEFINEn(name)``, a row of a ``.tbl``; in a header a
  prototype counts too, and in documentation any occurrence of the word.
  Without the sources these tests are skipped ("run `make sources`"); under
  CI (``CI=true``, where ``.ci/run`` runs ``make sources`` first) they fail.
  The glibc manual is not in Debian's ``glibc-source``: its citations are
  skipped with that reason, checked by their format only.
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path

import pytest

from pkeyspec.sphinxext.kernel import PROJECTS, SYSCALL, CitationError, parse

ROOT = Path(__file__).resolve().parents[1]
# The same cache as conformance/run.py and conformance/sources.py.
CACHE = Path(os.environ.get("PKEYSPEC_CONFORMANCE_CACHE",
                            Path.home() / ".cache" / "pkeyspec-conformance"))
MANIFEST = CACHE / "sources" / "manifest.json"

#: Parts of a tree that Debian's source package does not carry, and why.
NOT_SHIPPED = {
    ("glibc", "manual/"): "Debian's glibc-source leaves out the glibc manual (GFDL)",
}

MARKDOWN_ROLE = re.compile(r"\{(kernel|glibc)\}`([^`]+)`")
RST_ROLE = re.compile(r":(kernel|glibc):`([^`]+)`")
#: A code span that names a source file without a role, e.g. `mm/mprotect.c`.
BARE_PATH = re.compile(
    r"(?<![}`:])`((?:arch|mm|kernel|fs|include|tools|Documentation|lib|security|sysdeps|manual)"
    r"/[^`\s]*)`")


def cited_files() -> list[Path]:
    """The pages, and the model's modules (not the extension that defines the roles)."""
    modules = [p for p in sorted(ROOT.glob("pkeyspec/**/*.py")) if "sphinxext" not in p.parts]
    return sorted(ROOT.glob("docs/**/*.md")) + modules


def collect() -> list[tuple[str, str, str]]:
    """(where, role, text) of every citation; where is ``file:line``."""
    found = []
    for path in cited_files():
        text = path.read_text(encoding="utf-8")
        pattern = MARKDOWN_ROLE if path.suffix == ".md" else RST_ROLE
        for m in pattern.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            found.append((f"{path.relative_to(ROOT)}:{line}", m.group(1), " ".join(m.group(2).split())))
    return found


CITATIONS = collect()


def test_citations_are_found():
    assert len(CITATIONS) > 200
    assert any(where.startswith("pkeyspec/") for where, _, _ in CITATIONS)


def test_citation_names_version_file_and_definition():
    bad = []
    for where, role, text in CITATIONS:
        try:
            parse(text, role)
        except CitationError as e:
            bad.append(f"{where}: {{{role}}}`{text}` {e}")
    assert not bad, "\n".join(bad)


def test_no_bare_source_paths():
    bare = []
    for path in sorted(ROOT.glob("docs/**/*.md")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            bare += [f"{path.relative_to(ROOT)}:{n}: `{m.group(1)}`" for m in BARE_PATH.finditer(line)]
    assert not bare, "cite these with {kernel} or {glibc}:\n" + "\n".join(bare)


# --- the check against the fetched sources -----------------------------------------------

@lru_cache(maxsize=None)
def manifest() -> dict | None:
    try:
        return json.loads(MANIFEST.read_text())
    except FileNotFoundError:
        return None


def tree_of(role: str, series: str, release: str) -> Path:
    """The source tree of ``release``; skips (fails under CI) when it was not fetched."""
    key = {"kernel": "linux", "glibc": "glibc"}[role]
    m = manifest()
    entry = (m or {}).get(key, {}).get(series)
    if entry is None:
        reason = f"{key} {series} sources not fetched: run `make sources` ({MANIFEST})"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    assert entry["release"] == release, (
        f"the fetched {key} {series} sources are {entry['release']}, the site cites {release}: "
        f"run `make sources`")
    tree = Path(entry["tree"])
    assert tree.is_dir(), f"{tree} (from {MANIFEST}) is gone: run `make sources`"
    return tree


@lru_cache(maxsize=None)
def read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def strip_comments(code: str) -> str:
    """C source without its comments (kept as blanks, so that lines stay where they were)."""
    return re.sub(r"/\*.*?\*/|//[^\n]*",
                  lambda m: re.sub(r"[^\n]", " ", m.group(0)), code, flags=re.S)


def _end_of_signature(code: str, paren: int) -> str:
    """What follows the parameter list opened at ``paren``: '{' (definition), ';' (declaration)."""
    depth = 0
    for i in range(paren, len(code)):
        c = code[i]
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                rest = re.search(r"[;{]", code[i + 1:])
                return rest.group(0) if rest else ""
    return ""


def defines(text: str, name: str, path: str, documentation: bool) -> bool:
    """Whether the file ``path`` with contents ``text`` defines ``name``."""
    if documentation:
        return name in text
    m = SYSCALL.fullmatch(name)
    if m:
        n = name[len("SYSCALL_DEFINE")]
        return re.search(rf"\b(COMPAT_)?SYSCALL_DEFINE{n}\(\s*{m.group(1)}\s*[,)]", text) is not None
    if path.endswith(".tbl"):
        return re.search(rf"^\d+\s+\S+\s+{name}\b", text, re.M) is not None
    if Path(path).name.startswith("Kconfig"):
        return re.search(rf"^\s*(menu)?config\s+{name}\b", text, re.M) is not None
    code = strip_comments(text)
    n = re.escape(name)
    simple = [
        rf"^[ \t]*#[ \t]*define[ \t]+{n}\b",  # macro
        rf"\b(struct|enum|union)\s+{n}\s*\{{",  # type
        rf"^\w*DEFINE\w*\(\s*{n}\b",  # DEFINE_IDTENTRY(name), DEFINE_STATIC_KEY_FALSE(name)
        rf"^[ \t]+{n}\s*(=[^=;]*)?,[ \t]*$",  # enumerator
        rf"^(?!extern\b)(?![ \t])[^;(=\n]*\b{n}\s*(\[[^\]]*\])?\s*(=|;)",  # variable
        rf"^typedef\b[^;]*\b{n}\s*;",  # typedef
    ]
    if any(re.search(p, code, re.M) for p in simple):
        return True
    header = path.endswith(".h")
    if header and re.search(rf"^extern\b[^;(]*\b{n}\s*(\[[^\]]*\])?\s*;", code, re.M):
        return True  # a variable's declaration
    for m in re.finditer(rf"^(?![ \t#])[^;{{}}\n]*?\b{n}\s*\(", code, re.M):
        end = _end_of_signature(code, m.end() - 1)
        if end == "{" or (header and end == ";"):
            return True
    return False


def occurs(text: str, name: str) -> bool:
    m = SYSCALL.fullmatch(name)
    return re.search(rf"\b{re.escape(m.group(1) if m else name)}\b", text) is not None


@pytest.mark.parametrize(("where", "role", "text"), CITATIONS,
                         ids=[f"{w} {t}" for w, _, t in CITATIONS])
def test_citation_holds_in_source(where, role, text):
    try:
        c = parse(text, role)
    except CitationError as e:
        pytest.fail(f"{where}: {e}")
    tree = tree_of(role, c.series, c.version)
    f = tree / c.path
    for (project, prefix), why in NOT_SHIPPED.items():
        if role == project and c.path.startswith(prefix) and not f.exists():
            pytest.skip(f"{why}: {c.path} is checked by its format only")
    assert f.is_file(), f"{where}: {c.path} does not exist in {c.project.name} {c.version}"
    content = read(f)
    missing = []
    for name in c.symbols:
        if not defines(content, name, c.path, c.is_documentation):
            how = "occurs in it but is not defined there" if occurs(content, name) else "is not in it"
            missing.append(f"{name} {how}")
    assert not missing, f"{where}: {c.project.name} {c.version} {c.path}: " + "; ".join(missing)
