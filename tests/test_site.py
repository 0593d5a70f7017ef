"""Build the site the way `make html` and `make doctest` do, inside pytest.

Both tests are marked ``site``: ``pytest -m site`` runs only them,
``pytest -m "not site"`` skips them.  `make test` runs them.
"""

import doctest
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def sphinx_build(builder, outdir):
    """Run a strict sphinx-build with this interpreter; fail on any warning."""
    command = [
        sys.executable, "-m", "sphinx",
        "-W", "-n", "-T", "-E", "-j", "auto",
        "-b", builder,
        "-c", str(ROOT), str(ROOT / "docs"), str(outdir),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0 or result.stderr.strip():
        pytest.fail(
            f"sphinx-build -b {builder} failed (exit {result.returncode}):\n"
            f"--- stderr ---\n{result.stderr}\n--- stdout ---\n{result.stdout}",
            pytrace=False,
        )
    return result


@pytest.mark.site
def test_html_build_is_clean(tmp_path):
    sphinx_build("html", tmp_path / "html")
    assert (tmp_path / "html" / "index.html").is_file()


@pytest.mark.site
def test_sphinx_doctest_builder_passes(tmp_path):
    result = sphinx_build("doctest", tmp_path / "doctest")
    assert "0 failures in tests" in result.stdout, result.stdout


def test_doctest_flags_agree(request):
    """Sybil, Sphinx and --doctest-modules compare output with the same flags."""
    sybil_flags = runpy.run_path(str(ROOT / "docs" / "conftest.py"))["DOCTEST_FLAGS"]
    sphinx_flags = runpy.run_path(str(ROOT / "conf.py"))["doctest_default_flags"]
    pytest_flags = 0
    for name in request.config.getini("doctest_optionflags"):
        pytest_flags |= doctest.OPTIONFLAGS_BY_NAME[name]
    assert sybil_flags == sphinx_flags == pytest_flags
