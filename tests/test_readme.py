"""README.md's page <-> module <-> test table names files that exist.

Like consensus-specs' check that a heading matches its definition: a renamed
page, module or test file must be renamed in the table too.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def table_rows():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Page ↔ module ↔ test", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        cells = re.findall(r"`([^`]+)`", line)
        if line.startswith("| `") and len(cells) == 3:
            yield cells


def test_table_is_not_empty():
    assert len(list(table_rows())) >= 20


def test_every_file_in_the_table_exists():
    missing = [path for row in table_rows() for path in row if not (ROOT / path).is_file()]
    assert missing == []


def test_every_reference_page_is_in_the_table():
    listed = {row[0] for row in table_rows()}
    pages = {str(p.relative_to(ROOT)) for p in (ROOT / "docs" / "reference").glob("*.md")}
    assert pages - listed == {"docs/reference/index.md", "docs/reference/api.md"}
