"""Traceability: every guarantee the site states, and what checks it.

A *check* of a fact is an executed example that stands with it:

- a ``{doctest}`` block inside a ``{guarantee}`` directive for that ID, or
- a ``{doctest}`` block in the same section as a ``{fact}`` citation of it;

and, outside the pages, a race of the catalogue that lists the fact.

``{guarantee} ID`` states a guarantee: its statement is the directive's
body, its kind and sources are options, and the doctests inside it are its
checks. A stated guarantee without a check is a build warning, so the strict
build fails. ``{guarantee-index}`` renders every fact ID with its status.

A statement is *observed* when a conformance scenario that lists its fact
ran on a real kernel (the committed observations); every other statement
carries the marker "read from source, not run", and the index counts both.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

from .facts import facts_of
from .races import table

logger = logging.getLogger(__name__)

KINDS = ("guarantee", "non-guarantee", "errno", "race", "arch-diff", "version-diff")


class guarantee_node(nodes.General, nodes.Element):
    """A stated guarantee; rendered as an admonition-like box."""


class guarantee_index_node(nodes.General, nodes.Element):
    """Placeholder replaced by the index table once every page has been read."""


def is_doctest(node: nodes.Node) -> bool:
    return isinstance(node, nodes.literal_block) and node.get("testnodetype") == "doctest"


def _anchor(fact_id: str) -> str:
    return "guarantee-" + nodes.make_id(fact_id)


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


class Guarantee(SphinxDirective):
    required_arguments = 1
    has_content = True
    option_spec = {"kind": directives.unchanged_required, "source": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        fact_id = self.arguments[0]
        facts = facts_of(self.env)
        if fact_id not in facts:
            logger.warning("guarantee names unknown fact ID %r", fact_id, location=self.get_location())
        kind = self.options.get("kind", "guarantee")
        if kind not in KINDS:
            logger.warning("guarantee %s: kind must be one of %s", fact_id, ", ".join(KINDS),
                           location=self.get_location())
        node = guarantee_node(ids=[_anchor(fact_id)], fact_id=fact_id, kind=kind,
                              classes=["admonition", "pkeyspec-guarantee"])
        observed = observed_of(self.env).get(fact_id, {})
        node["observed"] = sorted(observed)
        title = nodes.paragraph(classes=["admonition-title"])
        title += nodes.literal(text=fact_id, classes=["fact"])
        title += nodes.Text(f" · {kind}")
        if observed:
            kernels = sorted({k for ks in observed.values() for k in ks})
            mark = nodes.inline(classes=["pkeyspec-observed"],
                                text="observed on " + ", ".join(kernels))
        else:
            mark = nodes.inline(classes=["pkeyspec-read-from-source"],
                                text="read from source, not run")
        title += nodes.Text(" · ")
        title += mark
        node += title
        self.state.nested_parse(self.content, self.content_offset, node)
        if self.options.get("source"):
            src = nodes.paragraph()
            src += nodes.Text("Source: ")
            inline, messages = self.state.inline_text(self.options["source"], self.lineno)
            src += inline
            node += src
            node += messages
        self.env.get_domain("std").note_hyperlink_target(
            _anchor(fact_id), self.env.docname, _anchor(fact_id), fact_id)
        return [node]


def _direct(section: nodes.Element):
    """The nodes of ``section`` that are not inside a nested section."""
    stack = list(section.children)
    while stack:
        node = stack.pop()
        if isinstance(node, nodes.section):
            continue
        yield node
        stack.extend(getattr(node, "children", ()))


def collect(app, doctree) -> None:
    """Record, for this page, which facts are checked where."""
    env = app.env
    stated = env.pkeyspec_stated
    checks = env.pkeyspec_checks
    for g in doctree.findall(guarantee_node):
        n = sum(1 for x in g.findall(is_doctest))
        stated[g["fact_id"]] = (env.docname, _anchor(g["fact_id"]), g["kind"], n,
                                bool(g.get("observed")))
        if n:
            checks[g["fact_id"]].append((env.docname, _anchor(g["fact_id"]), n))
    for section in doctree.findall(nodes.section):
        direct = list(_direct(section))
        n = sum(1 for x in direct if is_doctest(x))
        if not n:
            continue
        cited = {x.astext() for x in direct if isinstance(x, nodes.literal) and "fact" in x["classes"]}
        for fact_id in cited:
            checks[fact_id].append((env.docname, section["ids"][0] if section["ids"] else "", n))


def _init(app, env, docnames) -> None:
    for attr in ("pkeyspec_stated", "pkeyspec_checks"):
        if not hasattr(env, attr):
            setattr(env, attr, {} if attr == "pkeyspec_stated" else defaultdict(list))


def purge(app, env, docname) -> None:
    env.pkeyspec_stated = {k: v for k, v in env.pkeyspec_stated.items() if v[0] != docname}
    for k in list(env.pkeyspec_checks):
        env.pkeyspec_checks[k] = [c for c in env.pkeyspec_checks[k] if c[0] != docname]


def merge(app, env, docnames, other) -> None:
    env.pkeyspec_stated.update({k: v for k, v in other.pkeyspec_stated.items() if v[0] in docnames})
    for k, v in other.pkeyspec_checks.items():
        env.pkeyspec_checks[k].extend(c for c in v if c[0] in docnames)


def race_facts() -> dict[str, list[str]]:
    from ..races import catalogue
    out: dict[str, list[str]] = defaultdict(list)
    for race in catalogue().values():
        for f in race.facts:
            out[f].append(race.name)
    return out


def check_consistency(app, env) -> None:
    """Warn for a stated guarantee with no check, and for races citing unknown IDs."""
    races = race_facts()
    for fact_id, (docname, anchor, kind, n, _obs) in sorted(env.pkeyspec_stated.items()):
        if not n and not races.get(fact_id):
            logger.warning("guarantee %s is stated but nothing checks it (no doctest inside it "
                           "and no race lists it)", fact_id, location=docname)
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


def _status_table(app, fromdoc: str) -> nodes.table:
    env = app.env
    races = race_facts()
    labels = env.get_domain("std").labels
    observed = observed_of(env)
    conformance_doc = env.config.pkeyspec_conformance_page
    rows = []
    for fact_id, kind in facts_of(env).items():
        stated_cell = nodes.paragraph()
        stated = env.pkeyspec_stated.get(fact_id)
        if stated:
            stated_cell += _link(app, fromdoc, stated[0], stated[1], env.titles[stated[0]].astext())
        checks_cell = nodes.paragraph()
        by_doc: dict[str, int] = defaultdict(int)
        first_anchor = {}
        for docname, anchor, n in env.pkeyspec_checks.get(fact_id, []):
            by_doc[docname] += n
            first_anchor.setdefault(docname, anchor)
        for i, (docname, n) in enumerate(sorted(by_doc.items())):
            if i:
                checks_cell += nodes.Text("; ")
            checks_cell += _link(app, fromdoc, docname, first_anchor[docname],
                                 f"{env.titles[docname].astext()} ({n})")
        races_cell = nodes.paragraph()
        for i, name in enumerate(races.get(fact_id, [])):
            if i:
                races_cell += nodes.Text(", ")
            if name.lower() in labels:
                docname, anchor, _ = labels[name.lower()]
                races_cell += _link(app, fromdoc, docname, anchor, name)
            else:
                races_cell += nodes.Text(name)
        observed_cell = nodes.paragraph()
        scenarios = observed.get(fact_id, {})
        for i, name in enumerate(sorted(scenarios)):
            if i:
                observed_cell += nodes.Text(", ")
            if conformance_doc in env.all_docs:
                observed_cell += _link(app, fromdoc, conformance_doc, scenario_anchor(name), name)
            else:
                observed_cell += nodes.Text(name)
        if not scenarios:
            observed_cell += nodes.inline(classes=["pkeyspec-read-from-source"],
                                          text="read from source, not run")
        rows.append([nodes.paragraph("", "", nodes.literal(text=fact_id)),
                     nodes.paragraph(text=kind.lower()), stated_cell, checks_cell, races_cell,
                     observed_cell])
    return table(["ID", "kind", "stated", "executed examples", "races", "observed on real kernels"],
                 rows, classes=["guarantee-index"])


def fill_index(app, doctree, fromdoc) -> None:
    for node in list(doctree.findall(guarantee_index_node)):
        env = app.env
        facts = facts_of(env)
        executed = sum(1 for f in facts if env.pkeyspec_checks.get(f))
        in_races = set(race_facts())
        stated = len(env.pkeyspec_stated)
        stated_observed = sum(1 for v in env.pkeyspec_stated.values() if v[4])
        observed = observed_of(env)
        summary = nodes.paragraph(text=(
            f"{len(facts)} fact IDs: {executed} with executed examples on the site, "
            f"{len(in_races & set(facts))} demonstrated by a race, "
            f"{sum(1 for f in facts if f in observed)} observed on real kernels by a "
            f"conformance scenario, {stated} stated as "
            f"guarantees with the guarantee directive, "
            f"{sum(1 for f in facts if not env.pkeyspec_checks.get(f) and f not in in_races)} "
            f"with neither an example nor a race yet."))
        reading = nodes.paragraph(text=(
            f"Stated guarantees backed by an observation on a real kernel: {stated_observed} "
            f"of {stated}. Read from source, not run: {stated - stated_observed} (the model "
            f"executes them, no kernel has)."))
        node.replace_self([summary, reading, _status_table(app, fromdoc)])


def visit_guarantee(self, node):
    self.body.append(self.starttag(node, "div", CLASS="admonition pkeyspec-guarantee"))


def depart_guarantee(self, node):
    self.body.append("</div>\n")


def _skip(self, node):
    raise nodes.SkipNode


def setup(app):
    app.add_node(guarantee_node, html=(visit_guarantee, depart_guarantee),
                 latex=(lambda s, n: None, lambda s, n: None),
                 text=(lambda s, n: None, lambda s, n: None))
    app.add_node(guarantee_index_node, html=(_skip, None))
    # The page with the {conformance-table}: the index links scenarios to its rows.
    app.add_config_value("pkeyspec_conformance_page", "reference/conformance", "env")
    app.add_directive("guarantee", Guarantee)
    app.add_directive("guarantee-index", GuaranteeIndex)
    app.connect("env-before-read-docs", _init)
    app.connect("env-purge-doc", purge)
    app.connect("env-merge-info", merge)
    app.connect("doctree-read", collect)
    app.connect("env-check-consistency", check_consistency)
    app.connect("doctree-resolved", fill_index)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "env_version": 2}
