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
    app.setup_extension("pkeyspec.sphinxext.kernel")
    for name in ("pkeyspec.sphinxext.facts", "pkeyspec.sphinxext.races",
                 "pkeyspec.sphinxext.guarantees", "pkeyspec.sphinxext.kernel"):
        ext = app.extensions[name]
        assert ext.parallel_read_safe and ext.parallel_write_safe, name


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
