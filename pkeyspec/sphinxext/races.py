"""Render races from the catalogue, with verdicts computed at build time.

``{race-index}`` renders a table of every race: name, question, stated and
computed result. ``{race-family} NAME`` renders every race of one family:
its question, its threads side by side, the ``exists`` clause, the stated
and the computed result (with the Observation line), the reachable final
states, and a witness interleaving for each outcome. A race whose computed
result differs from the stated one is a build warning, so the strict build
fails. The role ``{race-ref}`NAME``` links to a race.
"""

from __future__ import annotations

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx import addnodes
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

from ..explore import point_of_no_return
from ..pictures import timeline_svg
from ..races import Race, catalogue
from .pictures import picture_nodes

logger = logging.getLogger(__name__)


def race_id(name: str) -> str:
    """The HTML id of a race's section: 'race-' plus the name with '+' as '-'."""
    return nodes.make_id("race-" + name.replace("+", "-"))


def race_link(name: str) -> addnodes.pending_xref:
    """A cross-reference to a race's section, resolved by Sphinx like {ref}."""
    ref = addnodes.pending_xref("", refdomain="std", reftype="ref", reftarget=name.lower(),
                                refexplicit=True, refwarn=True)
    ref += nodes.literal(text=name)
    return ref


def race_ref_role(name, rawtext, text, lineno, inliner, options=None, content=()):
    """``{race-ref}`NAME```: a link to the race called NAME."""
    if text not in catalogue():
        msg = inliner.reporter.warning(f"unknown race {text!r}", line=lineno)
        return [nodes.literal(rawtext, text)], [msg]
    return [race_link(text)], []


def _para(*children) -> nodes.paragraph:
    p = nodes.paragraph()
    for c in children:
        p += nodes.Text(c) if isinstance(c, str) else c
    return p


def table(headers: list[str], rows: list[list], classes=()) -> nodes.table:
    """A docutils table; a cell is a node, or a value shown as code, or empty."""
    result = nodes.table(classes=list(classes))
    group = nodes.tgroup(cols=len(headers))
    result += group
    for _ in headers:
        group += nodes.colspec(colwidth=1)
    head = nodes.thead()
    row = nodes.row()
    for h in headers:
        row += nodes.entry("", nodes.paragraph(text=h))
    head += row
    group += head
    body = nodes.tbody()
    for cells in rows:
        row = nodes.row()
        for c in cells:
            entry = nodes.entry()
            if isinstance(c, nodes.Node):
                entry += c
            elif c:
                entry += nodes.paragraph("", "", nodes.literal(text=str(c)))
            row += entry
        body += row
    group += body
    return result


def _fact_list(race: Race) -> nodes.paragraph:
    p = _para("Facts: ")
    for i, fact in enumerate(race.facts):
        if i:
            p += nodes.Text(", ")
        p += nodes.literal(text=fact, classes=["fact"])
    return p


def render_race(race: Race, env) -> list[nodes.Node]:
    obs = race.explore()
    program = race.program()
    section = nodes.section(ids=[race_id(race.name)])
    section += nodes.title(text=race.name)
    env.get_domain("std").note_hyperlink_target(
        race.name.lower(), env.docname, race_id(race.name), race.name)
    if race.variant_of:
        section += _para(race.variant + " Variant of ", race_link(race.variant_of), ".")
    section += _para(race.question)
    if race.note:
        section += _para(race.note)
    # Threads side by side.
    width = max(len(s) for s in race.threads.values())
    rows = []
    for i in range(width):
        rows.append([steps[i].label if i < len(steps) else "" for steps in race.threads.values()])
    section += table(list(race.threads), rows, classes=["race-threads"])
    section += _para("exists: ", nodes.emphasis(text=race.exists_text))
    computed = obs.verdict
    agree = computed == race.result and obs.complete
    status = "agrees" if agree else "DISAGREES"
    section += _para("Stated result: ", nodes.strong(text=race.result),
                     f". Computed at build time: {computed} ({status}), from "
                     f"{obs.executions} executions, one per trace.")
    section += nodes.literal_block(obs.line(), obs.line(), language="none")
    if not agree:
        logger.warning("race %s: stated %s, computed %s%s", race.name, race.result, computed,
                       "" if obs.complete else " (incomplete)", location=env.docname)
    finals = []
    for final, (ok, schedule) in sorted(obs.finals.items(), key=lambda kv: (not kv[1][0], kv[0])):
        shown = ", ".join(f"{k}={v}" for k, v in final) or "(no named results)"
        finals.append((ok, shown, schedule))
    section += table(["exists", "final state"],
                      [["yes" if ok else "no", shown] for ok, shown, _ in finals],
                      classes=["race-finals"])
    for ok, shown, schedule in finals:
        title = f"Witness for {'the bad outcome' if ok else 'a good outcome'}: {shown}"
        section += _para(nodes.strong(text=title))
        lanes = list(race.threads)
        marked = point_of_no_return(program, schedule) if ok else None
        steps = [(t, program.steps[t][i].label) for t, i in schedule]
        svg = timeline_svg(lanes, steps, marked=marked if marked is not None and marked >= 0 else None,
                           title=f"{race.name}: {shown}")
        section += picture_nodes(svg, "Timeline of this execution, one lane per thread" + (
            "; the outlined step is where the bad outcome becomes certain." if marked is not None and marked >= 0 else "."))
        rows = []
        for j, (t, i) in enumerate(schedule):
            label = program.steps[t][i].label + ("  ← from here the bad outcome is certain"
                                                 if ok and j == marked else "")
            rows.append([label if lane == t else "" for lane in range(len(lanes))])
        section += table(lanes, rows, classes=["race-witness"])
    section += _fact_list(race)
    return [section]


class RaceFamily(SphinxDirective):
    """Every race of one family, in catalogue order."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        family = self.arguments[0]
        races = [r for r in catalogue().values() if r.family == family]
        if not races:
            logger.warning("no race in family %r", family, location=self.get_location())
        out: list[nodes.Node] = []
        for r in races:
            out += render_race(r, self.env)
        return out


class RaceIndex(SphinxDirective):
    """A table of every race: name (linked), family, question, stated and computed result."""

    option_spec = {"family": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        rows = []
        for r in catalogue().values():
            obs = r.explore()
            rows.append([_para(race_link(r.name)), nodes.paragraph(text=r.family),
                         nodes.paragraph(text=r.question.split(". ")[0].rstrip(".") + "."),
                         nodes.paragraph(text=r.result),
                         nodes.paragraph(text=obs.verdict if obs.complete else "incomplete")])
            if obs.verdict != r.result or not obs.complete:
                logger.warning("race %s: stated %s, computed %s", r.name, r.result, obs.verdict,
                               location=self.get_location())
        return [table(["race", "family", "question", "stated", "computed"], rows,
                       classes=["race-index"])]


def setup(app):
    app.add_directive("race-family", RaceFamily)
    app.add_directive("race-index", RaceIndex)
    app.add_role("race-ref", race_ref_role)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
