"""The JSON summary (derived from the tables) and reading/writing ``results/``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from auditkit.analyze.significance import rule_of, rule_words
from auditkit.analyze.stats import summary_number
from auditkit.analyze.tables import ANALYSIS_TABLES, AuditResults
from auditkit.rundir import JSON_FILES, RunDir, as_run_dir
from auditkit.spec.audit import AuditSpec

EXTRA_TABLES = ("causal", "causal_curve", "causal_axes", "discovery")


def summarize(
    spec: AuditSpec,
    results: AuditResults,
    *,
    run_id: str,
    spec_hash: str,
    plan_hash: str,
    slices: Mapping[str, tuple[list[str], dict[str, Any] | list[Any] | None]] | None = None,
    top_level: Mapping[str, tuple[str, bool]] | None = None,
) -> dict[str, Any]:
    """The versioned JSON summary: settings, per-axis headline numbers, plain findings.

    ``slices`` holds, per analysis slice the audit runs (in the order of their findings:
    :func:`auditkit.analyses.stage.slice_summaries`), its findings and its block; a block goes
    under ``analyses`` unless ``top_level`` maps a top-level key to the slice's name and
    whether the key is optional: ``outputs`` is always written (null when not captioned), the
    causal check's ``causal`` and discovery's ``discovery`` (optional in schema version 1) only
    when they ran, after ``analyses``.
    """
    axes_out = []
    findings: list[str] = []
    lean_table = results.tables.get("lean")
    for row in results["axes"].itertuples():
        entry: dict[str, Any] = {
            "axis": row.axis,
            "groups": str(row.groups).split(","),
            "norm": summary_number(row.norm),
            "step_consistency": summary_number(row.step_consistency),
        }
        if lean_table is not None and not lean_table.empty and row.n_groups == 2:
            rows = lean_table[lean_table["axis"] == row.axis]
            ordered = rows.reindex(rows["score"].abs().sort_values(ascending=False).index)
            entry["max_abs_score"] = summary_number(ordered["score"].abs().max())
            entry["mean_score"] = summary_number(rows["score"].mean())
            entry["top"] = [
                {
                    "concept_set": r.concept_set,
                    "concept": r.concept,
                    "score": summary_number(r.score),
                    "toward": r.toward,
                    **_labels(r),
                }
                for r in ordered.head(5).itertuples()
            ]
            findings.append(_lean_sentence(str(row.axis), rows, ordered))
            if "significant" in rows.columns:
                entry["significance"] = _significance_entry(rows)
                findings.append(_significance_sentence(str(row.axis), rows))
        axes_out.append(entry)
    blocks: dict[str, Any] = {}
    for name, (sentences, block) in (slices or {}).items():
        findings.extend(sentences)
        if block is not None:
            blocks[name] = block
    own: dict[str, Any] = {}
    optional: dict[str, Any] = {}
    for key, (name, when_run) in (top_level or {}).items():
        block = blocks.pop(name, None)
        if not when_run:
            own[key] = block
        elif block is not None:
            optional[key] = block
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
            "rule": spec.statistics.rule,
            "min_effect": spec.statistics.min_effect,
            "alpha": spec.statistics.alpha,
        },
        "axes": axes_out,
        "findings": findings,
        "leans": _lean_records(lean_table),
        **own,
        "counts": {
            "prompts": len(prompts),
            "units": len(prompts) * len(spec.seed_list),
            "concepts": sum(len(c.terms) for c in spec.concepts),
        },
    }
    if blocks:
        summary["analyses"] = blocks
    summary.update(optional)
    return summary


def _lean_sentence(axis: str, rows: pd.DataFrame, ordered: pd.DataFrame) -> str:
    top = ordered.iloc[0]
    pos = rows["positive_group"].iloc[0]
    n_pos = int((rows["score"] > 0).sum())
    interval = ""
    if hasattr(top, "score_ci_low"):
        interval = f", 95% CI [{top.score_ci_low:+.3f}, {top.score_ci_high:+.3f}]"
    return (
        f"Along '{axis}', {n_pos} of {len(rows)} concepts lean towards '{pos}'; the strongest "
        f"lean is '{top.concept}' towards '{top.toward}' (score {top.score:+.3f}{interval}, "
        "where ±1 is the distance from the midpoint to a group's mean)."
    )


def _labels(row: Any) -> dict[str, Any]:
    """Plain-language labels of one lean row (only those the table can support)."""
    out: dict[str, Any] = {}
    if hasattr(row, "significant"):
        out["significant"] = bool(row.significant)
        out["q_value"] = summary_number(row.q_value)
        out["label"] = "significant" if row.significant else "not significant"
    if hasattr(row, "fragile"):
        out["fragile"] = bool(row.fragile)
    return out


def _lean_records(lean: pd.DataFrame | None) -> list[dict[str, Any]]:
    """Every lean with its interval and labels: what a CI system or a gate reads."""
    if lean is None or lean.empty:
        return []
    records = []
    for r in lean.itertuples():
        record: dict[str, Any] = {
            "axis": r.axis,
            "concept_set": r.concept_set,
            "concept": r.concept,
            "toward": r.toward,
            "score": summary_number(r.score),
            "cosine": summary_number(r.cosine),
        }
        if hasattr(r, "score_ci_low"):
            record["score_ci"] = [summary_number(r.score_ci_low), summary_number(r.score_ci_high)]
        if hasattr(r, "p_value"):
            record["p_value"] = summary_number(r.p_value)
        record.update(_labels(r))
        records.append(record)
    return records


def _significance_entry(rows: pd.DataFrame) -> dict[str, Any]:
    tested = rows["p_value"].notna()
    rule, band = rule_of(rows)
    entry: dict[str, Any] = {
        "tested": int(tested.sum()),
        "significant": int(rows["significant"].sum()),
        "rule": rule,
        "min_effect": band,
    }
    if rule != "min_effect":
        entry["null_model"] = rule
    return entry


def _significance_sentence(axis: str, rows: pd.DataFrame) -> str:
    tested = rows[rows["p_value"].notna()]
    if tested.empty:
        return (
            f"Along '{axis}', no lean could be tested for significance (one seed, or fewer "
            "than three concepts for the vocabulary null)."
        )
    hits = tested[tested["significant"]]
    hits = hits.loc[hits["score"].abs().sort_values(ascending=False, kind="stable").index]
    rule, band = rule_of(rows)
    if hits.empty:
        if rule == "min_effect":
            return (
                f"Along '{axis}', no lean is significant: none is beyond ±{band:g} with 95% "
                "confidence after correction for multiple testing."
            )
        return (
            f"Along '{axis}', no lean is significant: none stands out from its null model "
            "after correction for multiple testing."
        )
    names = ", ".join(f"'{r.concept}' towards '{r.toward}'" for r in hits.head(5).itertuples())
    more = f" and {len(hits) - 5} more" if len(hits) > 5 else ""
    fragile = int(hits["fragile"].sum()) if "fragile" in hits.columns else 0
    caveat = (
        f" ({fragile} of them fragile: the sign depends on wording or centring)" if fragile else ""
    )
    return (
        f"Along '{axis}', {len(hits)} of {len(tested)} leans are significant ("
        f"{rule_words(rule, band)}; false discovery rate controlled across the audit): "
        f"{names}{more}{caveat}."
    )


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
