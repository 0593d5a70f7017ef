"""The ``{kernel}`` and ``{glibc}`` roles: cite a source file at a version, with what it defines.

A citation is three parts separated by spaces: the version, the file, and the
functions (or macros, or other definitions) the sentence relies on::

    {kernel}`7.2 mm/mprotect.c do_mprotect_pkey`
    {kernel}`6.1 mm/mmap.c do_mmap mmap_region`
    {kernel}`7.2 mm/mprotect.c SYSCALL_DEFINE2(pkey_alloc)`
    {kernel}`7.2 include/uapi/asm-generic/mman-common.h PKEY_DISABLE_ACCESS`
    {kernel}`7.2 Documentation/core-api/protection-keys.rst`
    {glibc}`2.36 sysdeps/unix/sysv/linux/x86/pkey_set.c pkey_set`

In reStructuredText (the docstrings that autodoc shows) the same role is
written ``:kernel:`7.2 mm/mprotect.c do_mprotect_pkey```.

The version is a series the project's conformance harness boots (``6.1``,
``6.12``, ``7.2``); :data:`KERNEL_VERSIONS` maps each to the exact stable
release whose tree the link opens, and ``make sources`` fetches the Debian
source package of that release, against which ``tests/test_citations.py``
checks every citation.  A definition is an identifier, or
``SYSCALL_DEFINEn(name)`` for a system call.  Only documentation
(``Documentation/`` in the kernel, ``manual/`` in glibc) may be cited without
one; there a definition may be any word of the text, such as ``init_pkru=``.

A citation that names no version, an unknown version, or no definition where
one is required is a warning, so the strict build (``-W``) fails.  The link
shows the series, the file and the definitions; its title names the exact
release.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

from docutils import nodes
from sphinx.util import logging

logger = logging.getLogger(__name__)

#: The kernel series the site cites, each mapped to the exact stable release:
#: the Debian packages the conformance harness boots (conformance/run.py).
#: ``make sources`` fetches ``linux-source-<series>`` at this release.
KERNEL_VERSIONS = {
    "6.1": "6.1.192",
    "6.12": "6.12.118",
    "7.2": "7.2.13",
}

#: The glibc releases the site cites: 2.36, which the conformance runner is
#: statically linked with (Debian bookworm), and 2.43 (Debian sid) for code
#: that 2.36 does not have yet (aarch64's POE).  ``make sources`` fetches
#: Debian's ``glibc-source`` of each.
GLIBC_VERSIONS = {
    "2.36": "2.36",
    "2.43": "2.43",
}


@dataclass(frozen=True)
class Project:
    """What one role cites: its versions, where its files are read, which need no definition."""

    role: str
    name: str
    versions: dict[str, str]
    url: str  # format string with {path} and {version}
    docs_prefix: str  # files under it may be cited without a definition


KERNEL = Project(
    role="kernel", name="Linux", versions=KERNEL_VERSIONS,
    url="https://git.kernel.org/pub/scm/linux/kernel/git/stable/linux.git/tree/{path}?h=v{version}",
    docs_prefix="Documentation/")
GLIBC = Project(
    role="glibc", name="glibc", versions=GLIBC_VERSIONS,
    url="https://sourceware.org/git/?p=glibc.git;a=blob;f={path};hb=glibc-{version}",
    docs_prefix="manual/")
PROJECTS = {p.role: p for p in (KERNEL, GLIBC)}

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SYSCALL = re.compile(r"SYSCALL_DEFINE[0-6]\(([a-z0-9_]+)\)")
VERSION_LIKE = re.compile(r"v?\d+(\.\d+)+")
PATH = re.compile(r"[A-Za-z0-9_.+-]+(/[A-Za-z0-9_.+-]+)*")


class CitationError(ValueError):
    """A citation that does not say version, file and definition."""


@dataclass(frozen=True)
class Citation:
    project: Project
    series: str
    path: str
    symbols: tuple[str, ...]

    @property
    def version(self) -> str:
        """The exact release, e.g. ``6.12.118`` for the series ``6.12``."""
        return self.project.versions[self.series]

    @property
    def is_documentation(self) -> bool:
        return self.path.startswith(self.project.docs_prefix)

    @property
    def url(self) -> str:
        return self.project.url.format(path=quote(self.path), version=self.version)

    @property
    def title(self) -> str:
        what = f": {', '.join(self.symbols)}" if self.symbols else ""
        return f"{self.project.name} {self.version}, {self.path}{what}"


def parse(text: str, role: str = "kernel") -> Citation:
    """The citation ``text`` of the role ``role``; :class:`CitationError` says what is wrong.

    >>> c = parse("6.12 mm/mprotect.c do_mprotect_pkey SYSCALL_DEFINE1(pkey_free)")
    >>> c.version, c.path, c.symbols
    ('6.12.118', 'mm/mprotect.c', ('do_mprotect_pkey', 'SYSCALL_DEFINE1(pkey_free)'))
    >>> parse("mm/mprotect.c do_mprotect_pkey")
    Traceback (most recent call last):
    ...
    pkeyspec.sphinxext.kernel.CitationError: names no version (write e.g. '7.2 mm/mprotect.c ...'; versions: 6.1, 6.12, 7.2)
    """
    project = PROJECTS[role]
    known = ", ".join(project.versions)
    words = text.split()
    if not words:
        raise CitationError("is empty")
    series, *rest = words
    if not VERSION_LIKE.fullmatch(series):
        raise CitationError(f"names no version (write e.g. '{next(reversed(project.versions))} "
                            f"{series} ...'; versions: {known})")
    if series not in project.versions:
        raise CitationError(f"names version {series!r}, which is not one the site cites "
                            f"(versions: {known}; see KERNEL_VERSIONS in {__name__})")
    if not rest:
        raise CitationError("names a version but no file")
    path, *symbols = rest
    if not PATH.fullmatch(path) or path.startswith(("/", ".")) or "/../" in path:
        raise CitationError(f"has {path!r} where the file should be (a path in the source tree)")
    citation = Citation(project, series, path, tuple(symbols))
    if not citation.is_documentation:
        if not symbols:
            raise CitationError(f"names no function or macro of {path} (write e.g. "
                                f"'{series} {path} do_something'; only {project.docs_prefix}"
                                f" may be cited whole)")
        for s in symbols:
            if not (IDENTIFIER.fullmatch(s) or SYSCALL.fullmatch(s)):
                raise CitationError(f"has {s!r} where a function or macro name should be "
                                    f"(an identifier, or SYSCALL_DEFINEn(name))")
    return citation


def make_role(role: str):
    def source_role(name, rawtext, text, lineno, inliner, options=None, content=()):
        try:
            citation = parse(text, role)
        except CitationError as e:
            env = inliner.document.settings.env
            logger.warning("{%s} citation %r %s", role, text, e,
                           location=(env.docname, lineno), type="pkeyspec", subtype=role)
            return [nodes.literal(rawtext, text)], []
        ref = nodes.reference(rawtext, "", refuri=citation.url, reftitle=citation.title,
                              classes=["source-citation"])
        ref += nodes.inline("", citation.series, classes=["source-version"])
        ref += nodes.Text(" ")
        ref += nodes.literal("", citation.path)
        out: list[nodes.Node] = [ref]
        for i, symbol in enumerate(citation.symbols):
            out.append(nodes.Text(", " if i else " "))
            out.append(nodes.literal("", symbol))
        return out, []
    return source_role


def setup(app):
    for role in PROJECTS:
        app.add_role(role, make_role(role))
    return {"parallel_read_safe": True, "parallel_write_safe": True}
