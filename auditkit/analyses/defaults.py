"""Defaults: which group's marked variant an unmarked prompt is closest to.

For every axis with ``defaults`` on and every concept, the unmarked prompt ("a photo of a
doctor") is compared with its variants marked with each group ("a photo of a man doctor"): the
cosine of their centred latents, averaged over the concept set's templates. The closest group is
the model's default for that concept, and the margin is how much closer it is than the runner-up;
its 95% interval says whether the default flips in some resamples. The marked prompts are the
slice's own (:meth:`Defaults.prompts`): the plan adds them after the concepts'.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from auditkit.analyses import base as api
from auditkit.analyses.values import most_often_first
from auditkit.analyze.resampled import Resampled

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from auditkit.analyze.uncertainty import Resamples
    from auditkit.spec.audit import AuditSpec

NAME = "defaults"
[TABLE] = api.declared_tables(__name__)


def defaults_table(ctx: api.AnalysisContext) -> pd.DataFrame:
    """One row per (axis with ``defaults``, concept, group), the groups in rank order."""
    import pandas as pd

    from auditkit.analyze.measures import default_cosines, ranked_groups, reference
    from auditkit.spec.vocabulary import fill

    spec, layout, H = ctx.spec, ctx.layout, ctx.H
    records = []
    axis_specs = {a.name: a for a in spec.analysis_axes}
    for axis in layout.axes:
        axis_spec = axis_specs[axis.name]
        if not axis_spec.defaults:
            continue
        for cset in layout.concepts:
            ref = reference(H, layout, cset)
            template = next(cs.templates[0] for cs in spec.concepts if cs.name == cset.name)
            for concept, unmarked in cset.terms.items():
                marked = {
                    g: layout.marked[(axis.name, cset.name, g, concept)] for g in axis.group_names
                }
                key = {"axis": axis.name, "concept_set": cset.name, "concept": concept}
                ranked = ranked_groups(key, default_cosines(H, unmarked, marked, ref))
                margin = ranked[0]["cosine"] - ranked[1]["cosine"]
                for row in ranked:
                    marked_prompt = fill(template, f"{axis_spec.marker(row['group'])} {concept}")
                    records.append({**row, "marked_prompt": marked_prompt, "margin": margin})
    return pd.DataFrame(records, columns=TABLE.required)


def defaults_samples(frame: pd.DataFrame, draw: Resamples) -> np.ndarray:
    """Per row: the resampled cosine of the group's marked variant, and the resampled margin
    of the concept's point-estimate default (rank 1) over the best other group, which turns
    negative in resamples where the default flips. With resampled wording the mean over the
    concept set's templates uses the resampled template weights."""
    import numpy as np

    from auditkit.analyze.gram import centred_cosine, template_key
    from auditkit.analyze.resampled_measures import template_mean

    layout, basis, Q, wording = draw.layout, draw.basis, draw.Q, draw.wording
    out = np.empty((Q.shape[0], len(frame), 2))
    cosines: dict[tuple[str, str, str, str], np.ndarray] = {}
    sets = {c.name: c for c in layout.concepts}
    for row in frame.itertuples():
        key = (str(row.axis), str(row.concept_set), str(row.group), str(row.concept))
        cset = sets[key[1]]
        unmarked = cset.terms[key[3]]
        ref = basis[("ref", key[1])]
        per_template = np.stack(
            [
                centred_cosine(Q, basis[("row", str(u))], basis[("row", str(m))], ref)
                for u, m in zip(unmarked, layout.marked[key], strict=True)
            ],
            axis=-1,
        )  # [B, T]
        tkey = template_key(cset.templates) if cset.templates else ""
        cosines[key] = template_mean(per_template, wording, tkey)
    groups: dict[tuple[str, str, str], list[str]] = {}
    firsts: dict[tuple[str, str, str], str] = {}
    for row in frame.itertuples():
        concept_key = (str(row.axis), str(row.concept_set), str(row.concept))
        groups.setdefault(concept_key, []).append(str(row.group))
        if int(str(row.rank)) == 1:
            firsts[concept_key] = str(row.group)
    for i, row in enumerate(frame.itertuples()):
        axis, set_name, concept = str(row.axis), str(row.concept_set), str(row.concept)
        out[:, i, 0] = cosines[(axis, set_name, str(row.group), concept)]
        first = firsts[(axis, set_name, concept)]
        others = [
            cosines[(axis, set_name, g, concept)]
            for g in groups[(axis, set_name, concept)]
            if g != first
        ]
        best_other = np.max(np.stack(others), axis=0) if others else np.zeros(Q.shape[0])
        out[:, i, 1] = cosines[(axis, set_name, first, concept)] - best_other
    return out


class Defaults(api.Analysis):
    name = NAME
    title = "Defaults"
    after = "lean_by_step"
    tables = (TABLE,)
    statistic = (
        "the cosine of each marked variant with the unmarked prompt, and the default's margin "
        "over the best other group"
    )
    resampled = (Resampled(NAME, ("cosine", "margin"), defaults_samples),)

    def prompts(self, spec: AuditSpec) -> list[api.SlicePrompt]:
        """Every concept marked with each group of every axis with ``defaults`` on ("a photo of
        a woman doctor", role ``marked``, set ``axis/concept set``), keyed (axis, concept set,
        group, concept): one prompt per template of the set."""
        from auditkit.spec.vocabulary import fill

        out = []
        for axis in (a for a in spec.analysis_axes if a.defaults):
            for cset in spec.concepts:
                for group in axis.groups:
                    marker = axis.marker(group)
                    for template in cset.templates:
                        for term in cset.terms:
                            prompt = api.PlannedPrompt.of(
                                fill(template, f"{marker} {term}"),
                                "marked",
                                f"{axis.name}/{cset.name}",
                                group,
                                term,
                                template,
                            )
                            out.append(api.SlicePrompt((axis.name, cset.name, group, term), prompt))
        return out

    def prompt_count(self, spec: AuditSpec) -> int:
        groups = sum(len(axis.groups) for axis in spec.axes if axis.defaults)  # crossings: off
        return groups * sum(len(c.templates) * len(c.terms) for c in spec.concepts)

    def build(self, ctx: api.AnalysisContext) -> dict[str, pd.DataFrame]:
        return {NAME: defaults_table(ctx)}

    def summary(self, spec: AuditSpec, tables: api.Tables) -> dict[str, Any] | None:
        return None  # the findings say it; summary.json has no defaults block

    def findings(self, spec: AuditSpec, tables: api.Tables) -> list[str]:
        table = tables.get(NAME)
        if table is None or table.empty:
            return []
        out = []
        firsts = table[table["rank"] == 1]
        for axis, rows in firsts.groupby("axis", sort=False):
            group, count, n = most_often_first(rows)
            out.append(
                f"Defaults on '{axis}': for {count} of {n} concepts the unmarked prompt "
                f"is closest to its '{group}'-marked variant."
            )
        return out

    def section(self, ctx: api.SectionContext) -> dict[str, Any] | None:
        from auditkit import charts

        return ctx.axis_sections(
            NAME, charts.defaults_chart, _axis_rows, ("margin", "margins of the default group")
        )


def _axis_rows(part: pd.DataFrame, groups: list[str]) -> dict[str, Any]:
    """One axis's report rows: per concept, its default, margin and cosine with each group."""
    from auditkit.analyses.values import finite

    wide = part.pivot_table(
        index=["concept_set", "concept"], columns="group", values="cosine", sort=False
    ).to_dict("index")  # (concept set, concept) -> {group: cosine}
    firsts = part[part["rank"] == 1].set_index(["concept_set", "concept"])
    rows = []
    for index_key, first in firsts.sort_values("margin", ascending=False).iterrows():
        key = cast("tuple[str, str]", index_key)  # (concept set, concept)
        rows.append(
            {
                "concept_set": key[0],
                "concept": key[1],
                "default": str(first["group"]),
                "margin": finite(first["margin"]),
                "cosines": [finite(wide[key].get(g)) for g in groups],
            }
        )
    return {"rows": rows}


def _worst_default(worst: pd.Series) -> str:
    return (
        f"'{worst['concept']}' defaults to '{worst['group']}' on '{worst['axis']}' "
        f"(margin {float(worst['margin']):.3f})"
    )


Defaults.gate_metrics = (
    api.GateMetric(
        "max_default_margin",
        "max",
        "the largest margin by which an unmarked concept is closer to its default group's marked "
        "variant than to the runner-up's (defaults.parquet; optionally one axis or set)",
        api.largest(NAME, "margin", _worst_default, lambda t: t["rank"] == 1),
    ),
)

ANALYSIS = Defaults()
