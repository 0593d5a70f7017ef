"""Run the ```{doctest}``` fences of docs/**/*.md under pytest, with Sybil.

Each fence becomes one pytest item named after its file and line.  All the
fences of one page share a namespace, which starts with
``from pkeyspec import *``, like ``doctest_global_setup`` in conf.py.  Fences
with ``:hide:`` run too (they are hidden setup).

Only ```{doctest}``` fences execute, here and in Sphinx's doctest builder.
```python fences and bare ">>>" lines are not run by either.  So that the two
runners cannot disagree silently, this file refuses what Sybil would skip but
Sphinx would honour:

- a group name (```{doctest} mygroup```): Sybil has one namespace per page;
- the options ``:skipif:`` and ``:pyversion:``;
- ```{testsetup}```, ```{testcode}```, ```{testoutput}``` and ```{testcleanup}```
  fences: write a ```{doctest}``` with ``:hide:`` instead.

``:options: +FLAG -FLAG`` on a fence and ``# doctest: +FLAG`` on a line both
work, as in Sphinx.
"""

import doctest

from sybil import Sybil
from sybil.parsers.myst import DocTestDirectiveParser
from sybil.parsers.myst.lexers import DirectiveLexer

# Keep equal to doctest_default_flags in conf.py and doctest_optionflags in
# pyproject.toml (tests/test_site.py::test_doctest_flags_agree checks it).
DOCTEST_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

# Options of Sphinx's doctest directive that need nothing from us: "hide" only
# changes the HTML, the trim options only change how flags are displayed.
DISPLAY_OPTIONS = {"hide", "trim-doctest-flags", "no-trim-doctest-flags"}


def parse_options(text, where):
    """Turn ":options: +ELLIPSIS, -NORMALIZE_WHITESPACE" into {flag: bool}."""
    options = {}
    for word in text.replace(",", " ").split():
        sign, name = word[:1], word[1:]
        if sign not in ("+", "-") or name not in doctest.OPTIONFLAGS_BY_NAME:
            raise ValueError(f"{where}: bad doctest option {word!r}")
        options[doctest.OPTIONFLAGS_BY_NAME[name]] = sign == "+"
    return options


class MystDocTestParser(DocTestDirectiveParser):
    """Sybil's MyST doctest parser, plus :options: and the refusals above."""

    def __init__(self):
        super().__init__(optionflags=DOCTEST_FLAGS)

    def __call__(self, document):
        for lexed in self.lexer(document):
            line = document.text.count("\n", 0, lexed.start) + 1
            where = f"{document.path}:{line}"
            if lexed.lexemes["arguments"].strip():
                raise ValueError(f"{where}: doctest groups are not supported")
            options = dict(lexed.lexemes["options"])
            extra = {}
            if "options" in options:
                extra = parse_options(options.pop("options"), where)
            unsupported = set(options) - DISPLAY_OPTIONS
            if unsupported:
                raise ValueError(f"{where}: unsupported doctest option(s) {sorted(unsupported)}")
            source = lexed.lexemes["source"]
            for region in self.string_parser(source, document.path):
                region.parsed.options = {**extra, **region.parsed.options}
                region.adjust(lexed, source)
                yield region


def refuse_test_directives(document):
    """Refuse the Sphinx test directives that Sybil would silently skip."""
    lexer = DirectiveLexer("testsetup|testcleanup|testcode|testoutput")
    for lexed in lexer(document):
        line = document.text.count("\n", 0, lexed.start) + 1
        raise ValueError(
            f"{document.path}:{line}: {{{lexed.lexemes['directive']}}} is not run by "
            "`make test`; use a {doctest} fence (with :hide: for setup)"
        )
    return []


def setup(namespace):
    exec("from pkeyspec import *", namespace)


pytest_collect_file = Sybil(
    parsers=[MystDocTestParser(), refuse_test_directives],
    patterns=["*.md"],
    setup=setup,
).pytest()
