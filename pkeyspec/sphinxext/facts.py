"""The ``{fact}`` role: cite a fact of the catalogue by its stable ID.

``{fact}`SYS-FREE-KEY0``` renders the ID as code with the class ``fact``.
An ID that is not in ``docs/_data/facts.tsv`` is a warning, so the strict
build fails on a typo or on a citation of a fact nobody catalogued.
"""

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from docutils import nodes
from sphinx.util import logging

logger = logging.getLogger(__name__)


@lru_cache(maxsize=None)
def load_fact_ids(path: Path) -> dict[str, str]:
    """ID -> kind, from a tab-separated file with ``#`` comments."""
    facts = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            fact_id, kind = line.split("\t")[:2]
            facts[fact_id] = kind
    return facts


@dataclass(frozen=True)
class Fact:
    """A line of the catalogue: ID, kind, whether the model runs it, statement, source."""
    id: str
    kind: str
    model: str = "modelled"
    statement: str = ""
    source: str = ""

    @property
    def modelled(self) -> bool:
        return self.model.startswith("modelled")


@lru_cache(maxsize=None)
def load_catalogue(path: Path) -> dict[str, Fact]:
    """ID -> :class:`Fact`; lines with fewer columns leave the rest at their defaults."""
    facts = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            fields = line.split("\t")
            facts[fields[0]] = Fact(*fields[:5])
    return facts


def catalogue_of(env) -> dict[str, Fact]:
    return load_catalogue(Path(env.srcdir) / env.config.pkeyspec_facts_file)


def fact_role(name, rawtext, text, lineno, inliner, options=None, content=()):
    env = inliner.document.settings.env
    facts = facts_of(env)
    fact_id = text.strip()
    node = nodes.literal(rawtext, fact_id, classes=["fact"])
    if fact_id not in facts:
        logger.warning("unknown fact ID %r", fact_id, location=(env.docname, lineno))
    else:
        node["reftitle"] = facts[fact_id]
    return [node], []


def facts_of(env) -> dict[str, str]:
    """The catalogue of fact IDs this project's configuration names."""
    return load_fact_ids(Path(env.srcdir) / env.config.pkeyspec_facts_file)


def setup(app):
    app.add_config_value("pkeyspec_facts_file", "_data/facts.tsv", "env")
    app.add_role("fact", fact_role)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
