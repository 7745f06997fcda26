"""What the model draws: the captioner's reading of the concept prompts' images.

With a ``captions:`` section (not by ``analyses:``), the share of each concept's images read as
each group of an axis's attribute, with Wilson intervals, against the reference distribution
(``outputs``); whether those shares rank the concepts as the latent leans do (``agreement``);
and with the guidance sweep's readings, the shares at every scale (``guidance``) and how far
more guidance draws them from the reference (``amplification``). The numbers are computed in
:mod:`auditkit.analyze.outputs` and :mod:`auditkit.analyze.guidance`; the lean table's image
shares and witness stay with the lean table (:func:`auditkit.analyze.tables.analyze`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from auditkit.analyses import base as api
from auditkit.analyze.stats import number_columns, summary_number

if TYPE_CHECKING:
    import pandas as pd

    from auditkit.spec.audit import AuditSpec
    from auditkit.spec.gates import GateSpec

NAME = "outputs"
CORRECTED_NOTE = ", corrected for the captioner's measured errors"
TABLES = api.declared_tables(__name__)


class Outputs(api.Analysis):
    name = NAME
    title = "What the model draws"
    after = "similarity"
    tables = TABLES
    statistic = (
        "the share of a concept's images read as each group (Wilson interval); Spearman's rho of "
        "lean and share across concepts, and the guidance amplification (concept resamples)"
    )
    summary_key = NAME

    def applies(self, spec: AuditSpec) -> bool:
        return spec.captions is not None

    def build(self, ctx: api.AnalysisContext) -> dict[str, pd.DataFrame]:
        """``outputs``: per concept and group, the share of images read as the group against
        the reference; with the guidance sweep's readings, ``guidance`` and ``amplification``;
        with the lean analysis, ``agreement``: latent lean vs output share, per axis."""
        from auditkit.analyze.outputs import agreement, compare_to_reference
        from auditkit.analyze.tables import captioned_shares, lean_table, two_group_attributes

        spec, swept = ctx.spec, ctx.swept
        read = None if ctx.readings is None else captioned_shares(spec, ctx.readings)
        if read is None or spec.captions is None:
            return {}
        concept_rows, groups, shares = read
        reference = {a: spec.captions.reference.get(a, "uniform") for a in groups}
        tables = {"outputs": compare_to_reference(shares, reference)}
        resamples = spec.statistics.bootstrap_resamples or 1000  # over concepts: always on
        calibrated = spec.captions.calibration is not None
        if calibrated:
            from auditkit.analyze.confusion import correct_output_shares

            tables["outputs"] = correct_output_shares(
                tables["outputs"], ctx.reader, resamples=resamples, seed=spec.statistics.seed
            )
        if swept is not None and not swept.empty:
            from auditkit.analyze.guidance import amplification, guidance_shares

            swept_concepts = swept[swept["role"].astype(str) == "concept"]
            tables["guidance"] = guidance_shares(
                concept_rows, swept_concepts, groups, reference, spec.model.guidance_scale
            )
            tables["amplification"] = amplification(
                tables["guidance"], resamples=resamples, seed=spec.statistics.seed
            )
        two_group = two_group_attributes(groups)
        if "lean" in spec.analyses and two_group:
            lean = lean_table(ctx.H, ctx.layout, len(ctx.latents.seeds))
            if not lean.empty:
                basis_shares = corrected_basis(tables["outputs"]) if calibrated else shares
                found = agreement(
                    lean, basis_shares, two_group, resamples=resamples, seed=spec.statistics.seed
                )
                if calibrated:
                    basis = basis_shares.groupby("attribute")["share_basis"].agg(
                        lambda b: "corrected" if (b == "corrected").all() else "raw"
                    )
                    found["share_basis"] = found["attribute"].map(basis).fillna("raw")
                tables["agreement"] = found
        return tables

    def summary(self, spec: AuditSpec, tables: api.Tables) -> dict[str, Any] | None:
        return output_records(tables)

    def findings(self, spec: AuditSpec, tables: api.Tables) -> list[str]:
        return output_sentences(tables)

    def section(self, ctx: api.SectionContext) -> dict[str, Any] | None:
        from auditkit.analyses.outputs_section import output_sections

        return output_sections(ctx)

    def toc(self, data: dict[str, Any]) -> list[tuple[str, str]]:
        return [("guidance", "Guidance amplification")] if data.get("guidance") else []


def corrected_basis(outputs: pd.DataFrame) -> pd.DataFrame:
    """The outputs table as the summary, gates, agreement and report read it: where the spec
    has a calibration, each attribute's corrected shares (interval, difference and largest gap)
    in place of the raw ones when every concept of the attribute was corrected; an attribute
    with any concept left raw keeps raw shares throughout (one basis per attribute).
    ``share_basis`` says which. A table without a calibration is returned as it is."""
    import numpy as np

    if "share_basis" not in outputs.columns:
        return outputs
    corrected = outputs.groupby("attribute")["share_basis"].transform(
        lambda b: bool((b == "corrected").all())
    )
    out = outputs.copy()
    use = corrected.astype(bool).to_numpy()
    for raw, fixed in (
        ("share", "corrected"),
        ("share_low", "corrected_low"),
        ("share_high", "corrected_high"),
        ("difference", "corrected_difference"),
        ("max_abs_gap", "max_abs_gap_corrected"),
    ):
        if raw in out.columns:
            out.loc[use, raw] = out.loc[use, fixed]
    out["share_basis"] = np.where(use, "corrected", "raw")
    return out


def basis_note(rows: pd.DataFrame) -> str:
    """:data:`CORRECTED_NOTE` when ``rows`` (of
    :func:`corrected_basis`) are all corrected, else ""."""
    if "share_basis" in rows.columns and len(rows) and (rows["share_basis"] == "corrected").all():
        return CORRECTED_NOTE
    return ""


def output_records(tables: api.Tables) -> dict[str, Any] | None:
    """Output-level numbers (captioned shares vs reference, and agreement), when captioned."""
    outputs = tables.get("outputs")
    if outputs is None:
        return None
    outputs = corrected_basis(outputs)
    agreement = tables.get("agreement")
    amplified = tables.get("amplification")
    per_concept = outputs.drop_duplicates(["concept_set", "concept", "attribute"])
    records: dict[str, Any] = {
        "largest_gap": [
            {
                "attribute": r.attribute,
                "concept_set": r.concept_set,
                "concept": r.concept,
                "group": r.max_gap_group,
                "gap": summary_number(r.max_abs_gap),
                "kl_bits": summary_number(r.kl_bits),
                **({"basis": str(r.share_basis)} if "share_basis" in outputs.columns else {}),
            }
            for r in per_concept.sort_values("max_abs_gap", ascending=False).itertuples()
        ],
        "agreement": []
        if agreement is None
        else [
            {
                "axis": r.axis,
                "rho": summary_number(r.rho),
                "rho_ci": [summary_number(r.rho_ci_low), summary_number(r.rho_ci_high)],
                "n_concepts": int(str(r.n_concepts)),
                "statement": str(r.statement),
                **({"basis": str(r.share_basis)} if "share_basis" in agreement.columns else {}),
            }
            for r in agreement.itertuples()
        ],
    }
    if amplified is not None:
        from auditkit.analyze.guidance import AMPLIFICATION_NUMBERS, amplification_verdict

        records["amplification"] = [
            {
                "attribute": str(r["attribute"]),
                **number_columns(r, AMPLIFICATION_NUMBERS),
                "amplification_ci": [
                    summary_number(r["amplification_ci_low"]),
                    summary_number(r["amplification_ci_high"]),
                ],
                "n_concepts": int(r["n_concepts"]),
                "statement": amplification_verdict(r),
            }
            for r in amplified.to_dict("records")
        ]
    return records


def output_sentences(tables: api.Tables) -> list[str]:
    """The findings: agreement per axis, and the guidance amplification."""
    agreement = tables.get("agreement")
    out = []
    for r in [] if agreement is None else agreement.to_dict("records"):
        axis, statement, rho = str(r["axis"]), str(r["statement"]), summary_number(r["rho"])
        if rho is None:
            out.append(f"Outputs vs latent lean on '{axis}': {statement}.")
            continue
        out.append(
            f"Outputs vs latent lean on '{axis}': {statement} (Spearman {rho:+.2f}, 95% "
            f"CI [{float(r['rho_ci_low']):+.2f}, {float(r['rho_ci_high']):+.2f}] across "
            f"{int(r['n_concepts'])} concepts, comparing the lean score with the share of images "
            f"read as '{r['positive_group']}'"
            f"{CORRECTED_NOTE if r.get('share_basis') == 'corrected' else ''})."
        )
    amplified = tables.get("amplification")
    if amplified is not None:
        from auditkit.analyze.guidance import amplification_sentence

        out.extend(amplification_sentence(r) for r in amplified.to_dict("records"))
    return out


def _in_scope(gate: GateSpec, table: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``table`` a gate scopes: its axis, attribute and concept set, each where
    the table has the column."""
    rows = table
    for column, value in (
        ("axis", gate.axis),
        ("attribute", gate.attribute),
        ("concept_set", gate.concept_set),
    ):
        if value is not None and column in rows.columns:
            rows = rows[rows[column].astype(str) == value]
    return rows


def _max_output_gap(gate: GateSpec, tables: api.Tables) -> tuple[float | None, str]:
    table = tables.get("outputs")
    if table is None or table.empty:
        return None, "the run has no captioned outputs (add a captions: section)"
    rows = _in_scope(gate, corrected_basis(table))
    if rows.empty:
        return None, "no output rows in scope"
    worst = rows.iloc[int(rows["max_abs_gap"].to_numpy().argmax())]
    corrected = "share_basis" in rows.columns and worst["share_basis"] == "corrected"
    return float(worst["max_abs_gap"]), (
        f"'{worst['concept']}': the share of images read as '{worst['max_gap_group']}' "
        f"({worst['attribute']}) is {float(worst['max_abs_gap']):.3f} off the reference"
        + (CORRECTED_NOTE if corrected else "")
    )


def _min_agreement(gate: GateSpec, tables: api.Tables) -> tuple[float | None, str]:
    table = tables.get("agreement")
    if table is None or table.empty:
        return None, "the run has no agreement table (add a captions: section)"
    rows = _in_scope(gate, table)
    if rows.empty:
        return None, f"no agreement row for axis '{gate.axis}'"
    rho, statement = float(rows["rho"].iloc[0]), rows["statement"].iloc[0]
    if math.isnan(rho):
        return None, f"agreement on '{gate.axis}' is undefined ({statement})"
    return rho, f"Spearman {rho:+.3f} ({statement})"


Outputs.gate_metrics = (
    api.GateMetric(
        "max_output_gap",
        "max",
        "the largest gap between the share of a concept's images read as a group and its "
        "reference (outputs.parquet; optionally one attribute or set)",
        _max_output_gap,
    ),
    api.GateMetric(
        "min_agreement",
        "min",
        "the Spearman agreement of latent leans and output shares on one axis "
        "(agreement.parquet; needs axis)",
        _min_agreement,
    ),
)

ANALYSIS = Outputs()
