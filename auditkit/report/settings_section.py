"""The report's settings and provenance: the statistics as run, the settings cards, the axes and
concept sets as defined (with the terms the run prompted), and the manifest appendix."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import yaml

from auditkit import charts
from auditkit.analyses.values import frame_records
from auditkit.spec import AuditSpec


def bootstrap_block(
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


def settings_blocks(
    spec: AuditSpec, manifest: dict[str, Any], bootstrap: dict[str, Any] | None
) -> list[dict[str, Any]]:
    seeds = spec.seed_list
    shown = ", ".join(str(s) for s in seeds[:12]) + (" …" if len(seeds) > 12 else "")
    probe_steps = "all" if spec.probe.steps == "all" else ", ".join(map(str, spec.probe.steps))
    chosen = spec.probe.step_h_stored
    stored_steps = (
        []
        if chosen == "all"
        else [
            (
                "Per-step h stored",
                f"steps {', '.join(map(str, chosen))}, and the mean over every kept step "
                "(accumulated on the device)",
            )
        ]
    )
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
                ("Image tokens (transformer blocks)", spec.probe.tokens),
                ("Guidance half", spec.probe.guidance_half),
                ("Stored dtype", spec.probe.dtype_stored),
                *stored_steps,
                ("Seeds", f"{len(seeds)} ({shown}), the same for every prompt"),
                *statistics,
                ("Centring reference", centring),
                ("Analyses", ", ".join(spec.analyses)),
            ],
        },
    ]


def definitions(spec: AuditSpec, prompts: pd.DataFrame | None) -> dict[str, Any]:
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
    return {"axes": axes, "concepts": concepts, "libraries": library_rows(spec)}


def library_rows(spec: AuditSpec) -> list[dict[str, Any]]:
    """One row per prompt library the spec took a concept set or an axis from: its version,
    content hash, where it was used, and its source and license as this auditkit ships that
    version (or a note that it does not ship it with that hash)."""
    from auditkit.errors import UsageError
    from auditkit.prompts import find_library

    rows = []
    for use in spec.libraries:
        ref = f"{use.library}@{use.version}"
        try:
            shipped = find_library(ref)
        except UsageError:
            shipped = None
        same = shipped is not None and shipped.sha256 == use.sha256
        rows.append(
            {
                "ref": ref,
                "sha256": use.sha256,
                "used_in": use.used_in,
                "name": use.name,
                "wording": use.wording,
                "terms": use.terms,
                "citation": shipped.library.source.citation if same and shipped else None,
                "license": shipped.library.source.license if same and shipped else None,
                "url": shipped.library.source.url if same and shipped else None,
            }
        )
    return rows


SEAL_FIELDS = ("files", "seal")
"""The manifest's integrity fields (:mod:`auditkit.rundir.integrity`), not shown in the report."""


def provenance(
    manifest: dict[str, Any], spec_text: str, prompts: pd.DataFrame | None
) -> dict[str, Any]:
    # the seal lists the report's own checksum, so the report (written before it) shows the
    # manifest without it: 'auditkit verify' checks it
    manifest = {k: v for k, v in manifest.items() if k not in SEAL_FIELDS}
    model = dict(manifest.get("model") or {})
    files = [
        {"path": str(f.get("path")), "sha256": f.get("sha256"), "bytes": f.get("bytes")}
        for f in model.pop("files", None) or []
    ]
    flat = _flatten({**manifest, "model": model})
    prompt_rows = []
    if prompts is not None:
        prompt_rows = frame_records(prompts, ["prompt_id", "role", "set_name", "group", "prompt"])
        for row in prompt_rows:  # the PDF's listing pads them: text, never None
            row.update({k: "" if row[k] is None else str(row[k]) for k in LISTING_COLUMNS})
    return {
        "manifest": [{"key": k, "value": v} for k, v in flat],
        "files": files,
        "manifest_json": json.dumps(manifest, indent=2, sort_keys=False),
        "spec_yaml": spec_text,
        "prompts": prompt_rows,
        "prompt_widths": {
            key: min(LISTING_WIDTH_CAP, max([len(title), *(len(r[key]) for r in prompt_rows)]))
            for key, title in LISTING_COLUMNS.items()
        },
    }


LISTING_COLUMNS = {"prompt_id": "prompt id", "role": "role", "set_name": "set", "group": "group"}
"""The columns the PDF's prompt listing pads to a common width (the prompt itself ends each
line), with their titles."""
LISTING_WIDTH_CAP = 24
"""Widest a padded column of the prompt listing gets: a longer value pushes its own line on."""


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
