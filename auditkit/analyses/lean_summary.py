"""The lean's part of ``summary.json``: every lean with its interval and labels (``leans``),
each axis's headline numbers (``axes``) and the lean and significance findings."""

from __future__ import annotations

from typing import Any

import pandas as pd

from auditkit.analyze.significance import effect_of, rule_of, rule_words
from auditkit.analyze.stats import summary_number


def axis_fields(axes: pd.DataFrame | None, lean: pd.DataFrame | None) -> dict[str, dict[str, Any]]:
    """Per two-group axis with leans: its largest and mean score, its five strongest leans and,
    when judged, how many were tested and found."""
    out: dict[str, dict[str, Any]] = {}
    for axis, rows, ordered in _axis_rows(axes, lean):
        entry: dict[str, Any] = {
            "max_abs_score": summary_number(ordered["score"].abs().max()),
            "mean_score": summary_number(rows["score"].mean()),
            "top": [
                {
                    "concept_set": r.concept_set,
                    "concept": r.concept,
                    "score": summary_number(r.score),
                    "toward": r.toward,
                    **_labels(r),
                }
                for r in ordered.head(5).itertuples()
            ],
        }
        if "significant" in rows.columns:
            entry["significance"] = _significance_entry(rows)
        out[axis] = entry
    return out


def lean_findings(axes: pd.DataFrame | None, lean: pd.DataFrame | None) -> list[str]:
    """Per two-group axis with leans, in the axes' order: where its concepts lean and, when
    judged, which leans are findings."""
    findings = []
    for axis, rows, ordered in _axis_rows(axes, lean):
        findings.append(_lean_sentence(axis, rows, ordered))
        if "significant" in rows.columns:
            findings.append(_significance_sentence(axis, rows))
    return findings


def _axis_rows(
    axes: pd.DataFrame | None, lean: pd.DataFrame | None
) -> list[tuple[str, pd.DataFrame, pd.DataFrame]]:
    """(axis, its lean rows, those rows strongest first) per two-group axis with leans."""
    if axes is None or lean is None or lean.empty:
        return []
    out = []
    for row in axes.itertuples():
        if row.n_groups != 2:
            continue
        rows = lean[lean["axis"] == row.axis]
        ordered = rows.reindex(rows["score"].abs().sort_values(ascending=False).index)
        out.append((str(row.axis), rows, ordered))
    return out


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
        out["q_value"] = summary_number(row.q_value)
        out["label"] = "significant" if row.significant else "not significant"
    if hasattr(row, "fragile"):
        out["fragile"] = bool(row.fragile)
    return out


def lean_records(lean: pd.DataFrame | None) -> list[dict[str, Any]]:
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
            "score": summary_number(r.score),
            "cosine": summary_number(r.cosine),
        }
        if hasattr(r, "score_ci_low"):
            record["score_ci"] = [summary_number(r.score_ci_low), summary_number(r.score_ci_high)]
        if hasattr(r, "marked_position"):
            record["marked_position"] = summary_number(r.marked_position)
            if hasattr(r, "marked_position_ci_low"):
                record["marked_position_ci"] = [
                    summary_number(r.marked_position_ci_low),
                    summary_number(r.marked_position_ci_high),
                ]
        if hasattr(r, "p_value"):
            record["p_value"] = summary_number(r.p_value)
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
        "effect": effect_of(rows),
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
    rule, band = rule_of(rows)
    stat = effect_of(rows)  # the statistic judged: the hits are named by its size and side
    hits = tested[tested["significant"]]
    hits = hits.loc[hits[stat].abs().sort_values(ascending=False, kind="stable").index]
    if hits.empty:
        if rule == "min_effect":
            what = "no position between marked variants" if stat != "score" else "none"
            return (
                f"Along '{axis}', no lean is significant: {what} is beyond ±{band:g} with "
                "95% confidence after correction for multiple testing."
            )
        return (
            f"Along '{axis}', no lean is significant: none stands out from its null model "
            "after correction for multiple testing."
        )
    pos, neg = rows["positive_group"].iloc[0], rows["negative_group"].iloc[0]
    names = ", ".join(
        f"'{r.concept}' towards '{pos if getattr(r, stat) > 0 else neg}'"
        for r in hits.head(5).itertuples()
    )
    more = f" and {len(hits) - 5} more" if len(hits) > 5 else ""
    fragile = int(hits["fragile"].sum()) if "fragile" in hits.columns else 0
    caveat = (
        f" ({fragile} of them fragile: the sign depends on wording or centring)" if fragile else ""
    )
    return (
        f"Along '{axis}', {len(hits)} of {len(tested)} leans are significant ("
        f"{rule_words(rule, band, stat)}; false discovery rate controlled across the audit): "
        f"{names}{more}{caveat}."
    )
