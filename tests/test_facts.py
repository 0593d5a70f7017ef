"""The fact catalogue, docs/_data/facts.tsv, is well formed and agrees with the pages.

Every line is ``ID KIND MODEL STATEMENT SOURCE``, tab-separated. MODEL says
whether pkeyspec/ executes the behaviour the fact states; a fact the site
states as a guarantee (``::::{guarantee} ID``) should be one the model runs,
and the few that are not are listed below with the reason.
"""

import re
from pathlib import Path

import pytest

from pkeyspec.sphinxext.facts import COLUMNS, KINDS, Fact, load_catalogue, load_fact_ids, parse_line

ROOT = Path(__file__).resolve().parent.parent
FACTS = ROOT / "docs" / "_data" / "facts.tsv"
MODEL = re.compile(r"modelled|modelled; \S.*|not modelled: \S.*")

#: Facts stated with the {guarantee} directive that the model does not execute, and why.
GUARANTEES_NOT_MODELLED: dict[str, str] = {}


def fact_lines() -> list[tuple[int, str]]:
    lines = FACTS.read_text(encoding="utf-8").splitlines()
    return [(n, line) for n, line in enumerate(lines, 1) if line.strip() and not line.startswith("#")]


def stated_guarantees() -> dict[str, list[str]]:
    """Fact ID -> the pages that state it with the {guarantee} directive."""
    found: dict[str, list[str]] = {}
    for page in sorted((ROOT / "docs").glob("**/*.md")):
        for fact_id in re.findall(r"^:{3,}\{guarantee\} (\S+)", page.read_text(encoding="utf-8"), re.M):
            found.setdefault(fact_id, []).append(str(page.relative_to(ROOT)))
    return found


def test_header_describes_the_five_columns():
    header = [line for line in FACTS.read_text(encoding="utf-8").splitlines() if line.startswith("#")]
    assert header, "the file starts with # comment lines"
    assert any(all(c.upper() in line for c in COLUMNS) for line in header)


def test_every_line_has_five_tab_separated_columns():
    bad = [(n, line.count("\t") + 1) for n, line in fact_lines() if len(line.split("\t")) != 5]
    assert bad == [], "lines with a column count other than 5 (line, count)"


def test_no_column_is_empty_or_padded():
    bad = [(n, i) for n, line in fact_lines() for i, cell in enumerate(line.split("\t"))
           if not cell or cell != cell.strip()]
    assert bad == []


def test_ids_are_unique():
    ids = [line.split("\t")[0] for _, line in fact_lines()]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
    assert all(re.fullmatch(r"[A-Z0-9][A-Z0-9_-]*", i) for i in ids)


def test_kinds_are_known():
    assert {f.kind for f in load_catalogue(FACTS).values()} <= set(KINDS)


def test_model_column_is_modelled_or_says_why_not():
    bad = {f.id: f.model for f in load_catalogue(FACTS).values() if not MODEL.fullmatch(f.model)}
    assert bad == {}


def test_statements_are_sentences():
    bad = [f.id for f in load_catalogue(FACTS).values()
           if not f.statement or not f.statement.endswith(".")
           or not (f.statement[0].isalnum() or f.statement.startswith(("`", "/", "\"")))]
    assert bad == []


def test_sources_are_given():
    assert [f.id for f in load_catalogue(FACTS).values() if not f.source] == []


def test_facts_of_other_architectures_are_not_modelled():
    """The model is x86: nothing about arm64 POE or powerpc keys runs in it."""
    other = [f for f in load_catalogue(FACTS).values()
             if re.search(r"(^|-)(ARM64|AARCH64|PPC)(-|$)", f.id)]
    assert len(other) >= 20
    assert [f.id for f in other if f.modelled] == []


def test_every_stated_guarantee_is_modelled():
    catalogue = load_catalogue(FACTS)
    stated = stated_guarantees()
    assert len(stated) > 80
    unknown = sorted(set(stated) - set(catalogue))
    assert unknown == [], "guarantees stated for IDs that are not in the catalogue"
    not_modelled = {i: catalogue[i].model for i in stated if not catalogue[i].modelled}
    assert set(not_modelled) == set(GUARANTEES_NOT_MODELLED), not_modelled


def test_loaders_agree():
    catalogue = load_catalogue(FACTS)
    assert load_fact_ids(FACTS) == {i: f.kind for i, f in catalogue.items()}
    assert list(load_fact_ids(FACTS)) == [line.split("\t")[0] for _, line in fact_lines()]
    assert all(f.modelled == (not f.model.startswith("not ")) for f in catalogue.values())


def test_parse_line():
    fact = parse_line("X-1\tERRNO\tmodelled; not the POWER half\tIt fails.\tmm/x.c")
    assert fact == Fact("X-1", "ERRNO", "modelled; not the POWER half", "It fails.", "mm/x.c", True)
    assert not parse_line("X-2\tRACE\tnot modelled: POWER\tIt races.\tmail").modelled
    with pytest.raises(ValueError, match="5 tab-separated columns"):
        parse_line("X-3\tRACE\tmodelled\tIt races.")


def test_a_duplicate_id_is_refused(tmp_path):
    path = tmp_path / "facts.tsv"
    line = "X-1\tERRNO\tmodelled\tIt fails.\tmm/x.c\n"
    path.write_text("# header\n" + line + line, encoding="utf-8")
    with pytest.raises(ValueError, match="twice"):
        load_catalogue(path)
