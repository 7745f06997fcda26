"""What the registry keeps of a run, read from its run directory through :mod:`auditkit.rundir`.

Only finished, complete runs are described: a folder without a manifest, a run that has not
finished its analysis, or one that failed is refused with an error naming the folder (exit 2).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from auditkit.errors import UsageError
from auditkit.history.registry import RunEntry

COMMAND = "'auditkit history add'"


def run_location(given: str | os.PathLike[str]) -> str:
    """How the registry names a run directory: the URL of a remote run as given (without a
    trailing slash), the absolute path of a local one."""
    from auditkit.rundir.remote import location

    found = location(given)
    return found.rstrip("/") if isinstance(found, str) else str(Path(found).resolve())


def checkpoint_label(model_id: str, revision: str | None) -> str:
    """The default checkpoint label: the model id (a hub id, ``builtin:...``), or the folder's
    name for a local folder, with ``@revision`` when one was asked for."""
    path = Path(model_id)
    local = path.is_absolute() or model_id.startswith(("~", "./", "../")) or path.is_dir()
    label = path.name if local and path.name else model_id
    return f"{label}@{revision}" if revision else label


def describe_run(
    given: str | os.PathLike[str],
    *,
    model_line: str | None = None,
    checkpoint: str | None = None,
    step: int | None = None,
) -> RunEntry:
    """The registry entry of the finished run at ``given`` (a folder or a URL)."""
    from auditkit.analyses import slices
    from auditkit.analyze.significance import rule_of
    from auditkit.provenance import utc_now
    from auditkit.rundir import RunDir, weights_hash
    from auditkit.rundir.remote import local_path
    from auditkit.spec import load_run_spec
    from auditkit.spec.audit import judged_band

    location = run_location(given)
    run = RunDir(local_path(given))
    if not run.root.is_dir():
        raise UsageError(
            f"{location} is not a folder, so it is not an auditkit run directory.",
            hint="name the folders given to 'auditkit run --out'.",
        )
    if not run.has_json("manifest"):
        raise UsageError(
            f"{location} is not an auditkit run directory (it has no manifest.json).",
            hint="name the folders given to 'auditkit run --out'.",
        )
    run.require_finished(COMMAND)
    manifest = run.require_complete(COMMAND)
    spec = load_run_spec(run.root)
    slices()  # the analysis slices declare the tables read here (lean, outputs)
    band = judged_band(spec)
    lean = run.table("lean") if run.has_table("lean") else None
    if lean is not None:  # the band the run applied, as its lean table records it
        band = rule_of(lean)[1] or band
    model = manifest.model or {}
    model_id = str(model.get("id") or spec.model.id)
    revision = model.get("revision", spec.model.revision)
    record: dict[str, Any] = {
        "location": location,
        "run_id": manifest.run_id,
        "model_line": model_line or spec.name,
        "checkpoint": checkpoint or checkpoint_label(model_id, revision),
        "step": step,
        "audit": spec.name,
        "spec_hash": manifest.spec_hash,
        "plan_hash": manifest.plan_hash,
        "model_id": model_id,
        "model_revision": revision,
        "weights_hash": weights_hash(model),
        "started_utc": manifest.started_utc,
        "finished_utc": manifest.finished_utc,
        "rule": spec.statistics.rule,
        "min_effect": band,  # in the units of the statistic the run judged
        "alpha": spec.statistics.alpha,
        "auditkit_version": manifest.auditkit_version,
        "added_utc": utc_now(),
    }
    for name in ("lean", "outputs"):  # checked against the seal now, read later by DuckDB
        if run.has_table(name):
            run.table(name)
    gates = run.read_json("gates")["gates"] if run.has_json("gates") else []
    coverage = [("axis", "", axis.name, ",".join(axis.groups)) for axis in spec.axes]
    coverage += [("concept", c.name, term, "") for c in spec.concepts for term in c.terms]
    return RunEntry(record, [_gate(g) for g in gates], coverage)


def _gate(gate: dict[str, Any]) -> dict[str, Any]:
    """One gate outcome of ``results/gates.json`` as the registry keeps it."""
    return {
        "name": str(gate.get("name") or gate.get("metric")),
        "metric": str(gate.get("metric", "")),
        "scope": gate.get("scope") or {},
        "value": _number(gate.get("value")),
        "bound": str(gate.get("bound", "max")),
        "threshold": _number(gate.get("threshold")),
        "passed": bool(gate.get("passed")),
    }


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
