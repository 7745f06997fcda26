"""The history of a model line (``auditkit history``): a run registry in one DuckDB file, the
trends of every lean, output share and gate across the line's checkpoints, and their report.

- :func:`open_registry`, :class:`RunRegistry`: the registry file (docs/history.md).
- :func:`describe_run`: what the registry keeps of a finished run.
- :func:`line_history`, :class:`LineHistory`: a line's runs in order, what they share, and how
  it moved (the runs' tables read in place by DuckDB).
- :func:`render_history`: the trend report (HTML, offline).
"""

from auditkit.history.entry import describe_run, run_location
from auditkit.history.registry import (
    REGISTRY_ENV,
    REGISTRY_FILE,
    RunEntry,
    RunRegistry,
    open_registry,
    registry_path,
)
from auditkit.history.trends import Dropped, LineHistory, line_history

__all__ = [
    "REGISTRY_ENV",
    "REGISTRY_FILE",
    "Dropped",
    "LineHistory",
    "RunEntry",
    "RunRegistry",
    "describe_run",
    "line_history",
    "open_registry",
    "registry_path",
    "run_location",
]
