"""The fact catalogue, and the ``{fact}`` role that cites a fact by its stable ID.

``docs/_data/facts.tsv`` holds one fact per line in five tab-separated
columns, ``ID KIND MODEL STATEMENT SOURCE``, after ``#`` comment lines.
:func:`load_catalogue` reads it into :class:`Fact` records;
:func:`load_fact_ids` gives the ID -> kind view the directives use.

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

#: The columns of a line of the catalogue, in order.
COLUMNS = ("id", "kind", "model", "statement", "source")
#: The kinds a fact can have.
KINDS = ("GUARANTEE", "NON-GUARANTEE", "ERRNO", "RACE", "ARCH-DIFF", "VERSION-DIFF")


@dataclass(frozen=True)
class Fact:
    """One line of the catalogue.

    ``model`` is ``modelled``, ``modelled; <what is not>`` or
    ``not modelled: <why>``; ``modelled`` says whether the model executes
    the behaviour (all of it, or the part the remark does not exclude).
    """

    id: str
    kind: str
    model: str
    statement: str
    source: str
    modelled: bool


def parse_line(line: str) -> Fact:
    """A :class:`Fact` from one non-comment line; ValueError unless it has five columns."""
    fields = line.split("\t")
    if len(fields) != len(COLUMNS):
        raise ValueError(f"a fact line has {len(COLUMNS)} tab-separated columns "
                         f"({' '.join(COLUMNS)}), not {len(fields)}: {line[:60]!r}")
    fact_id, kind, model, statement, source = (f.strip() for f in fields)
    return Fact(fact_id, kind, model, statement, source,
                modelled=model == "modelled" or model.startswith("modelled;"))


@lru_cache(maxsize=None)
def load_catalogue(path: Path) -> dict[str, Fact]:
    """ID -> :class:`Fact`, in file order, from a tab-separated file with ``#`` comments."""
    facts: dict[str, Fact] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            fact = parse_line(line)
            if fact.id in facts:
                raise ValueError(f"fact {fact.id} is in {path} twice")
            facts[fact.id] = fact
    return facts


@lru_cache(maxsize=None)
def load_fact_ids(path: Path) -> dict[str, str]:
    """ID -> kind, in file order."""
    return {fact_id: fact.kind for fact_id, fact in load_catalogue(path).items()}


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
    """The catalogue of fact IDs this project's configuration names: ID -> kind."""
    return load_fact_ids(Path(env.srcdir) / env.config.pkeyspec_facts_file)


def setup(app):
    app.add_config_value("pkeyspec_facts_file", "_data/facts.tsv", "env")
    app.add_role("fact", fact_role)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
