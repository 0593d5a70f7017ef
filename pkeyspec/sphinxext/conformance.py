"""The ``{conformance-table}`` directive: real kernels beside the model.

It reads the committed observations (``conformance/observations/*.jsonl``)
and the scenario files (``conformance/scenarios/*.scn``), runs each scenario
on the model (:mod:`pkeyspec.conformance`) and renders:

* a summary table, one row per kernel: results, agreements, disagreements;
* one table per scenario file: a row per result, a column per kernel with
  the observed value. A value the model does not reproduce is shown as
  ``observed ≠ model X`` (class ``conformance-disagree``); a row whose
  observed value differs between the PKU kernels is marked ``Δ``
  (class ``conformance-version-diff``).

Options: ``:summary-only:`` renders the summary table alone.
The observation and scenario files are recorded as dependencies, so the
page is rebuilt when they change.
"""

from __future__ import annotations

from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.util.docutils import SphinxDirective

from .guarantees import scenario_anchor


def _table(header: list[str], rows: list[list[nodes.Node | str]], widths: list[int],
           classes: list[list[str]] | None = None) -> nodes.table:
    table = nodes.table(classes=["conformance"])
    group = nodes.tgroup(cols=len(header))
    table += group
    for w in widths:
        group += nodes.colspec(colwidth=w)
    thead = nodes.thead()
    group += thead
    row = nodes.row()
    for h in header:
        row += nodes.entry("", nodes.paragraph(text=h))
    thead += row
    tbody = nodes.tbody()
    group += tbody
    for i, cells in enumerate(rows):
        row = nodes.row(classes=classes[i] if classes else [])
        for c in cells:
            entry = nodes.entry()
            para = nodes.paragraph()
            para += c if isinstance(c, nodes.Node) else nodes.Text(c)
            entry += para
            row += entry
        tbody += row
    return table


def _cell(observed: str | None, model: str | None) -> nodes.Node:
    if observed == model:
        return nodes.literal(text=observed) if observed is not None else nodes.Text("–")
    span = nodes.inline(classes=["conformance-disagree"])
    span += nodes.literal(text=observed if observed is not None else "(none)")
    span += nodes.Text(" ≠ model ")
    span += nodes.literal(text=model if model is not None else "(none)")
    return span


class ConformanceTable(SphinxDirective):
    has_content = False
    option_spec = {"summary-only": directives.flag}

    def run(self) -> list[nodes.Node]:
        from pkeyspec import conformance as conf

        base = (Path(self.env.srcdir) / self.config.pkeyspec_conformance_dir).resolve()
        scen_dir, obs_dir = base / "scenarios", base / "observations"
        for p in sorted(scen_dir.glob("*.scn")) + sorted(obs_dir.glob("*.jsonl")):
            self.env.note_dependency(str(p))
        scenarios = conf.load_scenarios(scen_dir)
        report = conf.compare_files(conf.observation_files(obs_dir), scenarios)
        kernels = report.kernels

        summary_rows = []
        for k in kernels:
            m = k.observation.meta
            summary_rows.append([
                nodes.literal(text=m["kernel"]), m["package_version"],
                "max (PKU)" if m["pku"] else "qemu64 (no PKU)", m["series"],
                str(m["scenarios"]), str(len(k.rows)), str(k.agree), str(k.disagree)])
        out: list[nodes.Node] = [_table(
            ["kernel (uname -r)", "package version", "QEMU CPU", "model", "scenarios",
             "results", "agree", "disagree"], summary_rows, [22, 16, 14, 6, 8, 8, 8, 8])]
        if "summary-only" in self.options:
            return out

        cells: dict[tuple[str, str], list[tuple[str | None, str | None] | None]] = {}
        for i, k in enumerate(kernels):
            for r in k.rows:
                cells.setdefault((r.scenario, r.result), [None] * len(kernels))[i] = (
                    r.observed, r.model)
        pku_cols = [i for i, k in enumerate(kernels) if k.observation.meta["pku"]]
        header = ["scenario", "result"] + [k.observation.short_label for k in kernels]
        by_file: dict[str, list[conf.Scenario]] = {}
        for sc in scenarios:
            by_file.setdefault(sc.file, []).append(sc)
        for file, scs in by_file.items():
            rows, classes = [], []
            for sc in scs:
                first = True
                for (scn, result), values in cells.items():
                    if scn != sc.name:
                        continue
                    observed_pku = {values[i][0] for i in pku_cols if values[i] is not None}
                    differs = len(observed_pku) > 1
                    name = nodes.inline()
                    if first:
                        name["ids"] = [scenario_anchor(sc.name)]
                        name += nodes.literal(text=sc.name)
                    result_cell = nodes.inline()
                    result_cell += nodes.literal(text=result)
                    if differs:
                        result_cell += nodes.Text(" Δ")
                    row = [name, result_cell]
                    row += [_cell(*v) if v is not None else nodes.Text("") for v in values]
                    rows.append(row)
                    cls = []
                    if differs:
                        cls.append("conformance-version-diff")
                    if any(v is not None and v[0] != v[1] for v in values):
                        cls.append("conformance-disagree")
                    classes.append(cls)
                    first = False
            section_title = nodes.rubric(text=file)
            out.append(section_title)
            out.append(_table(header, rows, [24, 14] + [12] * len(kernels), classes))
        return out


def setup(app):
    # Relative to the source directory (docs/).
    app.add_config_value("pkeyspec_conformance_dir", "../conformance", "env")
    app.add_directive("conformance-table", ConformanceTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
