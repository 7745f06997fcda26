"""Open-vocabulary discovery: which words from the captions does the model's latent space tie
to each concept and to each end of an axis?

Discovery is a pass (:mod:`auditkit.passes.discovery`): it mines terms from the captions of the
concept prompts' images, runs each term as a prompt through the model and ranks the terms by
how well their centred latents align with each concept and each two-group axis, writing this
slice's tables (``results/discovery.parquet``, ``results/discovered_terms.parquet``, declared in
``discovery.tables.yaml`` beside this module). It
runs when the spec has ``captions.discovery``, not under ``analyses:``. This slice turns the
ranking into the summary's ``discovery`` block, its findings and the report's section.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from auditkit.analyses import base as api

if TYPE_CHECKING:
    import pandas as pd

    from auditkit.spec.audit import AuditSpec

NAME = "discovery"
TABLES = api.declared_tables(__name__)


class Discovery(api.Analysis):
    name = NAME
    title = "Discovered associations"
    after = "causal"
    summary_key = NAME
    summary_optional = True
    tables = TABLES
    statistic = "the cosine of each mined term's centred latent with a concept's or an axis's"
    gate_metrics: tuple[api.GateMetric, ...] = ()
    """None: the ranking orders words the captions happened to contain; no bound on it makes
    a meaningful gate."""

    def applies(self, spec: AuditSpec) -> bool:
        return spec.captions is not None and spec.captions.discovery is not None

    def build(self, ctx: api.AnalysisContext) -> dict[str, pd.DataFrame]:
        """Nothing: discovery's tables are written by its pass (:mod:`auditkit.passes.discovery`),
        which extracts the mined terms' prompts through the pipeline; the analysis stage reads
        them back for the summary and report."""
        return {}

    def summary(self, spec: AuditSpec, tables: api.Tables) -> dict[str, Any] | None:
        from auditkit.analyze.discovery import discovery_records

        discovery = tables.get(NAME)
        return None if discovery is None else discovery_records(discovery, _axis_groups(spec))

    def findings(self, spec: AuditSpec, tables: api.Tables) -> list[str]:
        from auditkit.analyze.discovery import discovery_sentences

        return discovery_sentences(tables.get(NAME), _axis_groups(spec))

    def section(self, ctx: api.SectionContext) -> dict[str, Any] | None:
        return discovery_section(ctx)


def _axis_groups(spec: AuditSpec) -> dict[str, list[str]]:
    return {a.name: list(a.groups) for a in spec.axes}


def _term_rows(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Discovered terms for a table: text, cosine, its interval and captions containing it."""
    from auditkit.analyses.values import clear_of_zero, finite

    out = []
    for row in rows.to_dict("records"):
        low, high = finite(row["cosine_ci_low"]), finite(row["cosine_ci_high"])
        out.append(
            {
                "term": str(row["term"]),
                "rank": int(row["rank"]),
                "count": int(row["count"]),
                "cosine": finite(row["cosine"]),
                "ci_low": low,
                "ci_high": high,
                "clear_of_zero": clear_of_zero(low, high),
            }
        )
    return out


def discovery_section(ctx: api.SectionContext) -> dict[str, Any] | None:
    """Open-vocabulary discovery: the top mined terms per concept and at each axis end."""
    from auditkit.analyze.discovery import axis_blocks, concept_tops

    spec, discovery = ctx.spec, ctx.tables.get(NAME)
    if discovery is None:
        return None
    template = None
    if spec.captions is not None and spec.captions.discovery is not None:
        from auditkit.passes.discovery import discovery_template

        template = discovery_template(spec)
    concepts = [
        {"concept_set": cset, "concept": concept, "terms": _term_rows(top)}
        for cset, concept, top in concept_tops(discovery)
    ]
    axes = []
    for ends in axis_blocks(discovery, _axis_groups(spec)):
        first, second = _term_rows(ends.first), _term_rows(ends.second)
        axes.append(
            {
                "concept_set": ends.concept_set,
                "axis": ends.axis,
                "positive_group": ends.positive_group,
                "negative_group": ends.negative_group or "the second group",
                "rows": [
                    {
                        "first": first[i] if i < len(first) else None,
                        "second": second[i] if i < len(second) else None,
                    }
                    for i in range(max(len(first), len(second)))
                ],
            }
        )
    intervals = bool(discovery[["cosine_ci_low", "cosine_ci_high"]].notna().all(axis=1).any())
    return {
        "n_terms": int(discovery["term"].nunique()),
        "template": template,
        "intervals": intervals,
        "several_sets": int(discovery["concept_set"].nunique()) > 1,
        "concepts": concepts,
        "axes": axes,
    }


ANALYSIS = Discovery()
