"""The table registry's core: the run directory's own tables, their schema versions and the
migrations that bring older tables up to date.

The tables are declared data, in ``auditkit/rundir/tables.yaml`` (its header describes the
format; :func:`auditkit.rundir.registry.load_tables` reads it): one entry per table, with its
folder, schema version, what a row is, and its columns (names, type, unit, meaning, optional).
The analysis slices (:mod:`auditkit.analyses`) declare theirs the same way, each in
``<slice>.tables.yaml`` beside its module, and add them to the registry when imported
(:func:`slice_tables`; the captioned outputs' ``outputs``, ``agreement``, ``guidance`` and
``amplification`` too, and the exemplar thumbnails' ``exemplars``, which the captioning stage
writes). ``docs/run-directory.md`` shows these tables (:mod:`auditkit.docgen`), writers refuse
undeclared columns (:meth:`auditkit.rundir.RunDir.write_table`) and readers require the
non-optional ones. A table written before tables were stamped reads as version 1; the
migrations at the end bring older versions up to date.

Version history of the ``results/`` tables: 1, unstamped (auditkit 0.1.0 before the registry);
2, stamped with ``auditkit_schema_version`` (``lean`` gains ``rule`` from ``null_model``).
"""

from __future__ import annotations

from importlib.resources import files
from typing import TYPE_CHECKING

from auditkit.rundir.registry import Declarations, Registry, Table, load_tables

if TYPE_CHECKING:
    import pandas as pd


RESULTS_VERSION = 2
"""Schema version of the ``results/`` tables."""
CAPTIONS_VERSION = 1
"""Schema version of the ``captions/`` tables (stamped since they were introduced)."""
VERSIONS = {"results": RESULTS_VERSION, "captions": CAPTIONS_VERSION}
"""The versions a table file may name instead of a number (``version: results``)."""


def read_tables(package: str, resource: str, shared: Declarations | None = None) -> Declarations:
    """The tables declared in the data file ``resource`` of ``package``."""
    text = files(package).joinpath(resource).read_text(encoding="utf-8")
    return load_tables(text, f"{package.replace('.', '/')}/{resource}", VERSIONS, shared)


CORE = read_tables("auditkit.rundir", "tables.yaml")
"""The core tables, with the column groups and interval meaning the slices' files may use."""
REGISTRY = Registry(list(CORE.tables))


def slice_tables(module: str) -> tuple[Table, ...]:
    """The tables of the data file beside the module ``module`` (``auditkit.analyses.outputs``:
    ``auditkit/analyses/outputs.tables.yaml``), in file order; they may use the core file's
    column groups and interval meaning."""
    package, _, name = module.rpartition(".")
    return read_tables(package, f"{name}.tables.yaml", CORE).tables


@REGISTRY.migration("lean", 1)
def _lean_rule(frame: pd.DataFrame) -> pd.DataFrame:
    """Version 1 lean tables judged by a legacy rule recorded it in ``null_model`` only."""
    if "rule" not in frame.columns and "null_model" in frame.columns:
        frame = frame.assign(rule=frame["null_model"])
    return frame
