"""The JSON summary (derived from the tables) and reading/writing ``results/``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from auditkit.analyze.significance import rule_of, rule_words
from auditkit.analyze.tables import ANALYSIS_TABLES, AuditResults
from auditkit.rundir import JSON_FILES, RunDir, as_run_dir
from auditkit.spec.audit import AuditSpec

EXTRA_TABLES = ("causal", "causal_curve", "causal_axes", "discovery")


def summarize(
    spec: AuditSpec,
    results: AuditResults,
    *,
    run_id: str,
    spec_hash: str,
    plan_hash: str,
    extra: Mapping[str, pd.DataFrame] | None = None,
    slices: Mapping[str, tuple[list[str], dict[str, Any] | None]] | None = None,
) -> dict[str, Any]:
    """The versioned JSON summary: settings, per-axis headline numbers, plain findings.

    ``extra`` holds the optional tables written outside :func:`~auditkit.analyze.tables.analyze`
    (:func:`read_extra_tables`: the causal check's ``causal_curve`` / ``causal_axes`` and the
    discovery ranking ``discovery``); with them the summary gains ``causal`` and ``discovery``
    blocks and their findings. Both keys are optional in schema version 1.
    """
    extra = extra or {}
    axes_out = []
    findings: list[str] = []
    lean_table = results.tables.get("lean")
    for row in results["axes"].itertuples():
        entry: dict[str, Any] = {
            "axis": row.axis,
            "groups": str(row.groups).split(","),
            "norm": _num(row.norm),
            "step_consistency": _num(row.step_consistency),
        }
        if lean_table is not None and not lean_table.empty and row.n_groups == 2:
            rows = lean_table[lean_table["axis"] == row.axis]
            ordered = rows.reindex(rows["score"].abs().sort_values(ascending=False).index)
            entry["max_abs_score"] = _num(ordered["score"].abs().max())
            entry["mean_score"] = _num(rows["score"].mean())
            entry["top"] = [
                {
                    "concept_set": r.concept_set,
                    "concept": r.concept,
                    "score": _num(r.score),
                    "toward": r.toward,
                    **_labels(r),
                }
                for r in ordered.head(5).itertuples()
            ]
            findings.append(_lean_sentence(str(row.axis), rows, ordered))
            if "significant" in rows.columns:
                entry["significance"] = _significance_entry(rows)
                findings.append(_significance_sentence(str(row.axis), rows))
        axes_out.append(entry)
    findings.extend(_output_sentences(results))
    blocks: dict[str, Any] = {}
    for name, (sentences, block) in (slices or {}).items():
        findings.extend(sentences)
        if block is not None:
            blocks[name] = block
    causal = causal_records(extra, spec.probe.hook)
    findings.extend(str(entry["statement"]) for entry in causal or [])
    discovery = extra.get("discovery")
    findings.extend(discovery_sentences(discovery, _axis_groups(spec)))
    prompts = results["prompts"]
    summary: dict[str, Any] = {
        "schema_version": JSON_FILES["summary"].version,
        "kind": "auditkit.summary",
        "audit": spec.name,
        "run_id": run_id,
        "spec_hash": spec_hash,
        "plan_hash": plan_hash,
        "model": {
            "id": spec.model.id,
            "revision": spec.model.revision,
            "pipeline": spec.model.pipeline,
        },
        "settings": {
            "steps": spec.model.steps,
            "guidance_scale": spec.model.guidance_scale,
            "resolution": spec.model.resolution,
            "seeds": len(spec.seed_list),
            "hook": spec.probe.hook,
            "aggregation": spec.probe.aggregation,
            "spatial_pool": spec.probe.spatial_pool,
            "guidance_half": spec.probe.guidance_half,
            "centring": spec.centring.reference,
            "resampling": spec.statistics.resampling,
            "rule": spec.statistics.rule,
            "min_effect": spec.statistics.min_effect,
            "alpha": spec.statistics.alpha,
        },
        "axes": axes_out,
        "findings": findings,
        "leans": _lean_records(lean_table),
        "outputs": _output_records(results),
        "counts": {
            "prompts": len(prompts),
            "units": len(prompts) * len(spec.seed_list),
            "concepts": sum(len(c.terms) for c in spec.concepts),
        },
    }
    if blocks:
        summary["analyses"] = blocks
    if causal is not None:
        summary["causal"] = causal
    if discovery is not None:
        summary["discovery"] = discovery_records(discovery, _axis_groups(spec))
    return summary


def _num(value: Any) -> float | None:
    """A number for JSON: None when NaN or infinite (JSON has neither)."""
    value = float(value)
    return round(value, 6) if math.isfinite(value) else None


def _lean_sentence(axis: str, rows: pd.DataFrame, ordered: pd.DataFrame) -> str:
    top = ordered.iloc[0]
    pos = rows["positive_group"].iloc[0]
    n_pos = int((rows["score"] > 0).sum())
    interval = ""
    if hasattr(top, "score_ci_low"):
        interval = f", 95% CI [{top.score_ci_low:+.3f}, {top.score_ci_high:+.3f}]"
    return (
        f"Along '{axis}', {n_pos} of {len(rows)} concepts lean towards '{pos}'; the strongest "
        f"lean is '{top.concept}' towards '{top.toward}' (score {top.score:+.3f}{interval}, "
        "where ±1 is the distance from the midpoint to a group's mean)."
    )


def _labels(row: Any) -> dict[str, Any]:
    """Plain-language labels of one lean row (only those the table can support)."""
    out: dict[str, Any] = {}
    if hasattr(row, "significant"):
        out["significant"] = bool(row.significant)
        out["q_value"] = _num(row.q_value)
        out["label"] = "significant" if row.significant else "not significant"
    if hasattr(row, "fragile"):
        out["fragile"] = bool(row.fragile)
    return out


def _lean_records(lean: pd.DataFrame | None) -> list[dict[str, Any]]:
    """Every lean with its interval and labels: what a CI system or a gate reads."""
    if lean is None or lean.empty:
        return []
    records = []
    for r in lean.itertuples():
        record: dict[str, Any] = {
            "axis": r.axis,
            "concept_set": r.concept_set,
            "concept": r.concept,
            "toward": r.toward,
            "score": _num(r.score),
            "cosine": _num(r.cosine),
        }
        if hasattr(r, "score_ci_low"):
            record["score_ci"] = [_num(r.score_ci_low), _num(r.score_ci_high)]
        if hasattr(r, "p_value"):
            record["p_value"] = _num(r.p_value)
        record.update(_labels(r))
        records.append(record)
    return records


def _significance_entry(rows: pd.DataFrame) -> dict[str, Any]:
    tested = rows["p_value"].notna()
    rule, band = rule_of(rows)
    entry: dict[str, Any] = {
        "tested": int(tested.sum()),
        "significant": int(rows["significant"].sum()),
        "rule": rule,
        "min_effect": band,
    }
    if rule != "min_effect":
        entry["null_model"] = rule
    return entry


def _significance_sentence(axis: str, rows: pd.DataFrame) -> str:
    tested = rows[rows["p_value"].notna()]
    if tested.empty:
        return (
            f"Along '{axis}', no lean could be tested for significance (one seed, or fewer "
            "than three concepts for the vocabulary null)."
        )
    hits = tested[tested["significant"]]
    hits = hits.loc[hits["score"].abs().sort_values(ascending=False, kind="stable").index]
    rule, band = rule_of(rows)
    if hits.empty:
        if rule == "min_effect":
            return (
                f"Along '{axis}', no lean is significant: none is beyond ±{band:g} with 95% "
                "confidence after correction for multiple testing."
            )
        return (
            f"Along '{axis}', no lean is significant: none stands out from its null model "
            "after correction for multiple testing."
        )
    names = ", ".join(f"'{r.concept}' towards '{r.toward}'" for r in hits.head(5).itertuples())
    more = f" and {len(hits) - 5} more" if len(hits) > 5 else ""
    fragile = int(hits["fragile"].sum()) if "fragile" in hits.columns else 0
    caveat = (
        f" ({fragile} of them fragile: the sign depends on wording or centring)" if fragile else ""
    )
    return (
        f"Along '{axis}', {len(hits)} of {len(tested)} leans are significant ("
        f"{rule_words(rule, band)}; false discovery rate controlled across the audit): "
        f"{names}{more}{caveat}."
    )


def _output_records(results: AuditResults) -> dict[str, Any] | None:
    """Output-level numbers (captioned shares vs reference, and agreement), when captioned."""
    outputs = results.tables.get("outputs")
    if outputs is None:
        return None
    agreement = results.tables.get("agreement")
    amplified = results.tables.get("amplification")
    per_concept = outputs.drop_duplicates(["concept_set", "concept", "attribute"])
    records: dict[str, Any] = {
        "largest_gap": [
            {
                "attribute": r.attribute,
                "concept_set": r.concept_set,
                "concept": r.concept,
                "group": r.max_gap_group,
                "gap": _num(r.max_abs_gap),
                "kl_bits": _num(r.kl_bits),
            }
            for r in per_concept.sort_values("max_abs_gap", ascending=False).itertuples()
        ],
        "agreement": []
        if agreement is None
        else [
            {
                "axis": r.axis,
                "rho": _num(r.rho),
                "rho_ci": [_num(r.rho_ci_low), _num(r.rho_ci_high)],
                "n_concepts": int(str(r.n_concepts)),
                "statement": str(r.statement),
            }
            for r in agreement.itertuples()
        ],
    }
    if amplified is not None:
        from auditkit.analyze.guidance import amplification_verdict

        records["amplification"] = [
            {
                "attribute": str(r["attribute"]),
                "guidance": _num(r["guidance"]),
                "audit_guidance": _num(r["audit_guidance"]),
                "spread": _num(r["spread"]),
                "audit_spread": _num(r["audit_spread"]),
                "amplification": _num(r["amplification"]),
                "amplification_ci": [
                    _num(r["amplification_ci_low"]),
                    _num(r["amplification_ci_high"]),
                ],
                "n_concepts": int(r["n_concepts"]),
                "statement": amplification_verdict(r),
            }
            for r in amplified.to_dict("records")
        ]
    return records


def _output_sentences(results: AuditResults) -> list[str]:
    agreement = results.tables.get("agreement")
    out = []
    for r in [] if agreement is None else agreement.to_dict("records"):
        axis, statement, rho = str(r["axis"]), str(r["statement"]), _num(r["rho"])
        if rho is None:
            out.append(f"Outputs vs latent lean on '{axis}': {statement}.")
            continue
        out.append(
            f"Outputs vs latent lean on '{axis}': {statement} (Spearman {rho:+.2f}, 95% "
            f"CI [{float(r['rho_ci_low']):+.2f}, {float(r['rho_ci_high']):+.2f}] across "
            f"{int(r['n_concepts'])} concepts, comparing the lean score with the share of images "
            f"read as '{r['positive_group']}')."
        )
    amplified = results.tables.get("amplification")
    if amplified is not None:
        from auditkit.analyze.guidance import amplification_sentence

        out.extend(amplification_sentence(r) for r in amplified.to_dict("records"))
    return out


# --- causal check and discovery (optional tables outside analyze()) --------------------------


def read_extra_tables(run_dir: Path | RunDir) -> dict[str, pd.DataFrame]:
    """The optional tables a run directory has, by name: the causal check's ``causal``,
    ``causal_curve`` and ``causal_axes`` (``captions/``) and the discovery ranking
    ``discovery`` (``results/``). A missing file is left out.

    Raises:
        SchemaVersionError: a table was written by a newer auditkit.
        UsageError: a table lacks a column its schema requires.
    """
    return as_run_dir(run_dir).tables(list(EXTRA_TABLES))


def alpha_text(alpha: float) -> str:
    """A steering strength for prose: ``−1``, ``0``, ``+0.5`` (true minus sign)."""
    return "0" if alpha == 0 else f"{alpha:+g}".replace("-", "−")


def causal_verdict(points: pd.DataFrame, monotone: bool) -> str:
    """One axis's dose-response in a word, from its ``causal_curve`` rows.

    ``causal``: the share of the first group at the largest alpha is clearly (disjoint 95%
    Wilson intervals) above the share at the smallest, and never falls in between;
    ``not monotone``: clearly above, but falls somewhere; ``reversed``: clearly below;
    ``no clear effect``: the intervals at the two ends overlap; ``not measured``: fewer than two
    alphas with images read as either group.
    """
    read = points[points["share"].notna()].sort_values("alpha")
    if len(read) < 2:
        return "not measured"
    low, high = read.iloc[0], read.iloc[-1]
    if float(high["share_low"]) > float(low["share_high"]):
        return "causal" if monotone else "not monotone"
    if float(high["share_high"]) < float(low["share_low"]):
        return "reversed"
    return "no clear effect"


def causal_statement(row: Mapping[str, Any], points: pd.DataFrame, hook: str) -> str:
    """A plain sentence on one steered axis (its ``causal_axes`` row and curve points)."""
    axis, pos = str(row["axis"]), str(row["positive_group"])
    verdict = causal_verdict(points, bool(row["monotone"]))
    if verdict == "not measured":
        return (
            f"Causal check on '{axis}': the captioner read too few steered images as "
            f"'{pos}' or '{row['negative_group']}' to measure a dose-response."
        )
    read = points[points["share"].notna()].sort_values("alpha")
    low, high = read.iloc[0], read.iloc[-1]
    moves = (
        f"Causal check on '{axis}': adding α·g to the {hook} output at every "
        f"denoising step moves the share of images read as '{pos}' from {low['share']:.2f} "
        f"(α = {alpha_text(low['alpha'])}) to {high['share']:.2f} "
        f"(α = {alpha_text(high['alpha'])})"
    )
    if verdict == "causal":
        return moves + ", monotonically: the direction is causally used by the model."
    if verdict == "not monotone":
        shares, alphas = read["share"].tolist(), read["alpha"].tolist()
        fall = next((i for i in range(len(shares) - 1) if shares[i + 1] < shares[i]), None)
        where = (
            f" (it falls between α = {alpha_text(alphas[fall])} and {alpha_text(alphas[fall + 1])})"
            if fall is not None
            else " (some α had no image read as either group)"
        )
        return (
            moves + f", but not monotonically{where}: steering along the direction changes "
            "what the model draws, but not as a steady dose-response."
        )
    if verdict == "reversed":
        return (
            moves + ": the share falls as α grows, against the direction's sign, so the "
            "direction changes what the model draws but not the way the latent axis predicts."
        )
    return (
        moves + ": the 95% intervals at the two ends overlap, so steering has no clear effect "
        "on what the model draws and the direction is not shown to be causally used."
    )


def causal_records(extra: Mapping[str, pd.DataFrame], hook: str) -> list[dict[str, Any]] | None:
    """The summary's ``causal`` block (per steered axis), or None without a causal check."""
    curve, axes = extra.get("causal_curve"), extra.get("causal_axes")
    if curve is None or axes is None:
        return None
    out = []
    for record in axes.to_dict("records"):
        row = {str(k): v for k, v in record.items()}
        points = curve[curve["axis"] == row["axis"]].sort_values("alpha")
        out.append(
            {
                "axis": str(row["axis"]),
                "positive_group": str(row["positive_group"]),
                "negative_group": str(row["negative_group"]),
                "hook": hook,
                "shares": [
                    {
                        "alpha": _num(p.alpha),
                        "share": _num(p.share),
                        "share_ci": [_num(p.share_low), _num(p.share_high)],
                        "n_images": int(str(p.n_images)),
                        "n_unread": int(str(p.n_unread)),
                    }
                    for p in points.itertuples()
                ],
                "effect": _num(row["effect"]),
                "monotone": bool(row["monotone"]),
                "verdict": causal_verdict(points, bool(row["monotone"])),
                "rho": _num(row["rho"]),
                "slope": _num(row["slope"]),
                "n_concepts": int(row["n_concepts"]),
                "n_images": int(row["n_images"]),
                "direction_norm": _num(row["direction_norm"]),
                "statement": causal_statement(row, points, hook),
            }
        )
    return out


def _axis_groups(spec: AuditSpec) -> dict[str, list[str]]:
    return {a.name: list(a.groups) for a in spec.axes}


def axis_ends(block: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``top`` terms of one (concept set, axis) block of ``discovery``: those at the first
    group's end (highest lean cosine first) and at the second's (lowest first). A term is kept
    at an end only if it leans that way (positive cosine at the first group's end, negative at
    the second's), so an end can be empty."""
    top = block[block["top"].astype(bool)]
    half = (len(block) + 1) // 2
    first = top[(top["rank"] <= half) & (top["cosine"] > 0)].sort_values("rank")
    second = top[(top["rank"] > half) & (top["cosine"] < 0)]
    return first, second.sort_values("rank", ascending=False)


def _term_records(rows: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {
            "term": str(r["term"]),
            "cosine": _num(r["cosine"]),
            "cosine_ci": [_num(r["cosine_ci_low"]), _num(r["cosine_ci_high"])],
            "count": int(r["count"]),
            "rank": int(r["rank"]),
        }
        for r in rows.to_dict("records")
    ]


def discovery_records(discovery: pd.DataFrame, groups: Mapping[str, list[str]]) -> dict[str, Any]:
    """The summary's ``discovery`` block: the top terms per concept and at each axis end."""
    on_concepts = discovery[discovery["axis"] == ""]
    concepts = [
        {
            "concept_set": str(key[0]),
            "concept": str(key[1]),
            "top": _term_records(block[block["top"]].sort_values("rank")),
        }
        for key, block in on_concepts.groupby(["concept_set", "concept"], sort=False)
    ]
    axes = []
    for key, block in discovery[discovery["axis"] != ""].groupby(
        ["concept_set", "axis"], sort=False
    ):
        first, second = axis_ends(block)
        names = groups.get(str(key[1]), [])
        axes.append(
            {
                "concept_set": str(key[0]),
                "axis": str(key[1]),
                "positive_group": str(block["positive_group"].iloc[0]),
                "negative_group": names[1] if len(names) == 2 else "",
                "toward_positive": _term_records(first),
                "toward_negative": _term_records(second),
            }
        )
    return {"n_terms": int(discovery["term"].nunique()), "concepts": concepts, "axes": axes}


def _quoted_terms(rows: pd.DataFrame, limit: int = 3) -> str:
    if rows.empty:
        return "none"
    return ", ".join(f"'{r.term}' ({_signed(r.cosine)})" for r in rows.head(limit).itertuples())


def _signed(value: Any) -> str:
    number = _num(value)
    return "n/a" if number is None else f"{number:+.2f}"


def discovery_sentences(
    discovery: pd.DataFrame | None, groups: Mapping[str, list[str]]
) -> list[str]:
    """Findings from the discovery ranking: each concept's best-aligned mined term, and the
    mined terms at each end of every two-group axis."""
    if discovery is None:
        return []
    if discovery.empty:
        return ["Open-vocabulary discovery kept no term: none was frequent enough in the captions."]
    out = []
    best = discovery[(discovery["axis"] == "") & (discovery["rank"] == 1)]
    for cset, block in best.groupby("concept_set", sort=False):
        pairs = "; ".join(
            f"'{r.concept}': '{r.term}' ({_signed(r.cosine)})" for r in block.itertuples()
        )
        out.append(
            f"Of the terms mined from the captions of '{cset}', the one most aligned with each "
            f"concept's centred latent: {pairs}."
        )
    for key, block in discovery[discovery["axis"] != ""].groupby(
        ["concept_set", "axis"], sort=False
    ):
        first, second = axis_ends(block)
        names = groups.get(str(key[1]), [])
        negative = names[1] if len(names) == 2 else "the second group"
        out.append(
            f"Of the terms mined for '{key[0]}', those leaning most towards "
            f"'{block['positive_group'].iloc[0]}' along '{key[1]}' are {_quoted_terms(first)}; "
            f"towards '{negative}': {_quoted_terms(second)}."
        )
    return out


def write_results(results: AuditResults, summary: dict[str, Any], run_dir: Path | RunDir) -> None:
    """Write every table (stamped with its schema version) and the summary, each atomically."""
    run = as_run_dir(run_dir)
    for name, frame in results.tables.items():
        run.write_table(name, frame)
    run.write_json("summary", summary)


def read_results(
    run_dir: Path | RunDir, more: tuple[str, ...] = ()
) -> tuple[AuditResults, dict[str, Any]]:
    """Read the analysis tables (the built-in ones and those named in ``more``, e.g. the
    analysis slices') and the summary back (migrating older tables, refusing newer)."""
    run = as_run_dir(run_dir)
    summary = run.read_json("summary")
    return AuditResults(tables=run.tables([*ANALYSIS_TABLES, *more])), summary
