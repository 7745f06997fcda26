"""The analysis stage of a run: tables from the stored latents (and readings), the summary and
the gates, written into the run directory; result files the spec no longer makes are removed."""

from __future__ import annotations

from typing import Any

from auditkit.plan import AuditPlan
from auditkit.rundir import Manifest, RunDir
from auditkit.spec.audit import AuditSpec

CAUSAL_TABLES = ("causal", "causal_curve", "causal_axes")
DISCOVERY_TABLES = ("discovery", "discovered_terms")


def analyze_run(spec: AuditSpec, plan: AuditPlan, run: RunDir, manifest: Manifest) -> None:
    """Analyze a run whose extraction (and captioning, when asked) is done."""
    from auditkit.analyze.latents import load_latents
    from auditkit.analyze.summary import read_extra_tables, summarize, write_results
    from auditkit.analyze.tables import analyze
    from auditkit.extract.store import ActivationStore

    latents = load_latents(ActivationStore(run.activations), plan, spec.probe.aggregation)
    readings = swept = None
    if spec.captions is not None:
        # The caption stage's tables, read through the run directory (analyze never imports
        # caption): the readings of the audit's images and of the guidance sweep's.
        readings = run.table("readings")
        swept = run.table("guidance_readings")
    results = analyze(spec, plan, latents, readings, swept, store=ActivationStore(run.activations))
    drop_stale_results(spec, results.tables, run)
    summary = summarize(
        spec,
        results,
        run_id=manifest.run_id,
        spec_hash=manifest.spec_hash,
        plan_hash=manifest.plan_hash,
        extra=read_extra_tables(run),
    )
    if spec.gates:
        from auditkit.gates import evaluate_gates, gates_summary, write_gate_files

        outcomes = evaluate_gates(spec, results.tables)
        summary["gates"] = gates_summary(outcomes)
        write_results(results, summary, run)
        write_gate_files(run, outcomes, suite=spec.name, run_id=manifest.run_id)
        return
    write_results(results, summary, run)


def drop_stale_results(spec: AuditSpec, tables: dict[str, Any], run: RunDir) -> None:
    """Remove result files an earlier run in this folder wrote and this spec no longer makes
    (a dropped analysis, captions section, causal check, discovery or gates), so that nothing
    downstream (summary, report, gates, diff) reads them as this run's."""
    keep = set(tables)
    section = spec.captions
    if section is not None and section.discovery is not None:
        keep |= set(DISCOVERY_TABLES)
    stale = [p for p in run.results.glob("*.parquet") if p.stem not in keep]
    if not spec.gates:
        stale += [run.gates, run.junit]
    if section is None or section.causal is None:
        stale += [run.table_path(name) for name in CAUSAL_TABLES]
    if section is None:
        stale.append(run.table_path("exemplars"))
    if section is None or not section.guidance:
        stale.append(run.table_path("guidance_readings"))
    for path in stale:
        path.unlink(missing_ok=True)
