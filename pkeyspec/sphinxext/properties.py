"""Find the property of each fact: tests decorated ``@proves("ID", ...)``.

The files are read with :mod:`ast`, not imported, so the site's build needs no
test dependencies to know which guarantee has a property and what it says.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


@dataclass(frozen=True)
class Property:
    facts: tuple[str, ...]
    name: str
    path: Path
    lineno: int
    source: str

    @property
    def where(self) -> str:
        """``tests/properties/test_keys.py::test_name`` relative to the repository."""
        parts = self.path.parts
        i = parts.index("tests") if "tests" in parts else 0
        return "/".join(parts[i:]) + "::" + self.name


def _proved_facts(func: ast.FunctionDef) -> tuple[str, ...]:
    for dec in func.decorator_list:
        if (isinstance(dec, ast.Call) and isinstance(dec.func, ast.Name)
                and dec.func.id == "proves"):
            return tuple(a.value for a in dec.args
                         if isinstance(a, ast.Constant) and isinstance(a.value, str))
    return ()


@lru_cache(maxsize=None)
def _scan(path: Path, mtime_ns: int) -> tuple[Property, ...]:
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    found = []
    for node in ast.parse(text, str(path)).body:
        if isinstance(node, ast.FunctionDef):
            facts = _proved_facts(node)
            if facts:
                start = min(d.lineno for d in node.decorator_list)
                found.append(Property(facts, node.name, path, start,
                                      "\n".join(lines[start - 1:node.end_lineno])))
    return tuple(found)


def properties_in(directory: Path) -> dict[str, list[Property]]:
    """Fact ID -> the properties that prove it, from ``test_*.py`` in ``directory``."""
    out: dict[str, list[Property]] = {}
    for path in sorted(Path(directory).glob("test_*.py")):
        for prop in _scan(path, path.stat().st_mtime_ns):
            for fact in prop.facts:
                out.setdefault(fact, []).append(prop)
    return out
