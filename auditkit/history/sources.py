"""The runs' result tables as DuckDB views, read where they are.

For each registered table (``lean``, ``outputs``) a view ``<table>_rows`` holds the rows of
every run of a line, with a ``location`` column naming the run. A local run's file is read by
DuckDB's ``read_parquet`` in place, when the run directory says it may be
(:meth:`auditkit.rundir.RunDir.table_file`: at this auditkit's version of the table and
matching the run's seal). A remote run (``s3://...``), or a table written by an older auditkit
that must be migrated first, is read through the run directory module and handed to DuckDB as
an Arrow table. Files are named only by the run directory module.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

TABLES = ("lean", "outputs")
"""The result tables the history reads."""


@dataclass
class Sources:
    """How each table of the line's runs reached DuckDB: ``files`` read in place, ``arrow``
    read through the run directory module (location lists, by table)."""

    files: dict[str, list[str]] = field(default_factory=dict)
    arrow: dict[str, list[str]] = field(default_factory=dict)

    def locations(self, table: str) -> list[str]:
        """The runs that have ``table``, however it was read."""
        return [*self.files.get(table, []), *self.arrow.get(table, [])]


def register_run_tables(db: duckdb.DuckDBPyConnection, locations: Iterable[str]) -> Sources:
    """Create the views ``lean_rows`` and ``outputs_rows`` over the runs at ``locations`` (a
    view is absent when no run has the table)."""
    import pandas as pd
    import pyarrow as pa

    from auditkit.analyses import slices
    from auditkit.rundir import RunDir
    from auditkit.rundir.remote import local_path

    slices()  # the analysis slices declare the tables read here (outputs)
    sources = Sources()
    runs = [(location, RunDir(local_path(location))) for location in locations]
    for table in TABLES:
        parts: list[str] = []
        files: list[tuple[str, str]] = []
        for index, (location, run) in enumerate(runs):
            path = run.table_file(table)
            if path is not None:
                files.append((location, str(path)))
                continue
            frame = run.table(table)
            if frame is None:
                continue
            name = f"_{table}_arrow_{index}"
            arrow = pa.Table.from_pandas(frame.assign(location=location), preserve_index=False)
            db.register(name, arrow)
            parts.append(f"SELECT * FROM {name}")
            sources.arrow.setdefault(table, []).append(location)
        if files:
            db.register(f"_{table}_files", pd.DataFrame(files, columns=["location", "file"]))
            parquet = db.read_parquet([f for _, f in files], union_by_name=True, filename=True)
            db.register(f"_{table}_parquet", parquet)
            parts.insert(
                0,
                f"SELECT f.location, t.* EXCLUDE (filename) FROM _{table}_parquet t "
                f"JOIN _{table}_files f ON t.filename = f.file",
            )
            sources.files[table] = [location for location, _ in files]
        if parts:
            union = " UNION ALL BY NAME ".join(parts)
            db.execute(f"CREATE OR REPLACE TEMP VIEW {table}_rows AS {union}")
    return sources
