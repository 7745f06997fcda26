"""Descriptor ranking: which group of an axis each concept is most aligned with.

For every axis (two groups or more) and every concept, the cosine between the concept's centred
latent and each group's centred latent (the mean over the group's prompts), ranked. It is the
analysis for k-way axes, where a single lean score does not apply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from auditkit.analyses import base as api
from auditkit.analyses.values import most_often_first
from auditkit.analyze.resampled import Resampled

if TYPE_CHECKING:
    from collections.abc import Iterator

    import numpy as np
    import pandas as pd

    from auditkit.analyze.measures import ConceptMatrix
    from auditkit.analyze.uncertainty import Resamples
    from auditkit.spec.audit import AuditSpec
    from auditkit.spec.gates import GateSpec

NAME = "descriptors"
[TABLE] = api.declared_tables(__name__)


def descriptors_table(ctx: api.AnalysisContext) -> pd.DataFrame:
    """One row per (axis, concept, group), the groups in rank order."""
    import pandas as pd

    from auditkit.analyze.measures import concepts_of, group_means, ranked_groups, reference

    layout, H = ctx.layout, ctx.H
    records = []
    sets = [(cset, reference(H, layout, cset), concepts_of(H, cset)) for cset in layout.concepts]
    for axis in layout.axes:
        means = group_means(H, axis)
        for cset, ref, latents in sets:
            for concept, sims in _group_cosines(latents, ref, means, axis.group_names):
                key = {"axis": axis.name, "concept_set": cset.name, "concept": concept}
                records.extend(ranked_groups(key, sims))
    return pd.DataFrame(records, columns=TABLE.required)


def _group_cosines(
    latents: dict[str, np.ndarray] | ConceptMatrix,
    ref: np.ndarray,
    means: dict[str, np.ndarray],
    groups: tuple[str, ...],
) -> Iterator[tuple[str, dict[str, float]]]:
    """(concept, {group: cosine of the centred concept with the centred group}) for
    :func:`~auditkit.analyze.measures.concepts_of`'s latents (a large set as matrix products)."""
    import numpy as np

    from auditkit.analyze.measures import cosine

    if isinstance(latents, dict):
        for concept, vec in latents.items():
            yield concept, {g: cosine(vec - ref, means[g] - ref) for g in groups}
        return
    lengths = latents.centred_norms(ref)
    columns = {}
    for g in groups:
        direction = means[g] - ref
        scale = lengths * float(np.linalg.norm(direction))
        dots = latents.centred_products(ref, direction)
        columns[g] = np.divide(dots, scale, out=np.zeros_like(dots), where=scale > 0)
    for i, concept in enumerate(latents.names):
        yield concept, {g: float(columns[g][i]) for g in groups}


def descriptor_samples(frame: pd.DataFrame, draw: Resamples) -> np.ndarray:
    """Per row: the resampled cosine of the concept with the group."""
    from auditkit.analyze.resampled_measures import cosine_samples

    return cosine_samples(
        draw, frame, ("concept", "concept_set", "concept"), ("group", "axis", "group")
    )


class Descriptors(api.Analysis):
    name = NAME
    title = "Descriptor ranking"
    after = "defaults"
    tables = (TABLE,)
    statistic = "the cosine of each concept with each group of an axis"
    resampled = (Resampled(NAME, ("cosine",), descriptor_samples),)

    def build(self, ctx: api.AnalysisContext) -> dict[str, pd.DataFrame]:
        return {NAME: descriptors_table(ctx)}

    def summary(self, spec: AuditSpec, tables: api.Tables) -> dict[str, Any] | None:
        return None  # the findings say it; summary.json has no descriptors block

    def findings(self, spec: AuditSpec, tables: api.Tables) -> list[str]:
        """For each axis of more than two groups, the group that ranks first most often."""
        table, axes = tables.get(NAME), tables.get("axes")
        if table is None or table.empty or axes is None:
            return []
        out = []
        for axis in axes[axes["n_groups"] > 2]["axis"]:
            group, count, n = most_often_first(
                table[(table["axis"] == axis) & (table["rank"] == 1)]
            )
            out.append(
                f"Descriptors on '{axis}': '{group}' ranks first for {count} of {n} concepts."
            )
        return out

    def section(self, ctx: api.SectionContext) -> dict[str, Any] | None:
        from auditkit import charts

        return ctx.axis_sections(
            NAME, charts.descriptor_heatmap, _axis_rows, ("cosine", "cosines with a group")
        )


def _axis_rows(part: pd.DataFrame, groups: list[str]) -> dict[str, Any]:
    """One axis's report rows: per concept, the groups by rank with their cosines (and
    intervals, where the table has them)."""
    from auditkit import charts
    from auditkit.analyses.values import finite

    intervals = charts.has_interval(part, "cosine")
    keys = ["concept_set", "concept"]
    ranked = part.assign(_concept=part.groupby(keys, sort=False).ngroup())
    ranked = ranked.sort_values(["_concept", "rank"], kind="stable")
    fields = ["cosine", "cosine_ci_low", "cosine_ci_high"] if intervals else ["cosine"]
    by_concept: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    columns = [ranked[c].tolist() for c in [*keys, "group", *fields]]
    for cset, concept, group, *values in zip(*columns, strict=True):
        by_concept.setdefault((cset, concept), []).append(
            {
                "group": str(group),
                "cosine": finite(values[0]),
                "ci_low": finite(values[1]) if intervals else None,
                "ci_high": finite(values[2]) if intervals else None,
            }
        )
    rows = [
        {"concept_set": cset, "concept": concept, "ranking": ranking}
        for (cset, concept), ranking in by_concept.items()
    ]
    return {"rows": rows, "intervals": intervals}


def _max_descriptor_spread(gate: GateSpec, tables: api.Tables) -> tuple[float | None, str]:
    rows, why = api.scoped_rows(tables, NAME, gate)
    if rows is None:
        return None, why
    keys = ["axis", "concept_set", "concept"]
    cosines = rows.groupby(keys, sort=False)["cosine"]
    spread = (cosines.transform("max") - cosines.transform("min")).to_numpy()
    worst = rows.iloc[int(spread.argmax())]
    block = rows[(rows[keys] == worst[keys]).all(axis=1)].sort_values("rank")
    first, last = block.iloc[0], block.iloc[-1]
    return float(spread.max()), (
        f"'{worst['concept']}' on '{worst['axis']}': '{first['group']}' "
        f"({float(first['cosine']):+.3f}) against '{last['group']}' ({float(last['cosine']):+.3f})"
    )


Descriptors.gate_metrics = (
    api.GateMetric(
        "max_descriptor_spread",
        "max",
        "the largest gap between a concept's most and least aligned group of an axis "
        "(descriptors.parquet; optionally one axis or set)",
        _max_descriptor_spread,
    ),
)

ANALYSIS = Descriptors()
