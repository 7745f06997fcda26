"""The analysis stage of a run: the built-in analyses' tables from the stored latents (and
readings), then the analysis slices' (:mod:`auditkit.analyses`), the summary with every
analysis's findings, and the gates, written into the run directory; result files the spec no
longer makes are removed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from auditkit.analyses import chosen_slices, gate_measures, slices
from auditkit.analyses.base import Analysis, AnalysisContext
from auditkit.plan import AuditPlan
from auditkit.rundir import Manifest, RunDir
from auditkit.spec.audit import AuditSpec

if TYPE_CHECKING:
    import pandas as pd

    from auditkit.analyze.grounding import GroundedImages
    from auditkit.analyze.latents import LatentSet
    from auditkit.analyze.tables import AuditResults
    from auditkit.extract.store import ActivationStore

CAUSAL_TABLES = ("causal", "causal_curve", "causal_axes")
DISCOVERY_TABLES = ("discovery", "discovered_terms")
"""The tables the causal check's and discovery's passes write (their slices declare them)."""


def analyze_audit(
    spec: AuditSpec,
    plan: AuditPlan,
    latents: LatentSet,
    readings: pd.DataFrame | None = None,
    swept: pd.DataFrame | None = None,
    store: ActivationStore | None = None,
    reader: pd.DataFrame | None = None,
    grounded: GroundedImages | None = None,
) -> AuditResults:
    """Every table of the audit: those of the analysis slices the spec runs, built first, then
    the tables every audit has (:func:`auditkit.analyze.tables.analyze`), whose one bootstrap
    pass adds the intervals of every table the slices declare ``resampled``: every interval of
    the audit comes from the same resamples, computed once. Each slice then completes its
    tables with those resamples (:meth:`~auditkit.analyses.base.Analysis.complete`: the
    lean's significance). ``store`` is the activation store,
    for slices that read more than the aggregated latents (None: they do without);
    ``grounded``: the labelled images' latents of the image-grounded axes (None: none).
    """
    from auditkit.analyze.measures import build_layout
    from auditkit.analyze.tables import analyze

    layout = build_layout(spec, latents.row_map())
    context = AnalysisContext(spec, plan, latents, layout, store, readings, swept, reader, grounded)
    chosen = chosen_slices(spec)
    built: dict[str, pd.DataFrame] = {}
    for analysis in chosen:
        built.update(analysis.build(context))
    statistics = [statistic for analysis in chosen for statistic in analysis.resampled]
    results = analyze(spec, plan, latents, extra=built, statistics=statistics)
    for analysis in chosen:
        analysis.complete(context, results.tables, results.samples)
    return results


def in_spec_order(spec: AuditSpec, chosen: list[Analysis]) -> list[Analysis]:
    """``chosen`` in the order the spec lists them under ``analyses:`` (the order of their
    findings in the summary), then those another section switches on (``outputs``,
    ``causal``, ``discovery``, by ``captions:``), in report order."""
    listed = {name: i for i, name in enumerate(spec.analyses)}
    return sorted(chosen, key=lambda a: listed.get(a.name, len(listed)))


def summary_parts(
    spec: AuditSpec, chosen: list[Analysis], tables: Mapping[str, pd.DataFrame | None]
) -> dict[str, Any]:
    """What the slices give :func:`auditkit.analyze.summary.summarize`: the findings of
    ``chosen`` in spec order (:func:`in_spec_order`), their blocks by name, the top-level
    blocks of every slice that keeps a key (asked whether or not it ran: without its tables
    it says so) and the fields the slices add to each axis's entry."""
    ordered = in_spec_order(spec, chosen)
    top = {a.name for a in slices().values() if a.summary_key}
    axis_fields: dict[str, dict[str, Any]] = {}
    for analysis in ordered:
        for axis, fields in analysis.axis_summary(spec, tables).items():
            axis_fields.setdefault(axis, {}).update(fields)
    blocks = {a.name: a.summary(spec, tables) for a in ordered if a.name not in top}
    return {
        "findings": [sentence for a in ordered for sentence in a.findings(spec, tables)],
        "blocks": {name: block for name, block in blocks.items() if block is not None},
        "top_level": {
            a.summary_key: (a.summary(spec, tables), a.summary_optional)
            for a in slices().values()
            if a.summary_key
        },
        "axis_fields": axis_fields,
    }


def pass_tables(chosen: list[Analysis], built: Mapping[str, Any], run: RunDir) -> dict[str, Any]:
    """The tables of ``chosen`` that the analysis did not build: those their passes wrote into
    the run (the causal check's, discovery's), read back; a missing file is left out."""
    return run.tables([t.name for a in chosen for t in a.tables if t.name not in built])


def analyze_run(
    spec: AuditSpec,
    plan: AuditPlan,
    run: RunDir,
    manifest: Manifest,
    latents: LatentSet | None = None,
) -> None:
    """Analyze a run whose extraction (and captioning, when asked) is done (``latents``: its
    store read already)."""
    from auditkit.analyze.latents import load_latents
    from auditkit.analyze.summary import summarize, write_results
    from auditkit.extract.store import ActivationStore

    if latents is None:
        latents = load_latents(
            ActivationStore(run.activations), plan, spec.probe.aggregation, spec=spec
        )
    readings = None
    if spec.captions is not None and run.has_table("readings"):
        from auditkit.caption.store import read_captions

        readings = read_captions(run.captions)[1]
    swept = run.table("guidance_readings") if spec.captions is not None else None
    calibrated = spec.captions is not None and spec.captions.calibration is not None
    reader = run.table("reader_confusion", required=True) if calibrated else None
    store = ActivationStore(run.activations)
    grounded = read_grounded_images(spec, run)
    results = analyze_audit(spec, plan, latents, readings, swept, store, reader, grounded)
    chosen = chosen_slices(spec)
    drop_stale_results(spec, results.tables, run)
    tables = {**results.tables, **pass_tables(chosen, results.tables, run)}
    summary = summarize(
        spec,
        results,
        run_id=manifest.run_id,
        spec_hash=manifest.spec_hash,
        plan_hash=manifest.plan_hash,
        **summary_parts(spec, chosen, tables),
    )
    if spec.gates:
        from auditkit.gates import evaluate_gates, gates_summary, write_gate_files

        outcomes = evaluate_gates(spec, tables, gate_measures())
        summary["gates"] = gates_summary(outcomes)
        write_results(results, summary, run)
        write_gate_files(run, outcomes, suite=spec.name, run_id=manifest.run_id)
        return
    write_results(results, summary, run)


def read_grounded_images(spec: AuditSpec, run: RunDir) -> GroundedImages | None:
    """The latents of the labelled images the grounding pass stored for ``spec`` (None without
    ``grounding:`` or before the pass wrote its images table)."""
    if spec.grounding is None:
        return None
    table = run.table("grounding_images")
    if table is None or table.empty:
        return None
    from auditkit.analyze.grounding import read_grounded
    from auditkit.analyze.latents import unit_latents
    from auditkit.extract.store import ActivationStore

    store = ActivationStore(run.grounding_activations)
    latents = unit_latents(store, list(table["unit_id"].astype(str)), spec.probe.aggregation)
    return read_grounded(table, latents)


def drop_stale_results(spec: AuditSpec, tables: dict[str, Any], run: RunDir) -> None:
    """Remove result files an earlier run in this folder wrote and this spec no longer makes
    (a dropped analysis, captions section, causal check, discovery or gates), so that nothing
    downstream (summary, report, gates, diff) reads them as this run's."""
    keep = set(tables)
    section = spec.captions
    if section is not None and section.discovery is not None:
        keep |= set(DISCOVERY_TABLES)
    stale = [p for p in run.files(run.results, "*.parquet") if p.stem not in keep]
    if not spec.gates:
        stale += [run.gates, run.junit]
    if section is None or section.causal is None:
        stale += [run.table_path(name) for name in CAUSAL_TABLES]
    if section is None:
        stale.append(run.table_path("exemplars"))
    if section is None or not section.guidance:
        stale.append(run.table_path("guidance_readings"))
    run.remove(*stale)
