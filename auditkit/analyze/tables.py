"""Stage 5: tidy result tables from prompt latents (schema: docs/run-directory.md)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from auditkit.analyze.latents import LatentSet
from auditkit.analyze.measures import (
    AuditLayout,
    AxisLayout,
    ConceptLayout,
    ConceptMatrix,
    Lean,
    axis_direction,
    axis_parts,
    build_layout,
    concepts_of,
    cosine,
    group_means,
    leans_of,
    marked_pair,
    marked_position,
    reference,
    step_consistency,
)
from auditkit.analyze.resampled import Resampled
from auditkit.analyze.uncertainty import add_bootstrap_intervals
from auditkit.plan import AuditPlan, unique_prompts
from auditkit.rundir import REGISTRY
from auditkit.spec.audit import AuditSpec

ANALYSIS_TABLES = (
    "prompts",
    "axes",
    "lean",
    "steps",
    "step_agreement",
)
"""The tables :func:`~auditkit.analyze.tables.analyze` writes itself (the analysis slices'
come from their modules, the captioned outputs' too, the others of ``results/`` from the
discovery pass)."""


TABLE_COLUMNS: dict[str, list[str]] = {name: REGISTRY[name].required for name in ANALYSIS_TABLES}
"""Required columns of every analysis table, in order (the table registry declares them and
docs/run-directory.md shows them)."""


@dataclass
class AuditResults:
    """The result tables of one audit, by name (``lean``, ``axes``, ...)."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    samples: dict[str, np.ndarray] = field(default_factory=dict)
    """The bootstrap pass's resampled measures, by table ([resamples, rows, measures]); not
    written."""

    def __getitem__(self, name: str) -> pd.DataFrame:
        return self.tables[name]

    def __contains__(self, name: object) -> bool:
        return name in self.tables


def analyze(
    spec: AuditSpec,
    plan: AuditPlan,
    latents: LatentSet,
    *,
    extra: Mapping[str, pd.DataFrame] | None = None,
    statistics: Iterable[Resampled] = (),
) -> AuditResults:
    """The tables every audit has (``prompts``, ``axes``, ``step_agreement``), joined by
    ``extra``, the analysis slices' (:func:`auditkit.analyses.stage.analyze_audit`), then the
    one bootstrap pass, which adds the intervals of every table of ``statistics`` from the same
    resamples; their resampled measures stay in :attr:`AuditResults.samples`.
    """
    H = latents.means().astype(np.float64, copy=False)
    layout = build_layout(spec, latents.row_map())
    results = AuditResults()
    results.tables["prompts"] = _prompts_table(plan, latents, H)
    step_axes = _per_step_axes(latents, layout)
    results.tables["axes"] = _axes_table(H, layout, step_axes)
    if step_axes:
        results.tables["step_agreement"] = _step_agreement_table(latents, step_axes)
    results.tables.update(extra or {})
    stats = spec.statistics
    results.samples = add_bootstrap_intervals(
        results.tables,
        layout,
        latents,
        resamples=stats.bootstrap_resamples,
        seed=stats.seed,
        hierarchical=stats.resampling == "hierarchical",
        centred=stats.interval == "centred",
        statistics=list(statistics),
    )
    return results


def attribute_groups(spec: AuditSpec, readings: pd.DataFrame) -> dict[str, list[str]]:
    """Attributes the captioner read that an axis names: attribute -> the axis's groups.

    An axis and a captioner attribute match by name (axis ``gender`` <-> attribute ``gender``),
    and the axis's group names are the values the captioner writes ("man", "woman").
    """
    read = set(readings["attribute"].astype(str))
    return {a.name: list(a.groups) for a in spec.axes if a.name in read}


def captioned_shares(
    spec: AuditSpec, readings: pd.DataFrame
) -> tuple[pd.DataFrame, dict[str, list[str]], pd.DataFrame] | None:
    """The concept images' readings, the attributes an axis names (:func:`attribute_groups`)
    and the share of each concept's images read as each group (one image per unit); None when
    no concept image was read or no axis names an attribute read."""
    from auditkit.analyze.outputs import output_shares

    concept_rows = readings[readings["role"].astype(str) == "concept"]
    groups = attribute_groups(spec, concept_rows)
    if not groups or concept_rows.empty:
        return None
    # one image per unit (prompt x seed): several templates share a concept and a seed
    shares = output_shares(concept_rows.assign(seed=concept_rows["unit_id"]), groups)
    return concept_rows, groups, shares


def two_group_attributes(groups: Mapping[str, list[str]]) -> dict[str, str]:
    """The attributes of two-group axes, each mapped to its axis (they share the name)."""
    return {a: a for a, g in groups.items() if len(g) == 2}


def add_witness_columns(lean: pd.DataFrame, spec: AuditSpec, readings: pd.DataFrame) -> None:
    """Set each lean beside its images (:func:`auditkit.analyze.witness.add_witness`) where the
    captioner read the attribute of a two-group axis."""
    read = captioned_shares(spec, readings)
    if read is None:
        return
    two_group = two_group_attributes(read[1])
    if not lean.empty and two_group:
        from auditkit.analyze.witness import add_witness

        add_witness(lean, read[2], two_group)


def _prompts_table(plan: AuditPlan, latents: LatentSet, H: np.ndarray) -> pd.DataFrame:
    rows = latents.row_map()
    return pd.DataFrame(
        [
            {
                **p.record(),
                "n_seeds": len(latents.seeds),
                "latent_norm": float(np.linalg.norm(H[rows[p.prompt_id]])),
            }
            for p in unique_prompts(plan)
        ]
    )


def _per_step_axes(latents: LatentSet, layout: AuditLayout) -> dict[str, list[np.ndarray]]:
    """Per two-group axis, its direction at each kept step (empty with a single step)."""
    if len(latents.steps) < 2:
        return {}
    two_group = [axis for axis in layout.axes if axis.two_group]
    out: dict[str, list[np.ndarray]] = {axis.name: [] for axis in two_group}
    rows = sorted({r for a in two_group for t in a.groups.values() for rs in t for r in rs})
    for s in range(len(latents.steps)):
        # the axes' rows in float64; the other rows stay zero pages never written (so never
        # resident: a large audit's other prompts are most of H)
        means = np.zeros(latents.step_means[:, s].shape)
        means[rows] = latents.step_means[rows, s]
        for axis in two_group:
            out[axis.name].append(axis_direction(means, axis))
    return out


def _axes_table(
    H: np.ndarray, layout: AuditLayout, step_axes: dict[str, list[np.ndarray]]
) -> pd.DataFrame:
    records = []
    for axis in layout.axes:
        two = axis.two_group
        norm = float(np.linalg.norm(axis_direction(H, axis))) if two else 0.0
        per_step = step_axes.get(axis.name)
        consistency = step_consistency(per_step) if per_step else float("nan")
        records.append(
            {
                "axis": axis.name,
                "groups": ",".join(axis.group_names),
                "n_groups": len(axis.group_names),
                "positive_group": axis.group_names[0] if two else "",
                "negative_group": axis.group_names[1] if two else "",
                "norm": norm,
                "n_prompts": sum(len(r) for rows in axis.groups.values() for r in rows),
                "step_consistency": consistency,
            }
        )
    return pd.DataFrame(records)


def _step_agreement_table(
    latents: LatentSet, step_axes: dict[str, list[np.ndarray]]
) -> pd.DataFrame:
    """Per two-group axis: the cosine between the axes computed from each pair of kept steps
    (the full matrix, diagonal included; step_consistency in axes.parquet is its mean off the
    diagonal)."""
    steps = list(zip(latents.steps, latents.timesteps, strict=True))
    records = [
        {
            "axis": name,
            "step_a": int(step_a),
            "step_b": int(step_b),
            "timestep_a": float(t_a),
            "timestep_b": float(t_b),
            "cosine": cosine(per_step[i], per_step[j]),
        }
        for name, per_step in step_axes.items()
        for i, (step_a, t_a) in enumerate(steps)
        for j, (step_b, t_b) in enumerate(steps)
    ]
    return pd.DataFrame(records, columns=TABLE_COLUMNS["step_agreement"])


def lean_table(H: np.ndarray, layout: AuditLayout, n_seeds: int) -> pd.DataFrame:
    """The lean rows of prompt latents ``H`` (one per two-group axis and concept; columns of
    lean.parquet without the optional ones, and ``marked_position``: NaN where the axis has no
    marked prompts)."""
    records = []
    positions = []
    for axis, cset, concept, result in _all_leans(H, layout):
        pos, neg = axis.group_names[:2]
        pair = marked_pair(layout, axis.name, cset.name, (pos, neg), concept)
        positions.append(
            float("nan") if pair is None else marked_position(H, cset.terms[concept], *pair)
        )
        records.append(
            {
                "axis": axis.name,
                "concept_set": cset.name,
                "concept": concept,
                "positive_group": pos,
                "negative_group": neg,
                "cosine": result.cosine,
                "projection": result.projection,
                "score": result.score,
                "toward": pos if result.score >= 0 else neg,
                "n_seeds": n_seeds,
            }
        )
    table = pd.DataFrame(records, columns=TABLE_COLUMNS["lean"])
    table["marked_position"] = np.asarray(positions, dtype=np.float64)
    return table


def _all_leans(
    H: np.ndarray, layout: AuditLayout
) -> Iterator[tuple[AxisLayout, ConceptLayout, str, Lean]]:
    """(axis, concept set, concept, lean) for every two-group axis and concept, in spec
    order: each set's latents and reference and each axis's parts worked out once."""
    sets = [(cset, reference(H, layout, cset), concepts_of(H, cset)) for cset in layout.concepts]
    axes = [
        (axis, axis_parts(group_means(H, axis), axis.group_names))
        for axis in layout.axes
        if axis.two_group
    ]
    for _cset, _ref, latents in sets:
        if isinstance(latents, ConceptMatrix):  # every axis's products in one pass over H
            latents.project([parts.g for _axis, parts in axes])
    for axis, parts in axes:
        for cset, ref, latents in sets:
            for concept, result in leans_of(latents, ref, parts):
                yield axis, cset, concept, result


def steps_table(latents: LatentSet, layout: AuditLayout) -> pd.DataFrame:
    records = []
    for s, (step, timestep) in enumerate(zip(latents.steps, latents.timesteps, strict=True)):
        Hs = latents.step_means[:, s].astype(np.float64)
        records += [
            {
                "axis": axis.name,
                "concept_set": cset.name,
                "concept": concept,
                "step": int(step),
                "timestep": float(timestep),
                "score": result.score,
            }
            for axis, cset, concept, result in _all_leans(Hs, layout)
        ]
    return pd.DataFrame(records, columns=TABLE_COLUMNS["steps"])
