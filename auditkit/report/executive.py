"""The executive summary: a few plain sentences from the results, each number with its interval.

Written for a reader who will not open the rest of the report: what was audited, which
associations stand out from noise (with their 95% intervals), what the images show, whether
the latent and image evidence agree, whether steering along an axis changes the images, and
whether the gates pass. Built from the result tables alone, so any run directory (also one from
an earlier auditkit) gets one; a part whose table the run lacks is left out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from auditkit.analyze.causal import alpha_text, causal_verdict
from auditkit.analyze.guidance import times_text
from auditkit.analyze.significance import effect_of, rule_of
from auditkit.spec import AuditSpec

TOP_PER_END = 3
"""Concepts named per end of an axis."""


def executive_summary(
    spec: AuditSpec,
    tables: Mapping[str, pd.DataFrame | None],
    extra: Mapping[str, pd.DataFrame],
    gates: Mapping[str, Any] | None,
    model: str,
) -> list[dict[str, str]]:
    """Paragraphs ``{"topic", "text"}`` in reading order."""
    lean = tables.get("lean")
    out = [{"topic": "Scope", "text": _scope(spec, lean, model)}]
    if gates:
        out.append({"topic": "Gates", "text": _gates(gates)})
    if lean is not None and not lean.empty:
        for axis, rows in lean.groupby("axis", sort=False):
            out.append({"topic": f"Lean: {axis}", "text": _axis(str(axis), rows)})
    outputs, agreement = tables.get("outputs"), tables.get("agreement")
    if outputs is not None and not outputs.empty:
        for text in _outputs(spec, outputs, agreement):
            out.append({"topic": "Images", "text": text})
    amplified = tables.get("amplification")
    if amplified is not None and not amplified.empty:
        order = {a.name: i for i, a in enumerate(spec.axes)}
        ranked = amplified.sort_values(
            "attribute", key=lambda c: c.astype(str).map(lambda a: order.get(a, len(order)))
        )
        out.append({"topic": "Guidance", "text": _guidance(ranked)})
    if agreement is not None and not agreement.empty:
        out.append({"topic": "Agreement", "text": _agreement(agreement)})
    curve, axes = extra.get("causal_curve"), extra.get("causal_axes")
    if curve is not None and axes is not None and not axes.empty:
        out.append({"topic": "Causal check", "text": _causal(curve, axes)})
    return out


def _scope(spec: AuditSpec, lean: pd.DataFrame | None, model: str) -> str:
    concepts = sum(len(c.terms) for c in spec.concepts)
    axes = [a.name for a in spec.axes]
    text = (
        f"This audit of {model} measured how {concepts} concept{_s(concepts)} lean along "
        f"{len(axes)} {'axis' if len(axes) == 1 else 'axes'} ({', '.join(axes)}), from the "
        f"model's internal activations over {len(spec.seed_list)} seed{_s(len(spec.seed_list))} "
        f"per prompt."
    )
    if lean is not None and "significant" in lean.columns and not lean.empty:
        count = int(lean["significant"].fillna(False).astype(bool).sum())
        alpha = spec.statistics.alpha
        rule, band = rule_of(lean)
        by_position = rule == "min_effect" and effect_of(lean) == "marked_position"
        claim = f"beyond ±{band:g} with 95% confidence, " if rule == "min_effect" else ""
        if by_position:
            claim = f"their position between marked variants beyond ±{band:g} with 95% confidence, "
        text += (
            f" {count} of {len(lean)} concept–axis leans are significant ({claim}false "
            f"discovery rate {alpha:g} across the audit)."
        )
        if by_position:
            return text + (
                " A position of ±1 means a concept's prompt sits where the concept marked with "
                "one group sits ('a man doctor'), 0 midway; brackets give 95% intervals."
            )
    return text + (
        " A lean score of ±1 means a concept sits as far along the axis as the group prompts "
        "themselves; brackets give 95% intervals."
    )


def _gates(gates: Mapping[str, Any]) -> str:
    results = list(gates.get("gates", []))
    total = int(gates.get("total", len(results)))
    failed = sorted(
        (g for g in results if not g.get("passed")), key=_gate_excess, reverse=True
    )  # the furthest beyond its bound first
    if not failed:
        return f"All {total} gate{_s(total)} set in the spec pass."
    names = "; ".join(_gate_text(g) for g in failed[:3])
    more = f"; and {len(failed) - 3} more" if len(failed) > 3 else ""
    return f"{len(failed)} of {total} gate{_s(total)} fail, so CI fails this audit: {names}{more}."


def _gate_excess(gate: Mapping[str, Any]) -> float:
    """How far a failed gate's value lies beyond its bound (infinite when it has no value)."""
    value, threshold = gate.get("value"), gate.get("threshold")
    if not (_finite(value) and _finite(threshold)):
        return float("inf")
    excess = float(value) - float(threshold)  # type: ignore[arg-type]
    return excess if gate.get("bound") == "max" else -excess


def _gate_text(gate: Mapping[str, Any]) -> str:
    value: Any = gate.get("value")
    threshold: Any = gate.get("threshold")
    if not _finite(value):
        return f"'{gate.get('name')}' (no value: {gate.get('worst') or 'nothing to measure'})"
    limit = "at most" if gate.get("bound") == "max" else "at least"
    bound = float(threshold) if _finite(threshold) else float("nan")
    return f"'{gate.get('name')}' ({float(value):.3g}, allowed {limit} {bound:.3g})"


def _lean_text(row: Any, stat: str = "score") -> str:
    interval = _interval(row.get(f"{stat}_ci_low"), row.get(f"{stat}_ci_high"), signed=True)
    return f"{row['concept']} ({_signed(row[stat])}{interval})"


def _axis(axis: str, rows: pd.DataFrame) -> str:
    return _axis_leans(axis, rows) + _witness_text(rows)


def _witness_text(rows: pd.DataFrame) -> str:
    """Where the images and the latent finding part ways (the lean table's ``witness``)."""
    if "witness" not in rows.columns:
        return ""
    first = str(rows["positive_group"].iloc[0])
    out = ""
    for kind, lead in (
        ("images only", "The images lean clearly where the latent lean does not count for"),
        ("latent only", "The images do not show the significant lean of"),
        ("opposite", "The images lean the other way from the significant lean of"),
    ):
        part = rows[rows["witness"].astype(str) == kind]
        if part.empty:
            continue
        skew = (part["image_share"].astype(float) - 0.5).abs()
        part = part.loc[skew.sort_values(ascending=False, kind="stable").index]  # strongest first
        named = ", ".join(
            f"{r['concept']} ({_percent(r['image_share'])} {first}"
            f"{_interval(r['image_share_low'], r['image_share_high'], percent=True)})"
            for _, r in part.head(TOP_PER_END).iterrows()
        )
        more = f" and {len(part) - TOP_PER_END} more" if len(part) > TOP_PER_END else ""
        out += f" {lead} {named}{more}"
        out += ": the latent lean is a weak witness there." if kind == "images only" else "."
    return out


def _axis_leans(axis: str, rows: pd.DataFrame) -> str:
    first, second = str(rows["positive_group"].iloc[0]), str(rows["negative_group"].iloc[0])
    stands_out, rule = _stands_out(rows)
    stat = effect_of(rows) if "significant" in rows.columns else "score"  # the judged one
    n = len(rows)
    if stands_out.any():
        chosen = rows[stands_out]
        text = f"Along {axis}, {int(stands_out.sum())} of {n} concepts lean {rule}."
        if stat != "score":
            text = text[:-1] + " (position between marked variants)."
        for group, sign in ((first, 1), (second, -1)):
            end = chosen[chosen[stat] * sign > 0].sort_values(
                stat, ascending=sign < 0, key=lambda s: s.astype(float)
            )
            if end.empty:
                continue
            named = ", ".join(_lean_text(r, stat) for _, r in end.head(TOP_PER_END).iterrows())
            more = f" and {len(end) - TOP_PER_END} more" if len(end) > TOP_PER_END else ""
            text += f" Towards {group}: {named}{more}."
        return text
    strongest = _extreme(rows, rows[stat].abs(), True)
    if strongest is None:
        return f"Along {axis}, no lean could be computed."
    toward = first if float(strongest[stat]) > 0 else second
    rule_name, band = rule_of(rows)
    largest = (
        "the largest position between marked variants" if stat != "score" else "the largest lean"
    )
    not_significant = (
        f"which is not beyond ±{band:g} with 95% confidence once every test of the audit is counted"
        if rule_name == "min_effect"
        else "which is not significant once every test of the audit is counted"
    )
    why = {
        "significantly": not_significant,
        "clearly (95% interval clear of 0)": "whose interval includes 0",
    }.get(rule, "with no interval to judge it by")
    return (
        f"Along {axis}, no concept leans {rule}; {largest} is {_lean_text(strongest, stat)} "
        f"towards {toward}, {why}."
    )


def _stands_out(rows: pd.DataFrame) -> tuple[pd.Series, str]:
    """Which leans to name, and the rule in words: significant ones where the run tested
    significance, else those whose interval excludes 0, else the largest third."""
    if "significant" in rows.columns and rows["significant"].notna().any():
        return rows["significant"].fillna(False).astype(bool), "significantly"
    if {"score_ci_low", "score_ci_high"} <= set(rows.columns):
        low, high = rows["score_ci_low"].astype(float), rows["score_ci_high"].astype(float)
        return (low > 0) | (high < 0), "clearly (95% interval clear of 0)"
    cut = rows["score"].abs().quantile(2 / 3)
    return rows["score"].abs() >= cut, "most strongly (no intervals in this run)"


def _outputs(spec: AuditSpec, outputs: pd.DataFrame, agreement: pd.DataFrame | None) -> list[str]:
    """Per attribute an axis reads: the range of the first group's share across concepts."""
    first_group: dict[str, str] = {}
    if agreement is not None and not agreement.empty:
        first_group = {
            str(a): str(g)
            for a, g in zip(agreement["attribute"], agreement["positive_group"], strict=True)
        }
    for axis in spec.axes:
        first_group.setdefault(axis.name, next(iter(axis.groups)))
    first_group = {a.name: first_group[a.name] for a in spec.axes} | first_group
    order = {name: i for i, name in enumerate(first_group)}
    attributes = sorted(
        dict.fromkeys(outputs["attribute"].astype(str)), key=lambda a: order.get(a, len(order))
    )
    from auditkit.analyses.outputs import basis_note, corrected_basis

    outputs = corrected_basis(outputs)
    out = []
    for attribute in attributes:
        rows = outputs[outputs["attribute"].astype(str) == attribute]
        group = first_group.get(attribute)
        part = rows[rows["group"].astype(str) == group] if group else rows.iloc[:0]
        part = part[part["share"].notna()]
        if part.empty:
            out.append(f"No image was read as a {attribute} group, so there is no share to report.")
            continue
        low, high = _extreme(part, part["share"], False), _extreme(part, part["share"], True)
        assert low is not None and high is not None
        reference = _reference(part)
        text = (
            f"In the images, the share read as {group} ({attribute}{basis_note(part)}) ranges "
            f"from {_share_text(low)} to {_share_text(high)}{reference}."
        )
        gap = _extreme(part, part["max_abs_gap"].abs(), True) if "max_abs_gap" in part else None
        if gap is not None and _finite(gap["max_abs_gap"]):
            text += (
                f" The largest gap from the reference is {float(gap['max_abs_gap']):.2f} "
                f"({gap['concept']})."
            )
        out.append(text)
    return out


def _share_text(row: Any) -> str:
    interval = _interval(row.get("share_low"), row.get("share_high"), percent=True)
    return f"{_percent(row['share'])} ({row['concept']}{interval})"


def _reference(part: pd.DataFrame) -> str:
    kinds = set(part["reference_kind"].astype(str)) if "reference_kind" in part else set()
    if kinds == {"uniform"}:
        return f"; a uniform reference would be {_percent(part['reference'].iloc[0])}"
    return "; the references per concept are in the outputs section" if kinds else ""


def _guidance(amplified: pd.DataFrame) -> str:
    parts = []
    for _, row in amplified.iterrows():
        scales = sorted((float(row["guidance"]), float(row["audit_guidance"])))
        between = f"guidance {scales[1]:g} against {scales[0]:g}"
        ratio = float(row["amplification"])
        if math.isnan(ratio):
            parts.append(f"{row['attribute']}: not measured ({between})")
            continue
        low, high = float(row["amplification_ci_low"]), float(row["amplification_ci_high"])
        interval = (
            f", 95% CI {times_text(low)} to {times_text(high)}" if not math.isnan(low) else ""
        )
        parts.append(f"{row['attribute']} {times_text(ratio)}{interval} ({between})")
    return (
        "How much further from the reference the images are at the higher guidance scale: "
        + "; ".join(parts)
        + "."
    )


def _agreement(agreement: pd.DataFrame) -> str:
    parts = []
    for _, row in agreement.iterrows():
        if not _finite(row["rho"]):
            parts.append(f"{row['axis']}: not measured")
            continue
        interval = _interval(row.get("rho_ci_low"), row.get("rho_ci_high"), signed=True)
        parts.append(f"{row['axis']}: {row['statement']}, Spearman {_signed(row['rho'])}{interval}")
    return "Do latent leans and image shares rank the concepts alike? " + "; ".join(parts) + "."


CAUSAL_SHAPE = {
    "causal": "monotonically",
    "not monotone": "not monotonically",
    "reversed": "against the direction's sign (the latent axis does not predict it)",
    "no clear effect": "with no clear effect (the 95% intervals at the two ends overlap)",
}
"""How the summary words each verdict of :func:`~auditkit.analyze.causal.causal_verdict`
(the causal section's statement says the same at length)."""


def _causal(curve: pd.DataFrame, axes: pd.DataFrame) -> str:
    parts = []
    for _, row in axes.iterrows():
        points = curve[curve["axis"].astype(str) == str(row["axis"])]
        points = points[points["share"].notna()].sort_values("alpha")
        if len(points) < 2:
            parts.append(f"steering along {row['axis']} was not measured")
            continue
        start, end = points.iloc[0], points.iloc[-1]
        low = _interval(start.get("share_low"), start.get("share_high"), percent=True)
        high = _interval(end.get("share_low"), end.get("share_high"), percent=True)
        shape = CAUSAL_SHAPE[causal_verdict(points, bool(row.get("monotone")))]
        parts.append(
            f"steering along {row['axis']} moves the share of images read as "
            f"{row['positive_group']} from {_percent(start['share'])}{low} at "
            f"α = {alpha_text(float(start['alpha']))} to {_percent(end['share'])}{high} at "
            f"α = {alpha_text(float(end['alpha']))}, {shape}"
        )
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


def _extreme(frame: pd.DataFrame, values: pd.Series, largest: bool) -> pd.Series | None:
    """The row of ``frame`` where ``values`` is largest (or smallest), NaN ignored; None when
    every value is NaN."""
    numbers = values.astype(float).to_numpy()
    if not np.isfinite(numbers).any():
        return None
    index = np.nanargmax(numbers) if largest else np.nanargmin(numbers)
    return frame.iloc[int(index)]


# --- formatting ------------------------------------------------------------------------------


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _signed(value: Any) -> str:
    return f"{float(value):+.2f}".replace("-", "−")


def _percent(value: Any) -> str:
    return f"{100 * float(value):.0f}%"


def _interval(low: Any, high: Any, *, signed: bool = False, percent: bool = False) -> str:
    if not (_finite(low) and _finite(high)):
        return ""
    if percent:
        return f", 95% CI {_percent(low)}–{_percent(high)}"
    fmt = _signed if signed else (lambda v: f"{float(v):.2f}")
    return f", 95% CI {fmt(low)} to {fmt(high)}"


def _s(count: int) -> str:
    return "" if count == 1 else "s"


__all__ = ["TOP_PER_END", "executive_summary"]
