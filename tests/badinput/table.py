"""The table of docs/bad-inputs.md, parsed: one `Row` per bad input.

Shared by tests/badinput/test_bad_inputs_table.py (runs the `self` rows, checks that the tests
named by the others exist) and tests/cluster/test_bad_inputs_cluster.py (asserts the
api-server and operator rows against a real API server and operator).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DOC = REPO_ROOT / "docs" / "bad-inputs.md"
COLUMNS = ("id", "surface", "bad input", "what the user gets", "result", "test")
SURFACES = ("cli", "agent", "http", "api-server", "operator")
SELF = "self"

_CODE_SPAN = re.compile(r"(`+)(.+?)(?<!`)\1(?!`)")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")


def code_spans(text: str) -> list[str]:
    """The code spans of a Markdown cell, as CommonMark reads them."""
    spans = []
    for match in _CODE_SPAN.finditer(text):
        content = match.group(2)
        if content.startswith(" ") and content.endswith(" ") and content.strip():
            content = content[1:-1]
        spans.append(content)
    return spans


@dataclass(frozen=True)
class Row:
    id: str
    surface: str
    bad_input: str
    gets: str
    result: str
    test: str
    line: int

    @property
    def command(self) -> str:
        """The first code span of "bad input" (the command, request or field)."""
        spans = code_spans(self.bad_input)
        return spans[0] if spans else ""

    @property
    def message(self) -> str:
        """The first code span of "what the user gets": the exact text asserted."""
        spans = code_spans(self.gets)
        return spans[0] if spans else ""

    @property
    def is_bug(self) -> bool:
        return "**Bug**" in self.gets

    @property
    def exit_code(self) -> int | None:
        m = re.search(r"\bexit (\d+)\b", self.result)
        return int(m.group(1)) if m else None

    @property
    def http_status(self) -> int | None:
        m = re.search(r"\bHTTP (\d{3})\b", self.result)
        return int(m.group(1)) if m else None

    def test_ref(self) -> tuple[str, str, str | None]:
        """(path, function, parameter id or None) of the test column."""
        path, _, name = self.test.partition("::")
        m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[(.+)\])?", name)
        if not path or m is None:
            raise ValueError(f"row {self.id}: test {self.test!r} is not path::name[param]")
        return path, m.group(1), m.group(2)

    def __str__(self) -> str:
        return f"docs/bad-inputs.md:{self.line} [{self.id}]"


def _cells(line: str) -> list[str]:
    inner = line.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") and not inner.endswith("\\|") else inner
    return [c.strip().replace("\\|", "|") for c in _CELL_SPLIT.split(inner)]


@cache
def rows() -> tuple[Row, ...]:
    """Every row of every table with the inventory's header, in document order."""
    found: list[Row] = []
    in_table = False
    for number, line in enumerate(DOC.read_text().splitlines(), start=1):
        if not line.lstrip().startswith("|"):
            in_table = False
            continue
        cells = _cells(line)
        if tuple(c.lower() for c in cells) == COLUMNS:
            in_table = True
            continue
        if not in_table or set("".join(cells)) <= set("-: "):
            continue
        if len(cells) != len(COLUMNS):
            raise ValueError(f"docs/bad-inputs.md:{number}: {len(cells)} cells, not 6: {line}")
        found.append(Row(*cells, line=number))
    return tuple(found)


def rows_by_id() -> dict[str, Row]:
    return {row.id: row for row in rows()}
