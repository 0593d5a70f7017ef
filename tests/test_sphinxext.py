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
    assert "2 modelled facts have executed examples on the site" in html
    assert "1 stated as guarantees on the pages; 1 of those are proved by a property" in html
    # The property is shown under the statement, and the fact citation links to its index row.
    assert '<details class="pkeyspec-property"><summary>Property test_key0_can_be_freed' in html
    assert 'href="#fact-sys-key0-preallocated"' in html and 'id="fact-sys-key0-preallocated"' in html


# The false guarantees a sceptical reviewer wrote: each one must fail the strict build.
FALSE_GUARANTEES = {
    "false-one-plus-one": "guarantee SYS-FREE-KEY0 is stated but no property proves it",
    "guarantee-no-output": "guarantee SYS-FREE-KEY0: a doctest inside it states no expected output",
    "guarantee-unrelated": "guarantee SYS-FREE-KEY0 is stated but no property proves it",
    "guarantee-twice": "guarantee SYS-FREE-KEY0 is stated 2 times",
    "guarantee-race-only": "guarantee SYS-SERIALIZED is stated but no property proves it",
    "guarantee-not-modelled": "guarantee ARM64-KEYS is stated, but the catalogue says it is "
                              "not modelled: arm64 POE is not in the model",
}


@pytest.mark.parametrize("root", sorted(FALSE_GUARANTEES))
def test_false_guarantee_fails_the_build(make_app, rootdir, tmp_path, root):
    """A false guarantee "checked" by 1 + 1, a doctest with no expected output, an unrelated
    doctest beside the fact, an ID stated twice, a guarantee whose ID only a race lists, and a
    fact the catalogue marks as not modelled: each is a warning (so -W fails the build)."""
    import shutil
    src = tmp_path / root
    shutil.copytree(rootdir / f"test-{root}", src)
    app = make_app("html", srcdir=src, freshenv=True)
    app.build()
    assert FALSE_GUARANTEES[root] in warnings_of(app)


@pytest.mark.sphinx("html", testroot="fact-unknown", freshenv=True)
def test_unknown_fact_id_is_a_warning(app):
    app.build()
    assert "unknown fact ID 'NO-SUCH-FACT'" in warnings_of(app)


@pytest.mark.sphinx("html", testroot="guarantee-checked", freshenv=True)
def test_extensions_are_parallel_safe(app):
    app.setup_extension("pkeyspec.sphinxext.kernel")
    for name in ("pkeyspec.sphinxext.facts", "pkeyspec.sphinxext.races",
                 "pkeyspec.sphinxext.guarantees", "pkeyspec.sphinxext.kernel"):
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


@pytest.mark.sphinx("html", testroot="kernel-citation", freshenv=True)
def test_kernel_citation_links_the_cited_release(app):
    app.build()
    assert warnings_of(app) == ""
    html = (app.outdir / "index.html").read_text()
    stable = "https://git.kernel.org/pub/scm/linux/kernel/git/stable/linux.git/tree/"
    # The link opens the exact release of the series, never master; the text shows the series.
    assert f'href="{stable}mm/mprotect.c?h=v6.12.118"' in html
    assert f'href="{stable}mm/mprotect.c?h=v7.2.13"' in html
    assert f'href="{stable}include/uapi/asm-generic/mman-common.h?h=v6.1.192"' in html
    assert "torvalds" not in html
    assert '<span class="source-version">6.12</span>' in html
    assert 'title="Linux 6.12.118, mm/mprotect.c: do_mprotect_pkey"' in html
    assert '<code class="docutils literal notranslate"><span class="pre">SYSCALL_DEFINE1(pkey_free)</span></code>' in html
    assert ('href="https://sourceware.org/git/?p=glibc.git;a=blob;'
            'f=sysdeps/unix/sysv/linux/x86/pkey_set.c;hb=glibc-2.36"') in html


@pytest.mark.sphinx("html", testroot="kernel-citation-unversioned", freshenv=True)
def test_kernel_citation_without_version_or_function_is_a_warning(app):
    app.build()
    warnings = warnings_of(app)
    assert "{kernel} citation 'mm/mprotect.c do_mprotect_pkey' names no version" in warnings
    assert "'5.15 mm/mprotect.c do_mprotect_pkey' names version '5.15', which is not one" in warnings
    assert "'7.2 mm/mprotect.c' names no function or macro of mm/mprotect.c" in warnings
    assert "has '(the' where a function or macro name should be" in warnings
    assert warnings.count("WARNING") == 4


@pytest.mark.sphinx("html", testroot="kernel-citation-unversioned", freshenv=True,
                    warningiserror=True)
def test_kernel_citation_without_version_fails_the_strict_build(app):
    app.build()
    assert app.statuscode == 1
