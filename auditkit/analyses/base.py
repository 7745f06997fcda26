"""What an analysis slice declares, in one place, and what it is given.

An :class:`Analysis` is one vertical slice: its spec name (listed under ``analyses:``), the
prompts it needs besides the axes' and concepts' (planned with them), its tables (declared
in ``<name>.tables.yaml`` beside its module and registered with the run directory's table
registry by :func:`declared_tables`, so docs and readers know them), its table builder
with its bootstrap statistic, its summary block and findings, its gate metrics, and its report
section (a context builder and its charts; the template partial is
``templates/sections/<name>.html.j2``). :mod:`auditkit.analyses` lists the slices, with the
report's other sections, in the one ordered list the report follows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from auditkit.analyze.resampled import Resampled
from auditkit.plan import PlannedPrompt, SlicePrompt
from auditkit.rundir import REGISTRY, Table

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from auditkit.analyses.values import ShownConcepts
    from auditkit.analyze.grounding import GroundedImages
    from auditkit.analyze.latents import LatentSet
    from auditkit.analyze.measures import AuditLayout
    from auditkit.extract.store import ActivationStore
    from auditkit.plan import AuditPlan
    from auditkit.spec.audit import AuditSpec
    from auditkit.spec.gates import GateSpec

Tables = Mapping[str, "pd.DataFrame | None"]
Samples = Mapping[str, "np.ndarray"]
"""The bootstrap pass's resampled measures, by table: [resamples, rows, measures]."""
Measure = Callable[["GateSpec", Tables], tuple["float | None", str]]
"""A gate metric's measurement: (value, or None when it cannot be measured; the worst case or
why not)."""


@dataclass(frozen=True)
class GateMetric:
    """A number a gate can bound (``gates: [{metric: NAME, max: ...}]``)."""

    name: str
    bound: Literal["max", "min"]
    meaning: str
    measure: Measure
    scope: tuple[str, ...] = ("axis", "attribute", "concept_set")
    """The gate keys that may narrow it; a gate that sets another is refused
    (:func:`auditkit.analyses.checks.check_spec`)."""


@dataclass(frozen=True)
class AnalysisContext:
    """What a slice's table builder is given: the spec and plan, the audit's latents and
    layout, the activation store (None when the caller has latents only, e.g. the
    calibration suite), with ``captions:`` the captioner's readings of the audit's images
    and of the guidance sweep's (``captions/readings`` and ``captions/guidance_readings``; None
    when the run has none) and its confusion on the calibration set, and with ``grounding:``
    the labelled images' latents."""

    spec: AuditSpec
    plan: AuditPlan
    latents: LatentSet
    layout: AuditLayout
    store: ActivationStore | None = None
    readings: pd.DataFrame | None = None
    swept: pd.DataFrame | None = None
    reader: pd.DataFrame | None = None
    """The captioner's confusion on the calibration set (``captions/reader_confusion``), when
    the spec has ``captions.calibration``."""
    grounded: GroundedImages | None = None
    """With ``grounding:``, the labelled images' latents the grounding pass stored and the axes
    they ground (None when the run has none)."""
    memo: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """What a slice works out once and uses twice (e.g. a large concept set's Gram matrix)."""

    @cached_property
    def H(self) -> np.ndarray:
        """Every prompt's latent H(p), the mean over seeds (float64), as the tables measure it."""
        import numpy as np

        return self.latents.means().astype(np.float64, copy=False)


@dataclass
class SectionContext:
    """What a slice's report section is given: the spec, every table the run has (None where
    absent), a sink for its charts (:meth:`chart` returns the id the partial embeds) and the
    run's manifest (empty when the caller has none)."""

    spec: AuditSpec
    tables: Tables
    charts: dict[str, dict[str, Any]] = field(default_factory=dict)
    manifest: Mapping[str, Any] = field(default_factory=dict)
    on_chart: Callable[[str, dict[str, Any]], None] | None = field(default=None, compare=False)
    """Told each chart as it is kept (the PDF draws them while the report is being built)."""

    def chart(self, chart_id: str, chart: Any) -> str:
        """Keep an Altair chart (or a Vega-Lite dict) under ``chart_id``, as the report embeds
        it (:func:`~auditkit.charts.compact_chart`); returns the id."""
        from auditkit.charts import chart_spec, compact_chart

        spec = self.charts[chart_id] = compact_chart(chart_spec(chart))
        if self.on_chart is not None:
            self.on_chart(chart_id, spec)
        return chart_id

    def axis_sections(
        self,
        table: str,
        chart: Callable[[pd.DataFrame, list[str]], Any],
        fields: Callable[[pd.DataFrame, list[str]], dict[str, Any]],
        strength: tuple[str, str],
    ) -> dict[str, Any] | None:
        """Per axis of table ``table`` (:func:`~auditkit.analyses.values.axis_parts`): its name,
        groups, the chart ``chart(rows, groups)`` kept as ``<table>-<index>``, the
        ``fields(rows, groups)`` and the ``shown`` note; ``{"axes": [...]}``, None when the run
        lacks the table or it has no rows. The rows are those of :meth:`shown_concepts`, with
        ``strength`` (a column, its words) deciding where the lean table does not."""
        from auditkit.analyses.values import axis_parts

        frame = self.tables.get(table)
        if frame is None:
            return None
        sections = []
        for index, name, part, groups in axis_parts(frame, self.tables.get("axes")):
            shown = self.shown_concepts(name, part, *strength, signed=False)
            part = shown.rows(part)
            chart_id = self.chart(f"{table}-{index}", chart(part, groups))
            sections.append(
                {
                    "axis": name,
                    "groups": groups,
                    "chart_id": chart_id,
                    "shown": shown.note(table),
                    **fields(part, groups),
                }
            )
        return {"axes": sections} if sections else None

    def shown_concepts(
        self, axis: str, part: pd.DataFrame, column: str, what: str, *, signed: bool
    ) -> ShownConcepts:
        """The concepts of ``axis`` a section shows (:func:`~auditkit.analyses.values.
        strongest_concepts`). Where the lean table has the axis its scores decide, so every
        section of a large audit shows the same concepts of an axis; elsewhere ``column`` of
        ``part`` does, per concept its mean (``signed``) or its largest |value|."""
        from auditkit.analyses.values import strongest_concepts

        keys = ["concept_set", "concept"]
        lean = self.tables.get("lean")
        if lean is not None and (lean["axis"] == axis).any():
            scores = lean[lean["axis"] == axis].set_index(keys)["score"]
            return strongest_concepts(scores, signed=True, what="lean scores")
        values = part[column].astype(float)
        by_concept = (values if signed else values.abs()).groupby([part[k] for k in keys])
        strength = by_concept.mean() if signed else by_concept.max()
        return strongest_concepts(strength, signed=signed, what=what)


class Analysis:
    """One analysis slice. Subclasses set the class attributes and implement the methods."""

    name: str
    """Spec name (``analyses: [..., NAME]``), report anchor and template partial name."""
    title: str
    """The report section's heading and its entry in the table of contents."""
    after: str
    """The section this one follows in the report (a name in ``ORDER`` or another slice's)."""
    tables: tuple[Table, ...]
    """The tables the slice writes (``results/<table>.parquet``); empty for a section that
    reads other analyses' tables."""
    statistic: str
    """The bootstrap statistic, in words (what the intervals are intervals of)."""
    resampled: tuple[Resampled, ...] = ()
    """The slice's tables whose intervals the audit's one bootstrap pass adds, from the same
    resamples as the lean table's (:func:`auditkit.analyses.stage.analyze_audit`); a slice that
    resamples on its own (e.g. at every step) adds its intervals in :meth:`build` instead."""
    gate_metrics: tuple[GateMetric, ...]
    """The gate metrics the slice offers; every slice declares them, an empty tuple when no
    number of its tables makes a meaningful gate."""
    summary_key: str | None = None
    """Where :meth:`summary`'s block goes in ``summary.json``: None, under ``analyses`` by the
    slice's name; a key, that top-level key, always written (null when the slice does not run):
    for a block summary.json had before its analysis became a slice (``outputs``)."""
    summary_optional: bool = False
    """With :attr:`summary_key`: leave the key out when the slice does not run (it then follows
    ``analyses``), as summary.json did for the causal check and discovery."""

    def applies(self, spec: AuditSpec) -> bool:
        """Whether the audit runs this slice: by default when ``analyses:`` lists it."""
        return self.name in spec.analyses

    def prompts(self, spec: AuditSpec) -> list[SlicePrompt]:
        """The prompts the slice needs extracted besides the axes' and concepts' (the plan asks
        every slice the spec runs, in report order, and plans them after the concepts'), each
        with the key its latent rows are found under in :attr:`AuditLayout.marked
        <auditkit.analyze.measures.AuditLayout.marked>`; by default none. Changing them changes
        the plan (and plan hash) of every spec that runs the slice."""
        return []

    def prompt_count(self, spec: AuditSpec) -> int:
        """How many prompts :meth:`prompts` gives ``spec`` at most, counted before the plan is
        built (the plan refuses a spec that expands past :data:`auditkit.plan.MAX_UNITS`). A
        slice whose prompts grow with the spec counts them without building them."""
        return len(self.prompts(spec))

    @property
    def listed(self) -> bool:
        """Whether the slice is named under ``analyses:``: False for one that another part of
        the spec switches on through its own :meth:`applies` (``outputs``, ``causal``,
        ``discovery``: the ``captions:`` section)."""
        return type(self).applies is Analysis.applies

    def build(self, ctx: AnalysisContext) -> dict[str, pd.DataFrame]:
        """The slice's tables: with their bootstrap intervals, except those of
        :attr:`resampled`, which the shared pass adds. A slice whose tables a pass writes
        (:mod:`auditkit.passes`) builds none; the analysis stage reads them from the run."""
        raise NotImplementedError

    def complete(
        self, ctx: AnalysisContext, tables: dict[str, pd.DataFrame], samples: Samples
    ) -> None:
        """After the bootstrap pass: add to the slice's tables (in ``tables``) what needs the
        resamples of its :attr:`resampled` statistics (``samples``, by table: [resamples, rows,
        measures]); nothing by default. The lean's significance is judged here."""

    def summary(self, spec: AuditSpec, tables: Tables) -> dict[str, Any] | list[Any] | None:
        """The slice's block of ``summary.json`` (JSON-ready), or None without its tables."""
        raise NotImplementedError

    def axis_summary(self, spec: AuditSpec, tables: Tables) -> dict[str, dict[str, Any]]:
        """Fields the slice adds to an axis's entry of ``summary.json``'s ``axes``, by axis
        name; none by default (the lean adds its headline numbers)."""
        return {}

    def findings(self, spec: AuditSpec, tables: Tables) -> list[str]:
        """Plain sentences for the summary's findings."""
        raise NotImplementedError

    def section(self, ctx: SectionContext) -> dict[str, Any] | None:
        """The report section's data (the partial reads it as ``section.data``), or None to
        leave the section out."""
        raise NotImplementedError

    def toc(self, data: dict[str, Any]) -> list[tuple[str, str]]:
        """Sub-entries of the section in the table of contents: (anchor, label)."""
        return []


def gate_rows(frame: pd.DataFrame, gate: GateSpec) -> pd.DataFrame:
    """The rows of ``frame`` in a gate's scope: its ``axis`` and ``concept_set``, when given."""
    rows = frame
    if gate.axis is not None:
        rows = rows[rows["axis"].astype(str) == gate.axis]
    if gate.concept_set is not None:
        rows = rows[rows["concept_set"].astype(str) == gate.concept_set]
    return rows


def scoped_rows(
    tables: Tables, name: str, gate: GateSpec, keep: Callable[[pd.DataFrame], Any] | None = None
) -> tuple[pd.DataFrame | None, str]:
    """A gate's rows of the slice table ``name`` (those ``keep`` selects, then its scope), or
    None and why: the run has no such table, or no row is in scope."""
    table = tables.get(name)
    if table is None or table.empty:
        return None, f"the run has no {name} table (add {name} to analyses)"
    rows = gate_rows(table if keep is None else table[keep(table)], gate)
    if rows.empty:
        return None, f"no {name} rows in scope"
    return rows, ""


def largest(
    table: str,
    column: str,
    describe: Callable[[pd.Series], str],
    keep: Callable[[pd.DataFrame], Any] | None = None,
    *,
    absolute: bool = False,
) -> Measure:
    """A gate metric's measurement: the largest ``column`` (``|column|`` when ``absolute``)
    over the gate's rows of ``table`` (those ``keep`` selects, in its scope: :func:`scoped_rows`),
    its row (the first of ties) described by ``describe``."""

    def measure(gate: GateSpec, tables: Tables) -> tuple[float | None, str]:
        rows, why = scoped_rows(tables, table, gate, keep)
        if rows is None:
            return None, why
        values = rows[column].abs() if absolute else rows[column]
        worst = rows.iloc[int(values.to_numpy().argmax())]
        return float(abs(worst[column]) if absolute else worst[column]), describe(worst)

    return measure


def register_tables(*tables: Table) -> tuple[Table, ...]:
    """Add a slice's tables to the run directory's registry (idempotent) and return them."""
    for table in tables:
        REGISTRY.add(table)
    return tables


def declared_tables(module: str) -> tuple[Table, ...]:
    """Register the tables declared in the data file beside a slice's module
    (``declared_tables(__name__)`` in ``auditkit/analyses/NAME.py`` reads
    ``auditkit/analyses/NAME.tables.yaml``) and return them in file order."""
    from auditkit.rundir.columns import slice_tables

    return register_tables(*slice_tables(module))


__all__ = [
    "Analysis",
    "AnalysisContext",
    "GateMetric",
    "Measure",
    "PlannedPrompt",
    "SectionContext",
    "SlicePrompt",
    "Tables",
    "declared_tables",
    "gate_rows",
    "register_tables",
    "scoped_rows",
]

PARTS = ("name", "title", "after", "statistic")
"""Attributes every slice must set, non-empty; ``tables`` and ``gate_metrics`` must be declared
on the slice's class but may be empty (a report section over tables other analyses write)."""
DECLARED = ("tables", "gate_metrics")
METHODS = ("build", "summary", "findings", "section")
