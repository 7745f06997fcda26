"""Build the one context object the report templates see, from a finished run directory.

Reads only what docs/run-directory.md promises: ``spec.yaml``, ``manifest.json``,
``results/summary.json``, the ``results/*.parquet`` tables and, when the run made them, the
causal check's ``captions/causal*.parquet``. Analysis tables are optional (an analysis the spec
did not ask for, or an older run directory, simply has no section). Charts enter the context as
Vega-Lite specs (plain dicts); the templates format and place values but never compute them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from auditkit import __version__, charts
from auditkit.analyses.base import SectionContext
from auditkit.analyze.causal import alpha_text, causal_records
from auditkit.analyze.discovery import axis_ends
from auditkit.analyze.significance import rule_of, rule_words
from auditkit.analyze.summary import read_extra_tables
from auditkit.report import inputs
from auditkit.report.executive import executive_summary
from auditkit.report.exemplars import exemplar_section
from auditkit.report.guidance_section import guidance_section, in_order
from auditkit.report.sections import report_sections
from auditkit.spec import AuditSpec

DEMO_MODEL_PREFIX = "builtin:tiny"

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
    "Captioners have biases of their own: the shares of images 'read as' a group depend on the "
    "captioner named in this report, and a captioner that misreads one group more often than "
    "another shifts every output-level number.",
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


REPORT_SCHEMA_VERSION = 1
"""Version of the report's structure (shown on the cover; bumped when sections change meaning)."""


def build_report_context(run_dir: Path) -> dict[str, Any]:
    """Read a run directory and return everything the report shows, as plain data.

    Raises :class:`~auditkit.errors.UsageError` when a required file is missing or malformed
    and :class:`~auditkit.errors.SchemaVersionError` when a file was written by a newer
    auditkit.
    """
    run_dir = Path(run_dir)
    read = inputs.read_run(run_dir)
    manifest, summary, spec_text, spec = read.manifest, read.summary, read.spec_text, read.spec
    tables = read.tables
    extra = read_extra_tables(read.run)

    chart_specs: dict[str, dict[str, Any]] = {}
    model = _model(spec, manifest, summary)
    bootstrap = _bootstrap(spec, spec_text, tables)
    if bootstrap is not None:  # recorded by the run; runs before it resampled seeds only
        bootstrap["resampling"] = summary.get("settings", {}).get("resampling", "seeds")
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
        "weights_hash": _weights_hash(manifest),
        "banners": _banners(model, manifest),
        "findings": [str(f) for f in summary.get("findings", [])],
        "executive": executive_summary(spec, tables, extra, summary.get("gates"), model["id"]),
        "gates": summary.get("gates"),
        "strongest": _strongest(summary, tables["axes"]),
        "counts": dict(summary.get("counts", {})),
        "bootstrap": bootstrap,
        "significance": _significance(spec, tables["lean"]),
        "settings": _settings(spec, manifest, bootstrap),
        "definitions": _definitions(spec, tables["prompts"]),
        "axes": _axis_sections(tables, chart_specs),
        "defaults": _defaults_sections(tables["defaults"], tables["axes"], chart_specs),
        "descriptors": _descriptor_sections(tables["descriptors"], tables["axes"], chart_specs),
        "similarity": _similarity_sections(tables["similarity"], tables["structure"], chart_specs),
        "outputs": _output_sections(tables, manifest, chart_specs, [a.name for a in spec.axes]),
        "exemplars": exemplar_section(run_dir, spec),
        "causal": _causal_section(extra, spec, manifest, chart_specs),
        "discovery": _discovery_section(extra, spec),
        "caveats": list(CAVEATS),
        "provenance": _provenance(manifest, spec_text, tables["prompts"]),
    }
    sink = SectionContext(spec, tables)
    context["sections"] = report_sections(context, sink)
    chart_specs.update(sink.charts)
    context["charts"] = {name: charts.compact_chart(chart) for name, chart in chart_specs.items()}
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


def _weights_hash(manifest: dict[str, Any]) -> str | None:
    """One sha256 over the sorted (path, sha256) of every weight file the manifest lists."""
    import hashlib

    files = (manifest.get("model") or {}).get("files") or []
    pairs = sorted(f"{f.get('path')}:{f.get('sha256')}" for f in files if f.get("sha256"))
    if not pairs:
        return None
    return hashlib.sha256("\n".join(pairs).encode()).hexdigest()


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
            str(a): _num(v) for a, v in zip(axes["axis"], axes["step_consistency"], strict=True)
        }
    out = []
    for entry in summary.get("axes", []):
        groups = [str(g) for g in entry.get("groups", [])]
        top = [
            {
                "concept_set": str(t.get("concept_set", "")),
                "concept": str(t.get("concept", "")),
                "score": _num(t.get("score")),
                "toward": str(t.get("toward", "")),
            }
            for t in entry.get("top", [])
        ]
        out.append(
            {
                "axis": str(entry.get("axis", "")),
                "groups": groups,
                "two_group": len(groups) == 2,
                "max_abs_score": _num(entry.get("max_abs_score")),
                "mean_score": _num(entry.get("mean_score")),
                "step_consistency": consistency.get(str(entry.get("axis"))),
                "top": top,
            }
        )
    return out


def _bootstrap(
    spec: AuditSpec, spec_text: str, tables: dict[str, pd.DataFrame | None]
) -> dict[str, Any] | None:
    """The seed bootstrap as run, or None for a run directory from before it existed.

    ``statistics`` is read from the spec as written, not from the parsed model (which fills in a
    default), so an older run directory is not credited with intervals it never computed.
    ``intervals`` says whether any result table actually carries 95% interval columns.
    """
    raw = yaml.safe_load(spec_text)
    in_spec = isinstance(raw, dict) and "statistics" in raw
    measures = {"lean": "score", "descriptors": "cosine", "similarity": "cosine"}
    intervals = False
    for name, measure in measures.items():
        frame = tables.get(name)
        intervals = intervals or (frame is not None and charts.has_interval(frame, measure))
    if not in_spec and not intervals:
        return None
    resamples = int(spec.statistics.bootstrap_resamples) if in_spec else None
    seed = int(spec.statistics.seed) if in_spec else None
    status = missing = None
    if resamples == 0:
        status = "off: no confidence intervals"
        missing = "the spec turned the seed bootstrap off (statistics.bootstrap_resamples: 0)"
    elif not intervals and len(spec.seed_list) < 2:
        status = "not computed: one seed gives nothing to resample"
        missing = "the seed bootstrap needs at least two seeds and this run had one"
    return {
        "resamples": resamples,
        "seed": seed,
        "n_seeds": len(spec.seed_list),
        "intervals": intervals,
        "status": status,
        "missing": missing,
    }


def _settings(
    spec: AuditSpec, manifest: dict[str, Any], bootstrap: dict[str, Any] | None
) -> list[dict[str, Any]]:
    seeds = spec.seed_list
    shown = ", ".join(str(s) for s in seeds[:12]) + (" …" if len(seeds) > 12 else "")
    probe_steps = "all" if spec.probe.steps == "all" else ", ".join(map(str, spec.probe.steps))
    if spec.centring.reference == "base":
        centring = f"base prompt “{spec.centring.base_prompt}”"
    else:
        centring = "mean latent of the compared set"
    statistics: list[tuple[str, Any]] = []
    if bootstrap is not None and bootstrap["resamples"] is not None:
        resamples = f"{bootstrap['resamples']:,}"
        if bootstrap["status"]:
            resamples += f" ({bootstrap['status']})"
        elif bootstrap["intervals"]:
            resamples += " (seeds resampled together for all prompts; 95% intervals)"
        statistics = [("Bootstrap resamples", resamples), ("Bootstrap seed", bootstrap["seed"])]
    return [
        {
            "title": "Model and sampling",
            "rows": [
                ("Model", spec.model.id),
                ("Revision", spec.model.revision or "(default branch)"),
                ("Pipeline", spec.model.pipeline),
                ("Scheduler", spec.model.scheduler),
                ("Denoising steps", spec.model.steps),
                ("Guidance scale", spec.model.guidance_scale),
                ("Resolution", f"{spec.model.resolution} × {spec.model.resolution} px"),
                ("Device / dtype (as run)", f"{manifest.get('device')} / {manifest.get('dtype')}"),
            ],
        },
        {
            "title": "Probe (h-space), seeds and centring",
            "rows": [
                ("Hook point", spec.probe.hook),
                ("Steps kept", probe_steps),
                ("Aggregation over steps", spec.probe.aggregation),
                ("Spatial pooling", spec.probe.spatial_pool),
                ("Guidance half", spec.probe.guidance_half),
                ("Stored dtype", spec.probe.store_dtype),
                ("Seeds", f"{len(seeds)} ({shown}), the same for every prompt"),
                *statistics,
                ("Centring reference", centring),
                ("Analyses", ", ".join(spec.analyses)),
            ],
        },
    ]


def _definitions(spec: AuditSpec, prompts: pd.DataFrame | None) -> dict[str, Any]:
    """The axes and concept sets as defined; an axis's terms are those the run prompted with
    (its prompts table), so a run made by an earlier auditkit shows what it ran, e.g. the
    crossing terms it composed then."""
    prompted: dict[tuple[str, str], list[str]] = {}
    if prompts is not None:
        for row in prompts[prompts["role"] == "axis"].itertuples():
            terms = prompted.setdefault((str(row.set_name), str(row.group)), [])
            if str(row.term) not in terms:
                terms.append(str(row.term))
    axes = [
        {
            "name": a.name,
            "templates": list(a.templates),
            "groups": [
                {
                    "name": g,
                    "terms": prompted.get((a.name, g), list(terms)),
                    "marker": a.marker(g) if a.markers else prompted.get((a.name, g), terms)[0],
                }
                for g, terms in a.groups.items()
            ],
        }
        for a in spec.analysis_axes
    ]
    concepts = [
        {"name": c.name, "templates": list(c.templates), "terms": list(c.terms)}
        for c in spec.concepts
    ]
    return {"axes": axes, "concepts": concepts}


def _axis_sections(
    tables: dict[str, pd.DataFrame | None], chart_specs: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    axes, lean, steps = tables["axes"], tables["lean"], tables["steps"]
    if lean is None:
        return []
    names = list(dict.fromkeys(lean["axis"].tolist()))
    sections = []
    for index, name in enumerate(names):
        rows = lean[lean["axis"] == name].sort_values("score", ascending=False)
        pos, neg = str(rows["positive_group"].iloc[0]), str(rows["negative_group"].iloc[0])
        info = _axis_info(axes, name)
        chart_id = f"lean-{index}"
        chart_specs[chart_id] = charts.lean_chart(rows, pos, neg).to_dict()
        intervals = charts.has_interval(rows, "score")
        steps_id = None
        if steps is not None and (steps["axis"] == name).any():
            steps_id = f"steps-{index}"
            chart_specs[steps_id] = charts.steps_chart(steps[steps["axis"] == name]).to_dict()
        agreement_id = None
        step_agreement = tables.get("step_agreement")
        if step_agreement is not None and (step_agreement["axis"] == name).any():
            agreement_id = f"step-agreement-{index}"
            part = step_agreement[step_agreement["axis"] == name]
            chart_specs[agreement_id] = charts.step_agreement_heatmap(part).to_dict()
        sections.append(
            {
                "anchor": f"axis-{index}",
                "axis": name,
                "positive_group": pos,
                "negative_group": neg,
                "norm": info.get("norm"),
                "n_prompts": info.get("n_prompts"),
                "step_consistency": info.get("step_consistency"),
                "chart_id": chart_id,
                "steps_chart_id": steps_id,
                "step_agreement_chart_id": agreement_id,
                "rows": _lean_rows(rows, intervals),
                "intervals": intervals,
                "tested": "significant" in rows.columns,
                "witnessed": "witness" in rows.columns and rows["witness"].astype(str).ne("").any(),
                "n_seeds": int(rows["n_seeds"].max()),
            }
        )
    return sections


def _significance(spec: AuditSpec, lean: pd.DataFrame | None) -> dict[str, Any] | None:
    """Audit-wide numbers of the rule the run was judged by (read from its lean table, so an
    older run keeps its own rule), or None for runs without a test."""
    if lean is None or "significant" not in lean.columns:
        return None
    tested = lean["p_value"].notna()
    rule, band = rule_of(lean)
    return {
        "alpha": spec.statistics.alpha,
        "tested": int(tested.sum()),
        "significant": int(lean["significant"].sum()),
        "rule": rule,
        "min_effect": band,
        "rule_words": rule_words(rule, band),
        "mapping": _mapping_rows() if rule == "min_effect" else [],
    }


def _mapping_rows() -> list[dict[str, Any]]:
    """The shipped lean-to-share mapping, for the sentence under the band."""
    from auditkit.analyze.significance import read_mapping

    rows = []
    for row in read_mapping():
        high = row.get("score_high")
        low = float(row["score_low"])
        rows.append(
            {
                "scores": f"{low:.2f}–{float(high):.2f}" if high is not None else f"≥ {low:.2f}",
                "pairs": int(row["pairs"]),
                "median": f"{100 * float(row['median_skew']):+.0f}",
                "low": f"{100 * float(row['skew_p10']):+.0f}",
                "high": f"{100 * float(row['skew_p90']):+.0f}",
            }
        )
    return rows


def _lean_rows(rows: pd.DataFrame, intervals: bool) -> list[dict[str, Any]]:
    columns = ["concept_set", "concept", "toward", "score", "cosine", "projection"]
    if intervals:
        columns += ["score_ci_low", "score_ci_high"]
    records = _records(rows, columns)
    tested = "significant" in rows.columns
    fragile = "fragile" in rows.columns
    for record, row in zip(records, rows.itertuples(), strict=True):
        if intervals:
            record["clear_of_zero"] = _clear_of_zero(
                record["score_ci_low"], record["score_ci_high"]
            )
        record["finding"] = charts.finding_text(row) if tested else None
        record["q_value"] = _num(row.q_value) if tested else None
        record["finding_short"] = charts.finding_text(row, short=True) if tested else None
        record["significant"] = bool(row.significant) if tested else None
        record["fragile"] = bool(row.fragile) if fragile else None
        record["images"] = _image_text(row)
    return records


def _image_text(row: Any) -> dict[str, Any] | None:
    """The images beside a lean (the lean table's witness columns), or None without them."""
    share = getattr(row, "image_share", None)
    if share is None or not math.isfinite(float(share)):
        return None
    low, high = float(row.image_share_low), float(row.image_share_high)
    witness = str(row.witness)
    return {
        "share": f"{100 * float(share):.0f}% {row.positive_group}",
        "interval": f"{100 * low:.0f}–{100 * high:.0f}%",
        "witness": witness,
        "flag": witness in ("images only", "latent only", "opposite"),
    }


def _clear_of_zero(low: float | None, high: float | None) -> bool | None:
    """True when the whole interval lies on one side of 0, None when it is missing."""
    if low is None or high is None:
        return None
    return low > 0 or high < 0


def _axis_info(axes: pd.DataFrame | None, name: str) -> dict[str, Any]:
    if axes is None or not (axes["axis"] == name).any():
        return {}
    row = axes[axes["axis"] == name].iloc[0]
    return {
        "groups": str(row["groups"]).split(","),
        "norm": _num(row["norm"]),
        "n_prompts": int(row["n_prompts"]) if "n_prompts" in row else None,
        "step_consistency": _num(row.get("step_consistency")),
    }


def _groups(frame: pd.DataFrame, axes: pd.DataFrame | None, name: str) -> list[str]:
    groups = _axis_info(axes, name).get("groups")
    return list(groups) if groups else list(dict.fromkeys(frame["group"].astype(str)))


def _defaults_sections(
    defaults: pd.DataFrame | None,
    axes: pd.DataFrame | None,
    chart_specs: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    if defaults is None:
        return []
    sections = []
    for index, name in enumerate(dict.fromkeys(defaults["axis"].tolist())):
        part = defaults[defaults["axis"] == name]
        groups = _groups(part, axes, name)
        chart_id = f"defaults-{index}"
        chart_specs[chart_id] = charts.defaults_chart(part, groups).to_dict()
        wide = part.pivot_table(
            index=["concept_set", "concept"], columns="group", values="cosine", sort=False
        )
        firsts = part[part["rank"] == 1].set_index(["concept_set", "concept"])
        rows = []
        for key, first in firsts.sort_values("margin", ascending=False).iterrows():
            rows.append(
                {
                    "concept_set": key[0],
                    "concept": key[1],
                    "default": str(first["group"]),
                    "margin": _num(first["margin"]),
                    "cosines": [_num(wide.loc[key].get(g)) for g in groups],
                }
            )
        sections.append({"axis": name, "groups": groups, "chart_id": chart_id, "rows": rows})
    return sections


def _descriptor_sections(
    descriptors: pd.DataFrame | None,
    axes: pd.DataFrame | None,
    chart_specs: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    if descriptors is None:
        return []
    sections = []
    for index, name in enumerate(dict.fromkeys(descriptors["axis"].tolist())):
        part = descriptors[descriptors["axis"] == name]
        groups = _groups(part, axes, name)
        chart_id = f"descriptors-{index}"
        chart_specs[chart_id] = charts.descriptor_heatmap(part, groups).to_dict()
        intervals = charts.has_interval(part, "cosine")
        rows = []
        for (cset, concept), block in part.groupby(["concept_set", "concept"], sort=False):
            ranked = block.sort_values("rank")
            rows.append(
                {
                    "concept_set": cset,
                    "concept": concept,
                    "ranking": [
                        {
                            "group": str(r["group"]),
                            "cosine": _num(r["cosine"]),
                            "ci_low": _num(r["cosine_ci_low"]) if intervals else None,
                            "ci_high": _num(r["cosine_ci_high"]) if intervals else None,
                        }
                        for _, r in ranked.iterrows()
                    ],
                }
            )
        sections.append(
            {
                "axis": name,
                "groups": groups,
                "chart_id": chart_id,
                "rows": rows,
                "intervals": intervals,
            }
        )
    return sections


def _output_sections(
    tables: dict[str, pd.DataFrame | None],
    manifest: dict[str, Any],
    chart_specs: dict[str, dict[str, Any]],
    axis_order: list[str],
) -> dict[str, Any] | None:
    """Captioned outputs: shares per attribute vs the reference, and agreement per axis; the
    attributes in the spec's axis order."""
    from auditkit import charts
    from auditkit.analyze.outputs import agreement_points

    outputs, agreement, lean = tables["outputs"], tables["agreement"], tables["lean"]
    if outputs is None or outputs.empty:
        return None
    attributes = []
    for index, name in enumerate(in_order(outputs["attribute"], axis_order)):
        part = outputs[outputs["attribute"].astype(str) == name]
        chart_id = f"shares-{index}"
        chart_specs[chart_id] = charts.share_chart(part).to_dict()
        per_concept = part.drop_duplicates(["concept_set", "concept"])
        top = per_concept.sort_values("max_abs_gap", ascending=False).head(3)
        attributes.append(
            {
                "attribute": name,
                "chart_id": chart_id,
                "reference": str(part["reference_kind"].iloc[0]),
                "n_images": int(part["n_images"].max()),
                "largest_gaps": _records(
                    top, ["concept", "max_gap_group", "max_abs_gap", "kl_bits"]
                ),
            }
        )
    axes = []
    if agreement is not None and lean is not None:
        shares = outputs[list(c for c in outputs.columns if not c.startswith("ref"))]
        for index, row in enumerate(agreement.to_dict("records")):
            axis_map = {str(row["attribute"]): str(row["axis"])}
            points = agreement_points(lean, shares, axis_map)
            chart_id = f"agreement-{index}"
            summary_row = {str(k): v for k, v in row.items()}
            chart_specs[chart_id] = charts.agreement_chart(points, summary_row).to_dict()
            axes.append(
                {
                    "axis": str(row["axis"]),
                    "positive_group": str(row["positive_group"]),
                    "rho": _num(row["rho"]),
                    "rho_ci_low": _num(row["rho_ci_low"]),
                    "rho_ci_high": _num(row["rho_ci_high"]),
                    "n_concepts": int(row["n_concepts"]),
                    "statement": str(row["statement"]),
                    "chart_id": chart_id,
                }
            )
    captioner = dict(manifest.get("captioner") or {})
    return {
        "captioner": {"id": captioner.get("id"), "sha256": captioner.get("sha256")},
        "attributes": attributes,
        "agreement": axes,
        "guidance": guidance_section(
            tables["guidance"], tables["amplification"], chart_specs, axis_order
        ),
    }


def _causal_section(
    extra: dict[str, pd.DataFrame],
    spec: AuditSpec,
    manifest: dict[str, Any],
    chart_specs: dict[str, dict[str, Any]],
) -> dict[str, Any] | None:
    """The causal check: per steered axis its dose-response chart, statement and shares."""
    from auditkit import charts

    records = causal_records(extra, spec.probe.hook)
    if not records:
        return None
    curve, per_concept = extra["causal_curve"], extra.get("causal")
    axes = []
    for index, record in enumerate(records):
        points = curve[curve["axis"] == record["axis"]].sort_values("alpha")
        concepts = None
        if per_concept is not None:
            concepts = per_concept[per_concept["axis"] == record["axis"]]
        chart_id = f"causal-{index}"
        chart_specs[chart_id] = charts.dose_response_chart(points, concepts).to_dict()
        alphas = [float(a) for a in points["alpha"]]
        rows = []
        if concepts is not None and len(concepts):
            wide = concepts.pivot_table(
                index=["concept_set", "concept"], columns="alpha", values="share", sort=False
            )
            rows = [
                {
                    "concept_set": str(key[0]),
                    "concept": str(key[1]),
                    "shares": [_num(wide.loc[key].get(a)) for a in alphas],
                }
                for key in wide.index
            ]
        axes.append(
            {
                **record,
                "anchor": f"causal-{index}",
                "chart_id": chart_id,
                "alphas": [alpha_text(a) for a in alphas],
                "points": [
                    {**point, "alpha_text": alpha_text(float(point["alpha"]))}
                    for point in record["shares"]
                ],
                "concept_rows": rows,
            }
        )
    n_seeds = None
    if spec.captions is not None and spec.captions.causal is not None:
        from auditkit.passes.causal import causal_seeds

        n_seeds = len(causal_seeds(spec))
    captioner = dict(manifest.get("captioner") or {})
    return {
        "hook": spec.probe.hook,
        "captioner": captioner.get("id"),
        "n_seeds": n_seeds,
        "axes": axes,
    }


def _term_rows(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Discovered terms for a table: text, cosine, its interval and captions containing it."""
    out = []
    for row in rows.to_dict("records"):
        low, high = _num(row["cosine_ci_low"]), _num(row["cosine_ci_high"])
        out.append(
            {
                "term": str(row["term"]),
                "rank": int(row["rank"]),
                "count": int(row["count"]),
                "cosine": _num(row["cosine"]),
                "ci_low": low,
                "ci_high": high,
                "clear_of_zero": _clear_of_zero(low, high),
            }
        )
    return out


def _discovery_section(extra: dict[str, pd.DataFrame], spec: AuditSpec) -> dict[str, Any] | None:
    """Open-vocabulary discovery: the top mined terms per concept and at each axis end."""
    discovery = extra.get("discovery")
    if discovery is None:
        return None
    template = None
    if spec.captions is not None and spec.captions.discovery is not None:
        from auditkit.passes.discovery import discovery_template

        template = discovery_template(spec)
    groups = {a.name: list(a.groups) for a in spec.axes}
    concepts = []
    on_concepts = discovery[discovery["axis"] == ""]
    for key, block in on_concepts.groupby(["concept_set", "concept"], sort=False):
        top = block[block["top"].astype(bool)].sort_values("rank")
        concepts.append(
            {"concept_set": str(key[0]), "concept": str(key[1]), "terms": _term_rows(top)}
        )
    axes = []
    on_axes = discovery[discovery["axis"] != ""]
    for key, block in on_axes.groupby(["concept_set", "axis"], sort=False):
        first, second = (_term_rows(end) for end in axis_ends(block))
        names = groups.get(str(key[1]), [])
        axes.append(
            {
                "concept_set": str(key[0]),
                "axis": str(key[1]),
                "positive_group": str(block["positive_group"].iloc[0]),
                "negative_group": names[1] if len(names) == 2 else "the second group",
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


def _similarity_sections(
    similarity: pd.DataFrame | None,
    structure: pd.DataFrame | None,
    chart_specs: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    if similarity is None:
        return []
    sections = []
    for index, name in enumerate(dict.fromkeys(similarity["concept_set"].tolist())):
        part = similarity[similarity["concept_set"] == name]
        chart_id = f"similarity-{index}"
        points = None
        if structure is not None and (structure["concept_set"] == name).any():
            points = structure[structure["concept_set"] == name]
        leaves = None if points is None else points.sort_values("leaf_order")["concept"]
        order = None if leaves is None else [str(c) for c in leaves]
        chart_specs[chart_id] = charts.similarity_heatmap(part, order).to_dict()
        map_id = None
        clusters: list[list[str]] = []
        if points is not None:
            map_id = f"concept-map-{index}"
            chart_specs[map_id] = charts_outputs_map(points)
            ordered = points.sort_values("leaf_order")
            for _, members in ordered.groupby("cluster", sort=False):
                clusters.append([str(c) for c in members["concept"]])
        pairs = part[part["concept_a"].astype(str) < part["concept_b"].astype(str)]
        top = pairs.sort_values("cosine", ascending=False).head(5)
        sections.append(
            {
                "concept_set": name,
                "n_concepts": int(part["concept_a"].nunique()),
                "chart_id": chart_id,
                "closest": _records(top, ["concept_a", "concept_b", "cosine"]),
                "map_chart_id": map_id,
                "clusters": clusters,
                "ordered": order is not None,
                "labelled": charts.matrix_labelled(int(part["concept_a"].nunique())),
            }
        )
    return sections


def charts_outputs_map(points: pd.DataFrame) -> dict[str, Any]:
    """The concept map chart's spec (structure rows of one concept set)."""
    from auditkit import charts

    return dict(charts.concept_map_chart(points).to_dict())


def _provenance(
    manifest: dict[str, Any], spec_text: str, prompts: pd.DataFrame | None
) -> dict[str, Any]:
    model = dict(manifest.get("model") or {})
    files = [
        {"path": str(f.get("path")), "sha256": f.get("sha256"), "bytes": f.get("bytes")}
        for f in model.pop("files", None) or []
    ]
    flat = _flatten({**manifest, "model": model})
    prompt_rows = []
    if prompts is not None:
        prompt_rows = _records(prompts, ["prompt_id", "role", "set_name", "group", "prompt"])
    return {
        "manifest": [{"key": k, "value": v} for k, v in flat],
        "files": files,
        "manifest_json": json.dumps(manifest, indent=2, sort_keys=False),
        "spec_yaml": spec_text,
        "prompts": prompt_rows,
    }


# --- helpers -------------------------------------------------------------------------------


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested manifest -> (dotted key, display string) pairs, in file order."""
    if isinstance(value, dict) and value:
        out: list[tuple[str, str]] = []
        for key, item in value.items():
            out.extend(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and value and any(isinstance(v, dict | list) for v in value):
        out = []
        for i, item in enumerate(value):
            out.extend(_flatten(item, f"{prefix}[{i}]"))
        return out
    if isinstance(value, list):
        return [(prefix, ", ".join(json.dumps(v) if v is None else str(v) for v in value))]
    if value is None or isinstance(value, bool) or value == {}:
        return [(prefix, json.dumps(value))]
    return [(prefix, str(value))]


def _num(value: Any) -> float | None:
    """A finite float, or None (NaN, missing)."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _records(frame: pd.DataFrame, columns: list[str]) -> list[dict[str, Any]]:
    out = []
    for row in frame[columns].itertuples(index=False):
        record: dict[str, Any] = {}
        for column, value in zip(columns, row, strict=True):
            if isinstance(value, str):
                record[column] = value
            elif pd.api.types.is_number(value) and not isinstance(value, bool):
                record[column] = _num(value)
            else:
                record[column] = value if value is None else str(value)
        out.append(record)
    return out
