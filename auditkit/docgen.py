"""Generated parts of the docs: the column tables of ``docs/run-directory.md``, from the table
registry (the run directory's own tables and those the analysis slices register).

Each registered table appears in the doc between ``<!-- table:NAME -->`` and
``<!-- /table:NAME -->``; ``python -m auditkit.docgen [--write]`` shows (or rewrites) the
doc with every marked block regenerated, and a test checks that the doc agrees.
"""

from __future__ import annotations

import re
import sys
from itertools import groupby
from pathlib import Path

from auditkit.analyses import slices
from auditkit.rundir.columns import REGISTRY
from auditkit.rundir.registry import Column, Table

DOC = Path(__file__).resolve().parents[1] / "docs" / "run-directory.md"
PIPE = "\\|"
BLOCK = re.compile(r"<!-- table:(?P<name>\w+) -->\n.*?<!-- /table:(?P=name) -->", re.S)


def column_table(table: Table) -> str:
    """A table's markdown block: what a row is, its version, and one line per column (columns
    that share type, unit, meaning and optionality are listed together, as declared)."""
    lines = [
        f"<!-- table:{table.name} -->",
        f"`{table.path}`, schema version {table.version}: {table.rows}.",
        "",
        "| column | type | unit | meaning |",
        "|---|---|---|---|",
    ]

    def key(c: Column) -> tuple[str, str, str, bool]:
        return (c.type, c.unit, c.meaning, c.optional)

    for (type_, unit, meaning, optional), group in groupby(table.columns, key=key):
        names = ", ".join(c.name for c in group)
        text = (f"optional: {meaning}" if optional else meaning).replace("|", PIPE)
        lines.append(f"| {names} | {type_} | {unit} | {text} |")
    lines.append(f"<!-- /table:{table.name} -->")
    return "\n".join(lines)


def regenerate(text: str) -> str:
    """``text`` with every marked block replaced by its generated table."""
    slices()  # the analysis slices register their tables on import
    return BLOCK.sub(lambda m: column_table(REGISTRY[m.group("name")]), text)


def documented(text: str) -> set[str]:
    """Names of the tables the doc has a marked block for."""
    return {m.group("name") for m in BLOCK.finditer(text)}


def main(argv: list[str]) -> int:
    text = DOC.read_text(encoding="utf-8")
    new = regenerate(text)  # imports the slices first
    missing = sorted(t.name for t in REGISTRY if t.name not in documented(text))
    if "--write" in argv:
        DOC.write_text(new, encoding="utf-8")
    else:
        sys.stdout.write(new)
    if missing:
        sys.stderr.write(f"tables without a block in {DOC}: {missing}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
