"""The README renders and points at files that exist."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
SEPARATOR = re.compile(r"^\|(\s*:?-{3,}:?\s*\|)+$")


def _tables() -> list[list[str]]:
    """Runs of consecutive lines that start with a pipe, outside code fences."""
    tables, current, fenced = [], [], False
    for line in README.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables + ([current] if current else [])


def test_every_table_has_a_header_separator_of_its_width():
    tables = _tables()
    assert tables, "the README has no tables: the parser is broken"
    for rows in tables:
        assert len(rows) >= 2 and SEPARATOR.match(rows[1]), (
            f"table without a |---| line under its header: {rows[0][:80]}")
        width = rows[0].count("|")
        for row in rows[1:]:
            assert row.count("|") == width, f"row of another width: {row[:80]}"


def test_pictures_scenarios_and_benchmarks_it_names_exist():
    named = set(re.findall(r"\]\((docs/[^)\s]+)\)", README))
    named |= set(re.findall(r"\b((?:scenarios|bench)/[\w./-]+\.(?:yaml|py))", README))
    assert any(n.startswith("docs/") for n in named) and any(
        n.startswith("scenarios/") for n in named), "nothing matched: the patterns broke"
    missing = sorted(n for n in named if not (REPO / n).exists())
    assert not missing, f"the README names files that do not exist: {missing}"
