"""Exemplar images: thumbnails of some captioned images, shown as the report's image grids.

The captioning stage (:mod:`auditkit.caption.thumbnails`) keeps a thumbnail of every captioned
unit of the first ``captions.exemplars.seeds`` seeds and writes this slice's table
(``captions/exemplars.parquet``, declared in ``exemplars.tables.yaml`` beside this module). It
runs with a ``captions:`` section, not under ``analyses:``. This slice declares that table and
builds the report's "Exemplar images" section from it
(:mod:`auditkit.analyses.exemplars_section`); the images are examples, not evidence, so it adds
no summary block, finding or gate metric.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from auditkit.analyses import base as api

if TYPE_CHECKING:
    import pandas as pd

    from auditkit.spec.audit import AuditSpec

NAME = "exemplars"
[TABLE] = api.declared_tables(__name__)


class Exemplars(api.Analysis):
    name = NAME
    title = "Exemplar images"
    after = "outputs"
    tables = (TABLE,)
    statistic = "none: example images with what the captioner read in each, not evidence"
    gate_metrics = ()

    def applies(self, spec: AuditSpec) -> bool:
        return spec.captions is not None

    def build(self, ctx: api.AnalysisContext) -> dict[str, pd.DataFrame]:
        """Nothing: the captioning stage writes the exemplars table; the analysis stage reads
        it back."""
        return {}

    def summary(self, spec: AuditSpec, tables: api.Tables) -> dict[str, Any] | None:
        return None  # summary.json has no exemplars block

    def findings(self, spec: AuditSpec, tables: api.Tables) -> list[str]:
        return []

    def section(self, ctx: api.SectionContext) -> dict[str, Any] | None:
        from auditkit.analyses.exemplars_section import exemplar_section

        return exemplar_section(ctx)


ANALYSIS = Exemplars()
