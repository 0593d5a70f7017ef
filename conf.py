"""Sphinx configuration for the pkeyspec site.

conf.py sits at the repository root and the sources are in docs/:

    sphinx-build -c . docs _build/html

so paths such as html_static_path are relative to the root, while
exclude_patterns and root_doc are relative to docs/.  See `make help`.
"""

import doctest
import os
import sys
from pathlib import Path

# The package is installed with `pip install -e .` (make does it); the path
# entry is only a fallback for a bare sphinx-build from a checkout.
sys.path.insert(0, str(Path(__file__).parent.resolve()))

import pkeyspec  # noqa: E402

# -- Project -----------------------------------------------------------------

project = "pkeyspec"
author = "the pkeyspec authors"
copyright = "the pkeyspec authors"
release = pkeyspec.__version__
version = release

# -- General -----------------------------------------------------------------

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.extlinks",
    "sphinx_copybutton",
    "sphinx_design",
    "pkeyspec.sphinxext.facts",
    "pkeyspec.sphinxext.conformance",
    "pkeyspec.sphinxext.races",
    "pkeyspec.sphinxext.pictures",
    "pkeyspec.sphinxext.guarantees",
    "pkeyspec.sphinxext.kernel",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", ".venv", "_data"]  # relative to docs/

# Every cross-reference must resolve (sphinx-build -n does the same).
nitpicky = True

# -- MyST --------------------------------------------------------------------

# colon_fence: ::: fences, needed by sphinx-design (tabs, grids, dropdowns).
# deflist: definition lists for glossary-like pages.
myst_enable_extensions = ["colon_fence", "deflist"]
# Headings of levels 1-3 get anchors, so [text](page.md#a-heading) resolves.
myst_heading_anchors = 3

# -- Autodoc (docs/reference/api.md) ----------------------------------------

# Type hints go into each entry's description, where a reader looks for them,
# instead of making signatures long.
autodoc_typehints = "description"
# Members in source order: each module reads top-down like the kernel file it models.
autodoc_member_order = "bysource"
# Targets no local inventory can resolve (there is no intersphinx: builds run
# offline).  Only names that come from the model's own annotations and
# docstrings belong here; a misspelt pkeyspec name must still fail the build.
nitpick_ignore = [
    ("py:mod", "errno"),  # pkeyspec.uapi's docstring names the stdlib modules
    ("py:mod", "mmap"),  # it checks the constants against
    ("py:mod", "signal"),
    ("py:class", "collections.abc.Callable"),  # signals.Sigaction.handler
    ("py:class", "mm_.Mm"),  # tasks.Process.mm: tasks.py imports mm as mm_
]

# -- Doctest -----------------------------------------------------------------

# Examples in the pages are ```{doctest}``` fences.  `make test` runs them with
# Sybil (docs/conftest.py), and tests/test_site.py runs this builder too; both
# use this setup and these flags (test_doctest_flags_agree checks it).
doctest_global_setup = "from pkeyspec import *"
# Sphinx's default is DONT_ACCEPT_TRUE_FOR_1 | ELLIPSIS | IGNORE_EXCEPTION_DETAIL.
# We drop IGNORE_EXCEPTION_DETAIL on purpose: an exception's message (the
# errno, the faulting address) is part of what an example specifies.
doctest_default_flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

# -- Links -------------------------------------------------------------------

# No intersphinx: builds run offline.  Man pages are plain external links
# through the {man} role:
#
#   {man}`2/pkey_alloc.2`                     -> https://man7.org/linux/man-pages/man2/pkey_alloc.2.html
#   {man}`pkey_alloc(2) <2/pkey_alloc.2>`     -> the same link, shown as "pkey_alloc(2)"
#
# The man argument is "<section>/<page>.<section>", i.e. the path under
# man-pages/man without ".html".
#
# Kernel and glibc sources are cited with {kernel} and {glibc}
# (pkeyspec/sphinxext/kernel.py): a release series, a file and the functions
# or macros the sentence relies on, e.g. {kernel}`7.2 mm/mprotect.c do_mprotect_pkey`.
# The link opens that file in the exact stable release (KERNEL_VERSIONS there);
# `make sources` and tests/test_citations.py check each citation against it.
extlinks = {
    "man": ("https://man7.org/linux/man-pages/man%s.html", "%s"),
}

# -- HTML --------------------------------------------------------------------

html_theme = "furo"
html_title = f"pkeyspec {release}"
# Footer: "Last updated on <build date> (pkeyspec <version>)"; SOURCE_DATE_EPOCH pins the date.
html_last_updated_fmt = f"%Y-%m-%d (pkeyspec {release})"
# _templates/page.html gives 404.html a <base> (relative to the conf dir, like html_static_path).
templates_path = ["_templates"]
# The published root, e.g. https://owner.github.io/pkeyspec/ (the Pages workflow sets it).
# Unset, every link stays relative and 404.html is right only for missing top-level paths.
html_baseurl = os.environ.get("PKEYSPEC_BASE_URL", "")

# Copy buttons copy only the code of an example: the lines that start with a
# prompt (">>> ", "... ", "$ "), without the prompt.  Expected output and
# expected tracebacks are left out; a block without prompts is copied whole.
# (Excluding the Pygments classes ".gp, .go" instead would still copy the
# "Traceback ..." lines of an example that expects an exception.)
copybutton_exclude = ".linenos"
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True
copybutton_only_copy_prompt_lines = True
copybutton_copy_empty_lines = False

# Our stylesheet for the model's pictures and race tables (relative to the conf dir).
html_static_path = ["_static"]
