"""The JSON summary (derived from the tables) and reading/writing ``results/``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from auditkit.analyze.stats import summary_number
from auditkit.analyze.tables import ANALYSIS_TABLES, AuditResults
from auditkit.rundir import JSON_FILES, RunDir, as_run_dir
from auditkit.spec.audit import AuditSpec, judged_band, judged_effect

EXTRA_TABLES = ("causal", "causal_curve", "causal_axes", "discovery")


def summarize(
    spec: AuditSpec,
    results: AuditResults,
    *,
    run_id: str,
    spec_hash: str,
    plan_hash: str,
    findings: list[str],
    blocks: Mapping[str, Any],
    top_level: Mapping[str, tuple[Any, bool]],
    axis_fields: Mapping[str, dict[str, Any]],
) -> dict[str, Any]:
    """The versioned JSON summary: settings, per-axis headline numbers, plain findings.

    The analysis slices give the rest (:func:`auditkit.analyses.stage.analyze_run`): the
    ``findings`` in order, their ``blocks`` under ``analyses`` by slice name, the blocks that
    keep a top-level key (``top_level``: key -> (block, optional)): ``leans`` and ``outputs``
    always written, the causal check's ``causal`` and discovery's ``discovery`` (optional in
    schema version 1) only when they ran, after ``analyses``), and the fields each axis's entry
    gains (``axis_fields``, by axis: the lean's headline numbers).
    """
    axes_out = []
    for row in results["axes"].itertuples():
        entry: dict[str, Any] = {
            "axis": row.axis,
            "groups": str(row.groups).split(","),
            "norm": summary_number(row.norm),
            "step_consistency": summary_number(row.step_consistency),
        }
        entry.update(axis_fields.get(str(row.axis), {}))
        axes_out.append(entry)
    own = {key: block for key, (block, optional) in top_level.items() if not optional}
    later = {
        key: block for key, (block, optional) in top_level.items() if optional and block is not None
    }
    prompts = results["prompts"]
    summary: dict[str, Any] = {
        "schema_version": JSON_FILES["summary"].version,
        "kind": "auditkit.summary",
        "audit": spec.name,
        "run_id": run_id,
        "spec_hash": spec_hash,
        "plan_hash": plan_hash,
        "model": {
            "id": spec.model.id,
            "revision": spec.model.revision,
            "pipeline": spec.model.pipeline,
        },
        "settings": {
            "steps": spec.model.steps,
            "guidance_scale": spec.model.guidance_scale,
            "resolution": spec.model.resolution,
            "seeds": len(spec.seed_list),
            "hook": spec.probe.hook,
            "aggregation": spec.probe.aggregation,
            "spatial_pool": spec.probe.spatial_pool,
            "guidance_half": spec.probe.guidance_half,
            "centring": spec.centring.reference,
            "resampling": spec.statistics.resampling,
            "interval": spec.statistics.interval,
            "rule": spec.statistics.rule,
            "min_effect": spec.statistics.min_effect,
            "effect": judged_effect(spec),
            "band": judged_band(spec),
            "alpha": spec.statistics.alpha,
        },
        "axes": axes_out,
        "findings": list(findings),
        **own,
        "counts": {
            "prompts": len(prompts),
            "units": len(prompts) * len(spec.seed_list),
            "concepts": sum(len(c.terms) for c in spec.concepts),
        },
    }
    if blocks:
        summary["analyses"] = dict(blocks)
    summary.update(later)
    return summary


# --- tables written by the passes (the causal check, discovery) -----------------------------


def read_extra_tables(run_dir: Path | RunDir) -> dict[str, pd.DataFrame]:
    """The optional tables a run directory has, by name: the causal check's ``causal``,
    ``causal_curve`` and ``causal_axes`` (``captions/``) and the discovery ranking
    ``discovery`` (``results/``), for the executive summary. A missing file is left out.
    Their slices (``auditkit.analyses.causal``, ``.discovery``) declare them: the caller has
    loaded the slices (:func:`auditkit.analyses.slices`).

    Raises:
        SchemaVersionError: a table was written by a newer auditkit.
        UsageError: a table lacks a column its schema requires.
    """
    return as_run_dir(run_dir).tables(list(EXTRA_TABLES))


def write_results(results: AuditResults, summary: dict[str, Any], run_dir: Path | RunDir) -> None:
    """Write every table (stamped with its schema version) and the summary, each atomically."""
    run = as_run_dir(run_dir)
    for name, frame in results.tables.items():
        run.write_table(name, frame)
    run.write_json("summary", summary)


def read_results(
    run_dir: Path | RunDir, more: tuple[str, ...] = ()
) -> tuple[AuditResults, dict[str, Any]]:
    """Read the analysis tables (the built-in ones and those named in ``more``, e.g. the
    analysis slices') and the summary back (migrating older tables, refusing newer)."""
    run = as_run_dir(run_dir)
    summary = run.read_json("summary")
    return AuditResults(tables=run.tables([*ANALYSIS_TABLES, *more])), summary
