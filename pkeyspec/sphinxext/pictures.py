"""Directives that draw pictures from the model at build time.

``{pkru-picture} VALUE`` draws a PKRU value. ``{model-picture}`` runs the
Python code in its body (with ``from pkeyspec import *`` and
``from pkeyspec.pictures import *`` already done) and draws the value of its
last line, which must be an :class:`pkeyspec.pictures.Svg`. In HTML the SVG is
inline, with its text alternative in ``<title>``/``<desc>`` and as a caption;
other builders get the text alternative only.
"""

from __future__ import annotations

import ast

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

from ..pictures import Svg, pkru_svg

logger = logging.getLogger(__name__)


def picture_nodes(svg: Svg, caption: str | None = None) -> list[nodes.Node]:
    """A figure holding the inline SVG (HTML only) and its caption or text alternative."""
    figure = nodes.container(classes=["pkeyspec-figure"])
    figure += nodes.raw("", svg.markup, format="html")
    text = caption or svg.alt
    figure += nodes.paragraph(text=text, classes=["pkeyspec-figure-caption"])
    return [figure]


class PkruPicture(SphinxDirective):
    required_arguments = 1
    option_spec = {"caption": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        try:
            value = int(self.arguments[0], 0)
        except ValueError:
            logger.warning("pkru-picture: %r is not an integer", self.arguments[0],
                           location=self.get_location())
            return []
        return picture_nodes(pkru_svg(value), self.options.get("caption"))


class ModelPicture(SphinxDirective):
    has_content = True
    option_spec = {"caption": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        source = "\n".join(self.content)
        namespace: dict = {}
        exec("from pkeyspec import *\nfrom pkeyspec.pictures import *", namespace)
        try:
            tree = ast.parse(source)
            last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
            exec(compile(tree, "<model-picture>", "exec"), namespace)
            svg = eval(compile(ast.Expression(last.value), "<model-picture>", "eval"),
                       namespace) if last else None
        except Exception as exc:  # a broken picture is a build warning, never a crash
            logger.warning("model-picture failed: %s: %s", type(exc).__name__, exc,
                           location=self.get_location())
            return []
        if not isinstance(svg, Svg):
            logger.warning("model-picture: the last line must be a picture (Svg), not %s",
                           type(svg).__name__, location=self.get_location())
            return []
        return picture_nodes(svg, self.options.get("caption"))


def setup(app):
    app.add_directive("pkru-picture", PkruPicture)
    app.add_directive("model-picture", ModelPicture)
    app.add_css_file("pkeyspec.css")
    return {"parallel_read_safe": True, "parallel_write_safe": True}
