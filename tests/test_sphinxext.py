"""The site's Sphinx extensions, built on tiny projects under tests/roots/.

The guarantee checks are what keep the site honest: a stated guarantee with
no executed check, or a citation of an unknown fact, must make the strict
build fail. These tests show each rule firing, and staying quiet when the
page is right.
"""

import pytest



def warnings_of(app) -> str:
    return app._warning.getvalue()


@pytest.mark.sphinx("html", testroot="guarantee-checked", freshenv=True)
def test_checked_guarantee_builds_clean_and_is_indexed(app, rootdir):
    app.build()
    assert warnings_of(app) == ""
    html = (app.outdir / "index.html").read_text()
    assert 'class="admonition pkeyspec-guarantee"' in html
    # The index counts the guarantee's own doctest and the section that cites the other fact.
    assert "2 with executed examples on the site" in html
    assert "1 stated as guarantees" in html


@pytest.mark.sphinx("html", testroot="guarantee-unchecked", freshenv=True)
def test_guarantee_without_a_check_is_a_warning(app):
    app.build()
    assert "guarantee SYS-FREE-KEY0 is stated but nothing checks it" in warnings_of(app)


@pytest.mark.sphinx("html", testroot="fact-unknown", freshenv=True)
def test_unknown_fact_id_is_a_warning(app):
    app.build()
    assert "unknown fact ID 'NO-SUCH-FACT'" in warnings_of(app)


@pytest.mark.sphinx("html", testroot="guarantee-checked", freshenv=True)
def test_extensions_are_parallel_safe(app):
    for name in ("pkeyspec.sphinxext.facts", "pkeyspec.sphinxext.races",
                 "pkeyspec.sphinxext.guarantees"):
        ext = app.extensions[name]
        assert ext.parallel_read_safe and ext.parallel_write_safe, name


@pytest.mark.sphinx("html", testroot="guarantee-observed", freshenv=True)
def test_statements_are_marked_observed_or_read_from_source(app):
    """A guarantee whose fact a scenario observed on a kernel says so; the other is marked
    "read from source, not run"; the index counts both and links the scenario's row."""
    app.build()
    assert warnings_of(app) == ""
    html = (app.outdir / "index.html").read_text()
    assert html.count('class="pkeyspec-observed">observed on 7.2.13<') == 1
    assert 'class="pkeyspec-read-from-source">read from source, not run<' in html
    assert "backed by an observation on a real kernel: 1 of 2. Read from source, not run: 1" in html
    assert 'href="#scenario-free-key0"' in html and 'id="scenario-free-key0"' in html
