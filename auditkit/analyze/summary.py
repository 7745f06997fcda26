"""The JSON summary (derived from the tables) and reading/writing ``results/``."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import pandas as pd

from auditkit.analyze.tables import RESULTS_SCHEMA_VERSION, AuditResults
from auditkit.provenance import read_versioned_json, write_bytes_atomic, write_json_atomic
from auditkit.spec.models import AuditSpec

TABLE_NAMES = (
    "prompts",
    "axes",
    "lean",
    "steps",
    "defaults",
    "descriptors",
    "similarity",
    "structure",
    "outputs",
    "agreement",
)


def summarize(
    spec: AuditSpec, results: AuditResults, *, run_id: str, spec_hash: str, plan_hash: str
) -> dict[str, Any]:
    """The versioned JSON summary: settings, per-axis headline numbers, plain findings."""
    axes_out = []
    findings: list[str] = []
    lean_table = results.tables.get("lean")
    for row in results["axes"].itertuples():
        entry: dict[str, Any] = {
            "axis": row.axis,
            "groups": str(row.groups).split(","),
            "norm": _num(row.norm),
            "step_consistency": _num(row.step_consistency),
        }
        if lean_table is not None and not lean_table.empty and row.n_groups == 2:
            rows = lean_table[lean_table["axis"] == row.axis]
            ordered = rows.reindex(rows["score"].abs().sort_values(ascending=False).index)
            entry["max_abs_score"] = _num(ordered["score"].abs().max())
            entry["mean_score"] = _num(rows["score"].mean())
            entry["top"] = [
                {
                    "concept_set": r.concept_set,
                    "concept": r.concept,
                    "score": _num(r.score),
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
    findings.extend(_output_sentences(results))
    findings.extend(_defaults_sentences(results))
    findings.extend(_descriptor_sentences(results))
    prompts = results["prompts"]
    return {
        "schema_version": RESULTS_SCHEMA_VERSION,
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
        },
        "axes": axes_out,
        "findings": findings,
        "leans": _lean_records(lean_table),
        "outputs": _output_records(results),
        "counts": {
            "prompts": len(prompts),
            "units": len(prompts) * len(spec.seed_list),
            "concepts": sum(len(c.terms) for c in spec.concepts),
        },
    }


def _num(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) else round(value, 6)


def _lean_sentence(axis: str, rows: pd.DataFrame, ordered: pd.DataFrame) -> str:
    top = ordered.iloc[0]
    pos = rows["positive_group"].iloc[0]
    n_pos = int((rows["score"] > 0).sum())
    return (
        f"Along '{axis}', {n_pos} of {len(rows)} concepts lean towards '{pos}'; the strongest "
        f"lean is '{top.concept}' towards '{top.toward}' (score {top.score:+.3f}, where ±1 "
        f"is the distance from the midpoint to a group's mean)."
    )


def _labels(row: Any) -> dict[str, Any]:
    """Plain-language labels of one lean row (only those the table can support)."""
    out: dict[str, Any] = {}
    if hasattr(row, "significant"):
        out["significant"] = bool(row.significant)
        out["q_value"] = _num(row.q_value)
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
            "score": _num(r.score),
            "cosine": _num(r.cosine),
        }
        if hasattr(r, "score_ci_low"):
            record["score_ci"] = [_num(r.score_ci_low), _num(r.score_ci_high)]
        if hasattr(r, "p_value"):
            record["p_value"] = _num(r.p_value)
        record.update(_labels(r))
        records.append(record)
    return records


def _significance_entry(rows: pd.DataFrame) -> dict[str, Any]:
    tested = rows["p_value"].notna()
    return {
        "tested": int(tested.sum()),
        "significant": int(rows["significant"].sum()),
        "null_model": str(rows["null_model"].iloc[0]) if len(rows) else None,
    }


def _significance_sentence(axis: str, rows: pd.DataFrame) -> str:
    tested = rows[rows["p_value"].notna()]
    if tested.empty:
        return (
            f"Along '{axis}', no lean could be tested for significance (one seed, or fewer "
            "than three concepts for the vocabulary null)."
        )
    hits = tested[tested["significant"]].sort_values("q_value")
    if hits.empty:
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
        f"Along '{axis}', {len(hits)} of {len(tested)} leans are significant "
        f"(false discovery rate controlled across the audit): {names}{more}{caveat}."
    )


def _output_records(results: AuditResults) -> dict[str, Any] | None:
    """Output-level numbers (captioned shares vs reference, and agreement), when captioned."""
    outputs = results.tables.get("outputs")
    if outputs is None:
        return None
    agreement = results.tables.get("agreement")
    per_concept = outputs.drop_duplicates(["concept_set", "concept", "attribute"])
    return {
        "largest_gap": [
            {
                "attribute": r.attribute,
                "concept_set": r.concept_set,
                "concept": r.concept,
                "group": r.max_gap_group,
                "gap": _num(r.max_abs_gap),
                "kl_bits": _num(r.kl_bits),
            }
            for r in per_concept.sort_values("max_abs_gap", ascending=False).itertuples()
        ],
        "agreement": []
        if agreement is None
        else [
            {
                "axis": r.axis,
                "rho": _num(r.rho),
                "rho_ci": [_num(r.rho_ci_low), _num(r.rho_ci_high)],
                "n_concepts": int(str(r.n_concepts)),
                "statement": str(r.statement),
            }
            for r in agreement.itertuples()
        ],
    }


def _output_sentences(results: AuditResults) -> list[str]:
    agreement = results.tables.get("agreement")
    if agreement is None:
        return []
    out = []
    for r in agreement.to_dict("records"):
        axis, statement, rho = str(r["axis"]), str(r["statement"]), _num(r["rho"])
        if rho is None:
            out.append(f"Outputs vs latent lean on '{axis}': {statement}.")
            continue
        out.append(
            f"Outputs vs latent lean on '{axis}': {statement} (Spearman {rho:+.2f}, 95% "
            f"CI [{float(r['rho_ci_low']):+.2f}, {float(r['rho_ci_high']):+.2f}] across "
            f"{int(r['n_concepts'])} concepts, comparing the lean score with the share of images "
            f"read as '{r['positive_group']}')."
        )
    return out


def _defaults_sentences(results: AuditResults) -> list[str]:
    table = results.tables.get("defaults")
    if table is None or table.empty:
        return []
    out = []
    firsts = table[table["rank"] == 1]
    for axis, rows in firsts.groupby("axis", sort=False):
        counts = rows["group"].value_counts()
        group, count = str(counts.index[0]), int(counts.iloc[0])
        out.append(
            f"Defaults on '{axis}': for {count} of {len(rows)} concepts the unmarked prompt is "
            f"closest to its '{group}'-marked variant."
        )
    return out


def _descriptor_sentences(results: AuditResults) -> list[str]:
    table = results.tables.get("descriptors")
    axes = results["axes"]
    if table is None or table.empty:
        return []
    out = []
    for axis in axes[axes["n_groups"] > 2]["axis"]:
        firsts = table[(table["axis"] == axis) & (table["rank"] == 1)]
        counts = firsts["group"].value_counts()
        out.append(
            f"Descriptors on '{axis}': '{counts.index[0]}' ranks first for "
            f"{int(counts.iloc[0])} of {len(firsts)} concepts."
        )
    return out


def write_results(results: AuditResults, summary: dict[str, Any], out_dir: Path) -> None:
    """Write every table as parquet and the summary as JSON, each atomically."""
    for name, frame in results.tables.items():
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        write_bytes_atomic(out_dir / f"{name}.parquet", buffer.getvalue())
    write_json_atomic(out_dir / "summary.json", summary)


def read_results(out_dir: Path) -> tuple[AuditResults, dict[str, Any]]:
    """Read tables and summary back (refusing a newer schema)."""
    summary = read_versioned_json(
        out_dir / "summary.json", newest=RESULTS_SCHEMA_VERSION, kind="results summary"
    )
    results = AuditResults()
    for name in TABLE_NAMES:
        path = out_dir / f"{name}.parquet"
        if path.is_file():
            results.tables[name] = pd.read_parquet(path)
    return results, summary
