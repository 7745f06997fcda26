"""The run registry of ``auditkit history``: one DuckDB file, no server.

It lists the finished runs of model lines: what identifies each run (run id, location, model
line, checkpoint, step, spec and plan hash, model id, revision and weights hash, start and end,
the analysis rule it was judged by), its gate outcomes, and what it covers (its axes with their
groups, its concept terms). The runs' result tables are not copied: the trends read them where
they are (:mod:`auditkit.history.sources`). docs/history.md describes the tables.

A run is known by its location (the resolved folder, or the URL of a remote run): adding the
same location again replaces its entry. A run whose folder was moved is recognised by its
manifest (run id, weights, start and end) when its old folder is gone, and its entry follows it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auditkit.errors import UsageError

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

REGISTRY_FILE = "auditkit-history.duckdb"
"""The registry's default file, in the current folder."""
REGISTRY_ENV = "AUDITKIT_HISTORY"
"""The environment variable that names the registry file when ``--registry`` is not given."""
REGISTRY_VERSION = 1
"""Version of the registry's tables; an older auditkit refuses a newer file."""

RUN_COLUMNS = (
    "location", "run_id", "model_line", "checkpoint", "step", "audit", "spec_hash", "plan_hash",
    "model_id", "model_revision", "weights_hash", "started_utc", "finished_utc", "rule",
    "min_effect", "alpha", "auditkit_version", "added_utc",
)  # fmt: skip
"""The columns of the ``runs`` table, in order."""

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS registry_info (key VARCHAR PRIMARY KEY, value VARCHAR)",
    """CREATE TABLE IF NOT EXISTS runs (
        location VARCHAR PRIMARY KEY, run_id VARCHAR NOT NULL, model_line VARCHAR NOT NULL,
        checkpoint VARCHAR NOT NULL, step BIGINT, audit VARCHAR, spec_hash VARCHAR,
        plan_hash VARCHAR, model_id VARCHAR, model_revision VARCHAR, weights_hash VARCHAR,
        started_utc VARCHAR, finished_utc VARCHAR, rule VARCHAR, min_effect DOUBLE,
        alpha DOUBLE, auditkit_version VARCHAR, added_utc VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS gates (
        location VARCHAR NOT NULL, gate_index INTEGER NOT NULL, name VARCHAR, metric VARCHAR,
        scope VARCHAR, value DOUBLE, bound VARCHAR, threshold DOUBLE, passed BOOLEAN,
        PRIMARY KEY (location, gate_index))""",
    """CREATE TABLE IF NOT EXISTS coverage (
        location VARCHAR NOT NULL, kind VARCHAR NOT NULL, set_name VARCHAR NOT NULL,
        name VARCHAR NOT NULL, detail VARCHAR NOT NULL)""",
)

ORDER = "step NULLS LAST, started_utc, location"
"""The order of a model line's runs: by step where given, then by start time."""


@dataclass(frozen=True)
class RunEntry:
    """What the registry keeps of one run (one row of ``runs``, its gates and its coverage)."""

    run: dict[str, Any]
    gates: list[dict[str, Any]] = field(default_factory=list)
    coverage: list[tuple[str, str, str, str]] = field(default_factory=list)
    """(kind, set name, name, detail): ``axis`` rows (name, groups joined by ``,``) and
    ``concept`` rows (concept set, term)."""


def registry_path(given: str | os.PathLike[str] | None) -> Path:
    """The registry file: ``given``, else :data:`REGISTRY_FILE` in the current folder."""
    text = str(given) if given is not None else ""
    return Path(text or REGISTRY_FILE).expanduser()


class RunRegistry:
    """An open registry file. Use :func:`open_registry`."""

    def __init__(self, path: Path, connection: duckdb.DuckDBPyConnection) -> None:
        self.path = path
        self.db = connection

    # --- writing -------------------------------------------------------------------------------

    def add(self, entry: RunEntry) -> bool:
        """Register ``entry`` (replacing the entry of the same run); True when it was new."""
        location = str(entry.run["location"])
        previous = self._same_run(entry)
        self.db.execute("BEGIN TRANSACTION")
        try:
            for old in {location, *(previous or [])}:
                for table in ("runs", "gates", "coverage"):
                    self.db.execute(f"DELETE FROM {table} WHERE location = ?", [old])
            values = [entry.run.get(column) for column in RUN_COLUMNS]
            marks = ", ".join("?" for _ in RUN_COLUMNS)
            self.db.execute(f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}) VALUES ({marks})", values)
            for index, gate in enumerate(entry.gates):
                self.db.execute(
                    "INSERT INTO gates VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        location,
                        index,
                        gate["name"],
                        gate["metric"],
                        json.dumps(gate["scope"], sort_keys=True, ensure_ascii=False),
                        gate["value"],
                        gate["bound"],
                        gate["threshold"],
                        gate["passed"],
                    ],
                )
            for row in entry.coverage:
                self.db.execute("INSERT INTO coverage VALUES (?, ?, ?, ?, ?)", [location, *row])
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return previous is None

    def _same_run(self, entry: RunEntry) -> list[str] | None:
        """Locations already holding this run: its own, or the old folder of a moved run (same
        run id, weights, start and end, and the old folder gone). None when it is new."""
        run = entry.run
        found = self.db.execute(
            "SELECT location FROM runs WHERE location = ? OR (run_id = ? AND weights_hash IS "
            "NOT DISTINCT FROM ? AND started_utc IS NOT DISTINCT FROM ? AND finished_utc IS "
            "NOT DISTINCT FROM ?)",
            [
                run["location"],
                run["run_id"],
                run["weights_hash"],
                run["started_utc"],
                run["finished_utc"],
            ],
        ).fetchall()
        same = [
            str(location)
            for (location,) in found
            if location == run["location"] or _moved_away(str(location))
        ]
        return same or None

    # --- reading -------------------------------------------------------------------------------

    def model_lines(self) -> list[str]:
        rows = self.db.execute("SELECT DISTINCT model_line FROM runs ORDER BY 1").fetchall()
        return [str(line) for (line,) in rows]

    def runs(self, model_line: str) -> pd.DataFrame:
        """The runs of ``model_line`` in order (:data:`ORDER`), one row each."""
        return self.db.execute(
            f"SELECT * FROM runs WHERE model_line = ? ORDER BY {ORDER}", [model_line]
        ).df()

    def gates(self, model_line: str) -> pd.DataFrame:
        """The gate outcomes of the line's runs, one row per (run, gate)."""
        return self.db.execute(
            "SELECT g.* FROM gates g JOIN runs r USING (location) WHERE r.model_line = ? "
            "ORDER BY g.location, g.gate_index",
            [model_line],
        ).df()

    def coverage(self, model_line: str) -> pd.DataFrame:
        """What each run of the line covers: its axes and concept terms."""
        return self.db.execute(
            "SELECT c.* FROM coverage c JOIN runs r USING (location) WHERE r.model_line = ?",
            [model_line],
        ).df()

    def resolve_line(self, model_line: str | None) -> str:
        """``model_line``, checked; or the registry's only line when none is named."""
        lines = self.model_lines()
        if model_line is not None:
            if model_line not in lines:
                raise UsageError(
                    f"{self.path}: no model line {model_line!r} (it holds {_listed(lines)}).",
                    hint="name one of them with --model-line, or add runs with "
                    "'auditkit history add RUN_DIR --model-line NAME'.",
                )
            return model_line
        if len(lines) != 1:
            raise UsageError(
                f"{self.path} holds {len(lines)} model lines ({_listed(lines)}): say which "
                "one with --model-line.",
                hint="'auditkit history show' lists every line.",
            )
        return lines[0]


def _listed(lines: list[str]) -> str:
    return ", ".join(repr(line) for line in lines) if lines else "none"


def _moved_away(location: str) -> bool:
    from auditkit.rundir.remote import is_url

    return not is_url(location) and not Path(location).exists()


@contextmanager
def open_registry(path: Path, *, create: bool = False) -> Iterator[RunRegistry]:
    """The registry file at ``path``, created when ``create`` (read-only otherwise); errors
    name the file: missing, not a DuckDB file, written by a newer auditkit, or in use."""
    import duckdb

    if not create and not path.is_file():
        raise UsageError(
            f"no run registry at {path}: no run has been added there yet.",
            hint="add runs first ('auditkit history add RUN_DIR...'), or name the registry "
            f"with --registry (or ${REGISTRY_ENV}).",
        )
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        connection = duckdb.connect(str(path), read_only=not create)
    except duckdb.Error as exc:
        raise UsageError(
            f"{path} could not be opened as a run registry ({exc}).",
            hint="name a registry file that 'auditkit history add' wrote, or a new file; a "
            "registry in use by another auditkit command is free again when it ends.",
        ) from None
    try:
        _check_schema(path, connection, create=create)
        yield RunRegistry(path, connection)
    finally:
        connection.close()


def _check_schema(path: Path, db: duckdb.DuckDBPyConnection, *, create: bool) -> None:
    tables = {str(t) for (t,) in db.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    if not tables and create:
        for statement in SCHEMA:
            db.execute(statement)
        db.execute(
            "INSERT INTO registry_info VALUES ('kind', 'auditkit.history'), ('schema_version', ?)",
            [str(REGISTRY_VERSION)],
        )
        return
    info: dict[str, str] = {}
    if "registry_info" in tables:
        info = {str(k): str(v) for k, v in db.execute("SELECT * FROM registry_info").fetchall()}
    if info.get("kind") != "auditkit.history":
        raise UsageError(
            f"{path} is a DuckDB file but not an auditkit run registry.",
            hint="name a registry file that 'auditkit history add' wrote, or a new file.",
        )
    version = int(info.get("schema_version", "0"))
    if version > REGISTRY_VERSION:
        from auditkit.rundir import newer_error

        raise newer_error(path, version, REGISTRY_VERSION)
