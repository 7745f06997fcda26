"""The report's discovered associations: the top mined terms per concept and at each axis end."""

from __future__ import annotations

from typing import Any

import pandas as pd

from auditkit.analyses.values import clear_of_zero, finite
from auditkit.analyze.discovery import axis_ends
from auditkit.spec import AuditSpec


def _term_rows(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Discovered terms for a table: text, cosine, its interval and captions containing it."""
    out = []
    for row in rows.to_dict("records"):
        low, high = finite(row["cosine_ci_low"]), finite(row["cosine_ci_high"])
        out.append(
            {
                "term": str(row["term"]),
                "rank": int(row["rank"]),
                "count": int(row["count"]),
                "cosine": finite(row["cosine"]),
                "ci_low": low,
                "ci_high": high,
                "clear_of_zero": clear_of_zero(low, high),
            }
        )
    return out


def discovery_section(extra: dict[str, pd.DataFrame], spec: AuditSpec) -> dict[str, Any] | None:
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
