"""Traceability: every guarantee the site states, and what proves it.

``{guarantee} ID`` states a fact of the catalogue: its statement is the
directive's body, its kind and sources are options. What proves it:

- a *property*: a Hypothesis test in ``tests/properties/`` decorated
  ``@proves("ID")`` that asserts the statement over generated inputs (found by
  :mod:`.properties` and shown, collapsed, under the statement); for a fact of
  kind ``race``, a race of the catalogue that lists it (an exhaustive
  exploration) does the same;
- the doctests inside the directive are its examples: they show, they do not
  prove, and each must state its expected output.

The strict build fails (a warning) when a stated guarantee has no property,
when an ID is stated twice, when a doctest inside a guarantee expects no
output, and when a fact the catalogue marks as not modelled is stated.

A statement is *observed* when a conformance scenario that lists its fact
ran on a real kernel (the committed observations); every other statement
carries the marker "read from source, not run", and the index counts both.
``{guarantee-index}`` renders every fact with its statement, property,
examples, races and observations; every ``{fact}`` citation links to its row.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

from .facts import catalogue_of, facts_of
from .properties import properties_in
from .races import table

logger = logging.getLogger(__name__)

KINDS = ("guarantee", "non-guarantee", "errno", "race", "arch-diff", "version-diff")


class guarantee_node(nodes.General, nodes.Element):
    """A stated guarantee; rendered as an admonition-like box."""


class property_node(nodes.General, nodes.Element):
    """A property's source, collapsed under its guarantee (``<details>``)."""


class guarantee_index_node(nodes.General, nodes.Element):
    """Placeholder replaced by the index table once every page has been read."""


def is_doctest(node: nodes.Node) -> bool:
    return isinstance(node, nodes.literal_block) and node.get("testnodetype") == "doctest"


def expects_output(doctest: nodes.Node) -> bool:
    """Does the example state an expected output (a line that is not a prompt)?"""
    return any(line.strip() and not line.startswith((">>>", "..."))
               for line in doctest.astext().splitlines())


def _anchor(fact_id: str) -> str:
    return "guarantee-" + nodes.make_id(fact_id)


def fact_anchor(fact_id: str) -> str:
    """The id of a fact's row in the guarantee index."""
    return "fact-" + nodes.make_id(fact_id)


def scenario_anchor(name: str) -> str:
    """The id of a scenario's row on the conformance page (see sphinxext/conformance.py)."""
    return "scenario-" + nodes.make_id(name)


_OBSERVED: dict[tuple, dict] = {}


def observed_of(env) -> dict[str, dict[str, list[str]]]:
    """Fact ID -> scenario -> kernels, from the committed observations (empty without them)."""
    rel = getattr(env.config, "pkeyspec_conformance_dir", None)
    if not rel:
        return {}
    base = (Path(env.srcdir) / rel).resolve()
    files = sorted(base.glob("scenarios/*.scn")) + sorted(base.glob("observations/*.jsonl"))
    key = tuple((str(f), f.stat().st_mtime_ns) for f in files)
    if key not in _OBSERVED:
        from .. import conformance as conf
        scenarios = conf.load_scenarios(base / "scenarios")
        _OBSERVED.clear()
        _OBSERVED[key] = conf.observed_facts(
            scenarios, conf.observation_files(base / "observations"))
    for f in files:
        env.note_dependency(str(f))
    return _OBSERVED[key]


def properties_of(env) -> dict:
    """Fact ID -> its properties (``pkeyspec_properties_dir``, relative to the sources)."""
    base = (Path(env.srcdir) / env.config.pkeyspec_properties_dir).resolve()
    for f in base.glob("test_*.py"):
        env.note_dependency(str(f))
    return properties_in(base)


def not_modelled(env, fact_id: str) -> str | None:
    """The catalogue's reason when it marks the fact as not modelled, else None."""
    fact = catalogue_of(env).get(fact_id)
    return fact.model if fact is not None and not fact.modelled else None


class Guarantee(SphinxDirective):
    required_arguments = 1
    has_content = True
    option_spec = {"kind": directives.unchanged_required, "source": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        fact_id = self.arguments[0]
        where = self.get_location()
        if fact_id not in facts_of(self.env):
            logger.warning("guarantee names unknown fact ID %r", fact_id, location=where)
        reason = not_modelled(self.env, fact_id)
        if reason:
            logger.warning("guarantee %s is stated, but the catalogue says it is %s: "
                           "the model cannot check it", fact_id, reason, location=where)
        kind = self.options.get("kind", "guarantee")
        if kind not in KINDS:
            logger.warning("guarantee %s: kind must be one of %s", fact_id, ", ".join(KINDS),
                           location=where)
        observed = observed_of(self.env).get(fact_id, {})
        props = properties_of(self.env).get(fact_id, [])
        node = guarantee_node(ids=[_anchor(fact_id)], fact_id=fact_id, kind=kind,
                              observed=sorted(observed), properties=[p.where for p in props],
                              classes=["admonition", "pkeyspec-guarantee"])
        title = nodes.paragraph(classes=["admonition-title"])
        title += nodes.literal(text=fact_id, classes=["fact"])
        title += nodes.Text(f" · {kind} · ")
        if observed:
            from ..conformance import label_order
            kernels = sorted({k for ks in observed.values() for k in ks}, key=label_order)
            title += nodes.inline(classes=["pkeyspec-observed"],
                                  text="observed on " + ", ".join(kernels))
        else:
            title += nodes.inline(classes=["pkeyspec-read-from-source"],
                                  text="read from source, not run")
        node += title
        self.state.nested_parse(self.content, self.content_offset, node)
        for example in node.findall(is_doctest):
            if not expects_output(example):
                logger.warning("guarantee %s: a doctest inside it states no expected output, "
                               "so it shows nothing", fact_id, location=where)
        if self.options.get("source"):
            src = nodes.paragraph()
            src += nodes.Text("Source: ")
            inline, messages = self.state.inline_text(self.options["source"], self.lineno)
            src += inline
            node += src
            node += messages
        for prop in props:
            details = property_node(summary=f"Property {prop.name} ({prop.where.split('::')[0]})")
            block = nodes.literal_block(prop.source, prop.source, language="python")
            details += block
            node += details
        self.env.get_domain("std").note_hyperlink_target(
            _anchor(fact_id), self.env.docname, _anchor(fact_id), fact_id)
        return [node]


def _direct(section: nodes.Element):
    """The nodes of ``section`` outside nested sections and guarantees (each counted once)."""
    stack = list(section.children)
    while stack:
        node = stack.pop()
        if isinstance(node, (nodes.section, guarantee_node)):
            continue
        yield node
        stack.extend(getattr(node, "children", ()))


def _statement(g: nodes.Element) -> str:
    """The first paragraph of a guarantee's body: its statement, for the index."""
    for child in g.children[1:]:
        if isinstance(child, nodes.paragraph):
            text = " ".join(child.astext().split())
            return text if len(text) <= 320 else text[:317].rsplit(" ", 1)[0] + " …"
    return ""


def collect(app, doctree) -> None:
    """Record, for this page, which facts are stated, and which examples stand with them."""
    env = app.env
    for g in doctree.findall(guarantee_node):
        n = sum(1 for x in g.findall(is_doctest))
        env.pkeyspec_stated[g["fact_id"]].append(
            (env.docname, _anchor(g["fact_id"]), g["kind"], n, bool(g["observed"]),
             tuple(g["properties"]), _statement(g)))
        if n:
            env.pkeyspec_checks[g["fact_id"]].append((env.docname, _anchor(g["fact_id"]), n))
    for section in doctree.findall(nodes.section):
        direct = list(_direct(section))
        n = sum(1 for x in direct if is_doctest(x))
        if not n:
            continue
        cited = {x.astext() for x in direct if isinstance(x, nodes.literal) and "fact" in x["classes"]}
        for fact_id in cited:
            if not not_modelled(env, fact_id):
                env.pkeyspec_checks[fact_id].append(
                    (env.docname, section["ids"][0] if section["ids"] else "", n))
    for _ in doctree.findall(guarantee_index_node):
        env.pkeyspec_index_doc = env.docname


def _init(app, env, docnames) -> None:
    for attr in ("pkeyspec_stated", "pkeyspec_checks"):
        if not isinstance(getattr(env, attr, None), defaultdict):
            setattr(env, attr, defaultdict(list))
    if not hasattr(env, "pkeyspec_index_doc"):
        env.pkeyspec_index_doc = None


def purge(app, env, docname) -> None:
    for attr in ("pkeyspec_stated", "pkeyspec_checks"):
        table_ = getattr(env, attr, {})
        for k in list(table_):
            table_[k] = [c for c in table_[k] if c[0] != docname]
    if getattr(env, "pkeyspec_index_doc", None) == docname:
        env.pkeyspec_index_doc = None


def merge(app, env, docnames, other) -> None:
    for attr in ("pkeyspec_stated", "pkeyspec_checks"):
        for k, v in getattr(other, attr).items():
            getattr(env, attr)[k].extend(c for c in v if c[0] in docnames)
    if other.pkeyspec_index_doc in docnames:
        env.pkeyspec_index_doc = other.pkeyspec_index_doc


def race_facts() -> dict[str, list[str]]:
    from ..races import catalogue
    out: dict[str, list[str]] = defaultdict(list)
    for race in catalogue().values():
        for f in race.facts:
            out[f].append(race.name)
    return out


def check_consistency(app, env) -> None:
    """Warn for a guarantee stated twice or without a property, and for races citing unknown IDs."""
    races = race_facts()
    for fact_id, statements in sorted(env.pkeyspec_stated.items()):
        if not statements:
            continue
        if len(statements) > 1:
            logger.warning("guarantee %s is stated %d times (%s): state a fact once and cite it "
                           "elsewhere", fact_id, len(statements),
                           ", ".join(s[0] for s in statements), location=statements[1][0])
        docname, _anchor_, kind, _n, _obs, props, _text = statements[0]
        if kind == "race" and not props and not races.get(fact_id):
            logger.warning("guarantee %s (a race) is stated, but no race of the catalogue "
                           "lists it and no property proves it", fact_id, location=docname)
        elif kind != "race" and not props and env.config.pkeyspec_require_properties:
            logger.warning("guarantee %s is stated but no property proves it (a test decorated "
                           "@proves(%r) in %s)", fact_id, fact_id,
                           env.config.pkeyspec_properties_dir, location=docname)
    for fact_id, names in sorted(races.items()):
        if fact_id not in facts_of(env):
            logger.warning("race(s) %s cite unknown fact ID %r", ", ".join(names), fact_id)


class GuaranteeIndex(SphinxDirective):
    def run(self) -> list[nodes.Node]:
        return [guarantee_index_node()]


def _link(app, fromdoc: str, docname: str, anchor: str, text: str) -> nodes.Node:
    ref = nodes.reference("", "", internal=True,
                          refuri=app.builder.get_relative_uri(fromdoc, docname) + "#" + anchor)
    ref += nodes.Text(text)
    return ref


def _joined(cell: nodes.Element, items) -> None:
    for i, item in enumerate(items):
        if i:
            cell += nodes.Text(", ")
        cell += item


def _status_table(app, fromdoc: str) -> nodes.table:
    env = app.env
    races = race_facts()
    labels = env.get_domain("std").labels
    observed = observed_of(env)
    catalogue = catalogue_of(env)
    conformance_doc = env.config.pkeyspec_conformance_page
    rows = []
    for fact_id, kind in facts_of(env).items():
        fact = catalogue.get(fact_id)
        stated = env.pkeyspec_stated.get(fact_id) or []
        id_cell = nodes.paragraph(ids=[fact_anchor(fact_id)])
        id_cell += nodes.literal(text=fact_id)
        id_cell += nodes.Text(f" {kind.lower()}")
        statement = nodes.paragraph()
        text = stated[0][6] if stated else (fact.statement if fact else "")
        statement += nodes.Text(text + " ")
        if stated:
            statement += _link(app, fromdoc, stated[0][0], stated[0][1],
                               "(stated on " + env.titles[stated[0][0]].astext() + ")")
        if fact is not None and not fact.modelled:
            statement += nodes.inline(classes=["pkeyspec-not-modelled"], text=f" [{fact.model}]")
        if fact is not None and fact.source:
            statement += nodes.inline(classes=["pkeyspec-fact-source"],
                                      text=f" Source: {fact.source}.")
        checks = nodes.paragraph()
        parts: list[nodes.Node] = []
        for name in stated[0][5] if stated else ():
            parts.append(nodes.literal(text=name.split("::")[1]))
        by_doc: dict[str, int] = defaultdict(int)
        first_anchor = {}
        for docname, anchor, n in env.pkeyspec_checks.get(fact_id, []):
            by_doc[docname] += n
            first_anchor.setdefault(docname, anchor)
        for docname, n in sorted(by_doc.items()):
            parts.append(_link(app, fromdoc, docname, first_anchor[docname],
                               f"{env.titles[docname].astext()} ({n})"))
        for name in races.get(fact_id, []):
            if name.lower() in labels:
                docname, anchor, _ = labels[name.lower()]
                parts.append(_link(app, fromdoc, docname, anchor, name))
            else:
                parts.append(nodes.Text(name))
        _joined(checks, parts)
        observed_cell = nodes.paragraph()
        scenarios = observed.get(fact_id, {})
        _joined(observed_cell, [
            _link(app, fromdoc, conformance_doc, scenario_anchor(name), name)
            if conformance_doc in env.all_docs else nodes.Text(name)
            for name in sorted(scenarios)])
        if not scenarios:
            observed_cell += nodes.inline(classes=["pkeyspec-read-from-source"],
                                          text="read from source, not run")
        rows.append([id_cell, statement, checks, observed_cell])
    return table(["fact", "statement", "property · examples · races", "observed on real kernels"],
                 rows, classes=["guarantee-index"])


def fill_index(app, doctree, fromdoc) -> None:
    for node in list(doctree.findall(guarantee_index_node)):
        env = app.env
        facts = facts_of(env)
        catalogue = catalogue_of(env)
        modelled = [f for f in facts if f not in catalogue or catalogue[f].modelled]
        executed = sum(1 for f in modelled if env.pkeyspec_checks.get(f))
        in_races = set(race_facts()) & set(facts)
        stated = {f: s[0] for f, s in env.pkeyspec_stated.items() if s}
        with_property = sum(1 for s in stated.values() if s[5])
        stated_observed = sum(1 for s in stated.values() if s[4])
        observed = observed_of(env)
        summary = nodes.paragraph(text=(
            f"{len(facts)} fact IDs, {len(modelled)} of them modelled. "
            f"{len(stated)} stated as guarantees on the pages; {with_property} of those are "
            f"proved by a property over generated inputs, and "
            f"{sum(1 for f, s in stated.items() if s[2] == 'race' and f in in_races)} races "
            f"by exhaustive exploration. {executed} modelled facts have executed examples on "
            f"the site, {len(in_races)} are exercised by a race, and "
            f"{sum(1 for f in facts if f in observed)} are observed on real kernels by a "
            f"conformance scenario."))
        reading = nodes.paragraph(text=(
            f"Stated guarantees backed by an observation on a real kernel: {stated_observed} "
            f"of {len(stated)}. Read from source, not run: {len(stated) - stated_observed} (the "
            f"model executes them, no kernel has)."))
        node.replace_self([summary, reading, _status_table(app, fromdoc)])


def link_facts(app, doctree, fromdoc) -> None:
    """Every ``{fact}`` citation becomes a link to its row of the guarantee index."""
    index = app.env.pkeyspec_index_doc
    if not index or not hasattr(app.builder, "get_relative_uri"):
        return
    uri = app.builder.get_relative_uri(fromdoc, index)
    for lit in list(doctree.findall(nodes.literal)):
        if "fact" in lit["classes"] and not isinstance(lit.parent, nodes.reference):
            ref = nodes.reference("", "", internal=True,
                                  refuri=uri + "#" + fact_anchor(lit.astext()),
                                  classes=["fact-link"])
            lit.replace_self(ref)
            ref += lit


def visit_guarantee(self, node):
    self.body.append(self.starttag(node, "div", CLASS="admonition pkeyspec-guarantee"))


def depart_guarantee(self, node):
    self.body.append("</div>\n")


def visit_property(self, node):
    self.body.append('<details class="pkeyspec-property"><summary>'
                     + self.encode(node["summary"]) + "</summary>\n")


def depart_property(self, node):
    self.body.append("</details>\n")


def _skip(self, node):
    raise nodes.SkipNode


def _nothing(self, node):
    pass


def setup(app):
    app.add_node(guarantee_node, html=(visit_guarantee, depart_guarantee),
                 latex=(_nothing, _nothing), text=(_nothing, _nothing))
    app.add_node(property_node, html=(visit_property, depart_property),
                 latex=(_nothing, _nothing), text=(_nothing, _nothing))
    app.add_node(guarantee_index_node, html=(_skip, None))
    # The page with the {conformance-table}: the index links scenarios to its rows.
    app.add_config_value("pkeyspec_conformance_page", "reference/conformance", "env")
    # Where the properties are, relative to the source directory (docs/).
    app.add_config_value("pkeyspec_properties_dir", "../tests/properties", "env")
    # A stated guarantee without a property is a warning (an error in the strict build).
    app.add_config_value("pkeyspec_require_properties", True, "env")
    app.add_directive("guarantee", Guarantee)
    app.add_directive("guarantee-index", GuaranteeIndex)
    app.connect("env-before-read-docs", _init)
    app.connect("env-purge-doc", purge)
    app.connect("env-merge-info", merge)
    app.connect("doctree-read", collect)
    app.connect("env-check-consistency", check_consistency)
    app.connect("doctree-resolved", fill_index)
    app.connect("doctree-resolved", link_facts)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "env_version": 3}
