"""Build the one context object the report templates see, from a finished run directory.

Reads only what docs/run-directory.md promises: ``spec.yaml``, ``manifest.json``,
``results/summary.json``, the ``results/*.parquet`` tables and, when the run made them, the
causal check's ``captions/causal*.parquet``. Analysis tables are optional (an analysis the spec
did not ask for, or an older run directory, simply has no section). Charts enter the context as
Vega-Lite specs (plain dicts); the templates format and place values but never compute them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from auditkit import __version__, charts
from auditkit.analyses.base import SectionContext
from auditkit.analyses.values import finite
from auditkit.analyze.summary import read_extra_tables
from auditkit.report import inputs
from auditkit.report.executive import executive_summary
from auditkit.report.sections import report_sections
from auditkit.report.settings_section import (
    bootstrap_block,
    definitions,
    provenance,
    settings_blocks,
)
from auditkit.rundir.manifest import weights_hash
from auditkit.spec import AuditSpec

DEMO_MODEL_PREFIX = "builtin:tiny"

CAPTIONER_CAVEAT = (
    "Captioners have biases of their own: the shares of images 'read as' a group depend on the "
    "captioner named in this report, and a captioner that misreads one group more often than "
    "another shifts every output-level number."
)
CAVEATS = [
    "Attributes such as gender, age or ethnicity that are read from generated images are "
    "perceived attributes, not self-identified ones; the groups named here are labels in "
    "prompts, not facts about people.",
    "Two-group axes (for example man / woman) are a simplification: they leave out people who "
    "are neither, and a score along one axis says nothing about the others.",
    "Prompt wording carries bias of its own: the templates, group terms and the centring "
    "reference shape every number, so a different wording can give a different lean.",
    "Scores measure association inside the model's latent space (h-space), not what a given "
    "image will show, and association is not causation.",
    "Results computed on a GPU are not bit-reproducible across hardware, drivers or library "
    "versions; small differences in the last digits are expected (on the default toyworld "
    "audit, an H200 in float16 and a CPU in float32 gave lean scores within 0.0023).",
    CAPTIONER_CAVEAT,
    "Significance follows the rule named in the lean section: with the default rule "
    "('min_effect') a significant lean is beyond the band of leans too small to count, with "
    "95% confidence after correction for testing every lean of the audit. It claims a lean in "
    "the model's latent space of at least that size; it does not claim a given share of "
    "images, which the calibration relates to lean size only roughly.",
    "An audit covers the prompts, concepts and groups its spec lists, and nothing else: a "
    "clean report on these says nothing about associations it did not test. This report "
    "describes a model; it does not certify it, and it should be read with the people the "
    "model affects in mind.",
]


def caveats(spec: AuditSpec) -> list[str]:
    """The limitations the report lists: :data:`CAVEATS`, and with a calibrated captioner what
    its calibration set can and cannot vouch for."""
    out = list(CAVEATS)
    if spec.captions is not None and spec.captions.calibration is not None:
        from auditkit.analyses.reader import LIMITS

        out.insert(CAVEATS.index(CAPTIONER_CAVEAT) + 1, LIMITS)
    return out


REPORT_SCHEMA_VERSION = 1
"""Version of the report's structure (shown on the cover; bumped when sections change meaning)."""


def build_report_context(
    run_dir: Path,
    manifest: dict[str, Any] | None = None,
    on_chart: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Read a run directory and return everything the report shows, as plain data
    (``manifest``: as for :func:`~auditkit.report.inputs.read_run`; ``on_chart``: told each
    chart as its section makes it).

    Raises :class:`~auditkit.errors.UsageError` when a required file is missing or malformed
    and :class:`~auditkit.errors.SchemaVersionError` when a file was written by a newer
    auditkit.
    """
    run_dir = Path(run_dir)
    read = inputs.read_run(run_dir, manifest)
    manifest, summary, spec_text, spec = read.manifest, read.summary, read.spec_text, read.spec
    tables = read.tables
    extra = read_extra_tables(read.run)

    model = _model(spec, manifest, summary)
    bootstrap = bootstrap_block(spec, spec_text, tables)
    if bootstrap is not None:  # recorded by the run; runs before each setting: their way
        settings = summary.get("settings", {})
        bootstrap["resampling"] = settings.get("resampling", "seeds")
        bootstrap["interval"] = settings.get("interval", "percentile")
    context: dict[str, Any] = {
        "title": spec.report.title,
        "audit": {"name": spec.name, "description": spec.description, "owner": spec.report.owner},
        "model": model,
        "run": _run(manifest, summary),
        "auditkit_version": __version__,
        "formats": list(spec.report.formats),
        "paper": spec.report.paper,
        "report_schema_version": REPORT_SCHEMA_VERSION,
        "results_hash": read.run.results_hash(),
        "weights_hash": weights_hash(manifest.get("model")),
        "banners": _banners(model, manifest),
        "findings": [str(f) for f in summary.get("findings", [])],
        "executive": executive_summary(spec, tables, extra, summary.get("gates"), model["id"]),
        "gates": summary.get("gates"),
        "strongest": _strongest(summary, tables["axes"]),
        "counts": dict(summary.get("counts", {})),
        "bootstrap": bootstrap,
        "settings": settings_blocks(spec, manifest, bootstrap),
        "definitions": definitions(spec, tables["prompts"]),
        "caveats": caveats(spec),
        "provenance": provenance(manifest, spec_text, tables["prompts"]),
    }
    sink = SectionContext(spec, tables, manifest=manifest, on_chart=on_chart)
    with charts.unchecked():
        context["sections"] = report_sections(context, sink)
    context["charts"] = sink.charts
    return context


# --- sections ------------------------------------------------------------------------------


def _model(spec: AuditSpec, manifest: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    recorded = manifest.get("model") or {}
    model_id = str(recorded.get("id") or spec.model.id)
    return {
        "id": model_id,
        "revision": recorded.get("revision", spec.model.revision),
        "pipeline": (summary.get("model") or {}).get("pipeline") or spec.model.pipeline,
        "pipeline_class": recorded.get("pipeline_class"),
        "is_demo": model_id.startswith(DEMO_MODEL_PREFIX),
    }


def _run(manifest: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    git = manifest.get("git") or {}
    return {
        "run_id": manifest.get("run_id") or summary.get("run_id"),
        "status": manifest.get("status", "unknown"),
        "started_utc": manifest.get("started_utc"),
        "finished_utc": manifest.get("finished_utc"),
        "date": (manifest.get("finished_utc") or manifest.get("started_utc") or "")[:10] or None,
        "auditkit_version": manifest.get("auditkit_version"),
        "git_commit": git.get("commit"),
        "git_dirty": git.get("dirty"),
        "spec_hash": manifest.get("spec_hash") or summary.get("spec_hash"),
        "plan_hash": manifest.get("plan_hash") or summary.get("plan_hash"),
        "device": manifest.get("device"),
        "dtype": manifest.get("dtype"),
    }


def _banners(model: dict[str, Any], manifest: dict[str, Any]) -> list[dict[str, str]]:
    banners = []
    if model["is_demo"]:
        banners.append(
            {
                "level": "danger",
                "title": "Demo model",
                "text": "random-weight demo pipeline: the numbers are meaningless",
            }
        )
    status = manifest.get("status")
    if status != "complete":
        banners.append(
            {
                "level": "warning",
                "title": "Incomplete run",
                "text": f"the run's status is '{status}', not 'complete': results may be partial.",
            }
        )
    if (manifest.get("git") or {}).get("dirty"):
        banners.append(
            {
                "level": "info",
                "title": "Uncommitted code",
                "text": "auditkit ran from a checkout with uncommitted changes (git dirty).",
            }
        )
    return banners


def _strongest(summary: dict[str, Any], axes: pd.DataFrame | None) -> list[dict[str, Any]]:
    consistency: dict[str, float | None] = {}
    if axes is not None and "step_consistency" in axes.columns:
        consistency = {
            str(a): finite(v) for a, v in zip(axes["axis"], axes["step_consistency"], strict=True)
        }
    out = []
    for entry in summary.get("axes", []):
        groups = [str(g) for g in entry.get("groups", [])]
        top = [
            {
                "concept_set": str(t.get("concept_set", "")),
                "concept": str(t.get("concept", "")),
                "score": finite(t.get("score")),
                "toward": str(t.get("toward", "")),
            }
            for t in entry.get("top", [])
        ]
        out.append(
            {
                "axis": str(entry.get("axis", "")),
                "groups": groups,
                "two_group": len(groups) == 2,
                "max_abs_score": finite(entry.get("max_abs_score")),
                "mean_score": finite(entry.get("mean_score")),
                "step_consistency": consistency.get(str(entry.get("axis"))),
                "top": top,
            }
        )
    return out
