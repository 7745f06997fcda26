"""Rank discovered terms by their alignment with each concept and each two-group axis.

A discovered term w (a word or phrase mined from captions, :mod:`auditkit.passes.discovery`)
has a prompt latent H(w) of its own. Per concept c of a concept set with centring reference R
(the same R the set's other measures use), its alignment is cos(H(c) − R, H(w) − R); per
two-group axis with direction g, it is the term's lean cosine cos(H(w) − R, g). Both come from
inner products of prompt latents (:mod:`auditkit.analyze.gram`), so their seed-bootstrap
intervals use the convention of :mod:`auditkit.analyze.uncertainty`: one draw of the seeds,
shared by every prompt (concept, axis, base and term prompts alike), with the same generator
seed, hence the same draws as the audit's other intervals.

Everything here is pure: latents, layout and counts in, a tidy table out; and from that table,
the summary's ``discovery`` block and findings (:func:`discovery_records`,
:func:`discovery_sentences`), from each concept's top terms and each axis's ends
(:func:`concept_tops`, :func:`axis_blocks`), which the report shows too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from auditkit.analyze.gram import (
    VectorBasis,
    build_basis,
    centred_cosine,
    gram_of,
    inner_products,
    lean_from_gram,
    resampled_grams,
    seed_gram_tensor,
)
from auditkit.analyze.measures import AuditLayout, build_layout
from auditkit.analyze.stats import summary_number
from auditkit.analyze.uncertainty import CI_LEVEL, bootstrap_weights
from auditkit.plan import expand_prompts
from auditkit.spec.audit import AuditSpec

DISCOVERY_COLUMNS = [
    "concept_set",
    "concept",
    "axis",
    "positive_group",
    "term",
    "count",
    "cosine",
    "cosine_ci_low",
    "cosine_ci_high",
    "rank",
    "top",
]
"""Columns of ``results/discovery.parquet`` (docs/run-directory.md)."""

_CHUNK = 100


def ranking_spec(spec: AuditSpec) -> AuditSpec:
    """The part of ``spec`` the ranking reads: concept sets, centring and two-group axes (no
    crossings, no marked prompts). Not re-validated: it only feeds layouts and prompt lists."""
    return spec.model_copy(
        update={
            "axes": [a for a in spec.axes if len(a.groups) == 2],
            "crossings": [],
            "analyses": ["lean"],
        }
    )


def ranking_prompt_ids(spec: AuditSpec) -> set[str]:
    """Prompt ids whose latents the ranking needs besides the terms' own."""
    return {p.prompt_id for p in expand_prompts(ranking_spec(spec))}


def ranking_layout(spec: AuditSpec, rows: Mapping[str, int]) -> AuditLayout:
    """Layout of :func:`ranking_spec` over latent rows (``rows``: prompt id -> row)."""
    return build_layout(ranking_spec(spec), dict(rows))


def empty_ranking() -> pd.DataFrame:
    """A discovery table with no rows (no term was mined), typed like a full one."""
    types: dict[str, str] = {"count": "int64", "rank": "int64", "top": "bool"}
    types.update({c: "float64" for c in ("cosine", "cosine_ci_low", "cosine_ci_high")})
    return pd.DataFrame({c: pd.Series([], dtype=types.get(c, "object")) for c in DISCOVERY_COLUMNS})


def _with_terms(basis: VectorBasis, term_rows: Mapping[str, int], n_prompts: int) -> VectorBasis:
    """``basis`` plus one unit row ("term", w) per discovered term."""
    index = dict(basis.index)
    extra = np.zeros((len(term_rows), n_prompts))
    for i, (term, row) in enumerate(term_rows.items()):
        index[("term", term)] = basis.coeffs.shape[0] + i
        extra[i, row] = 1.0
    return VectorBasis(index, np.vstack([basis.coeffs, extra]))


def rank_terms(
    layout: AuditLayout,
    per_seed: np.ndarray,
    term_rows: Mapping[str, int],
    counts: pd.DataFrame,
    *,
    resamples: int,
    seed: int,
    top_k: int,
) -> pd.DataFrame:
    """The discovery table: every term ranked per concept and per (concept set, two-group axis).

    ``per_seed`` is [prompts, seeds, features] (the rows ``layout`` and ``term_rows`` point
    into); ``counts`` has columns concept_set, concept, term, count (captions of that concept
    containing the term; missing pairs count 0). Concept rows rank by cosine, highest first;
    axis rows rank from the first group's end (most positive lean) to the second's. ``top``
    flags the first ``top_k`` ranks per concept, and the ``top_k`` terms at each end of an axis.
    Intervals are NaN without resamples or with a single seed.
    """
    n_prompts, n_seeds = per_seed.shape[:2]
    basis = _with_terms(build_basis(layout, n_prompts), term_rows, n_prompts)
    terms = sorted(term_rows)
    count_of = {
        (str(s), str(c), str(t)): int(n)
        for s, c, t, n in zip(
            counts["concept_set"], counts["concept"], counts["term"], counts["count"], strict=True
        )
    }
    keys: list[dict[str, object]] = []
    concept_idx: list[tuple[int, int, int]] = []  # (concept, term, ref)
    axis_idx: list[tuple[int, int, int, int]] = []  # (term, ref, pos, neg)
    for cset in layout.concepts:
        ref = basis[("ref", cset.name)]
        for concept in cset.term_names:
            for term in terms:
                keys.append(
                    {
                        "concept_set": cset.name,
                        "concept": concept,
                        "axis": "",
                        "positive_group": "",
                        "term": term,
                        "count": count_of.get((cset.name, concept, term), 0),
                    }
                )
                concept_idx.append(
                    (basis[("concept", cset.name, concept)], basis[("term", term)], ref)
                )
    for cset in layout.concepts:
        ref = basis[("ref", cset.name)]
        for axis in (a for a in layout.axes if a.two_group):
            pos, neg = axis.group_names[:2]
            for term in terms:
                total = sum(count_of.get((cset.name, c, term), 0) for c in cset.term_names)
                keys.append(
                    {
                        "concept_set": cset.name,
                        "concept": "",
                        "axis": axis.name,
                        "positive_group": pos,
                        "term": term,
                        "count": total,
                    }
                )
                axis_idx.append(
                    (
                        basis[("term", term)],
                        ref,
                        basis[("group", axis.name, pos)],
                        basis[("group", axis.name, neg)],
                    )
                )

    def measure(Q: np.ndarray) -> np.ndarray:
        values = [centred_cosine(Q, c, w, r) for c, w, r in concept_idx]
        values += [lean_from_gram(Q, w, r, p, n)[0] for w, r, p, n in axis_idx]
        if not values:
            return np.zeros((*Q.shape[:-2], 0))
        return np.stack(values, axis=-1)

    frame = pd.DataFrame(keys, columns=DISCOVERY_COLUMNS[:6])
    H = per_seed.mean(axis=1, dtype=np.float64)
    frame["cosine"] = measure(inner_products(basis, gram_of(H)))
    low = np.full(len(frame), np.nan)
    high = np.full(len(frame), np.nan)
    if resamples > 0 and n_seeds >= 2 and len(frame):
        K = seed_gram_tensor(per_seed)
        weights = bootstrap_weights(n_seeds, resamples, np.random.default_rng(seed))
        samples = np.concatenate(
            [
                measure(inner_products(basis, resampled_grams(K, weights[i : i + _CHUNK])))
                for i in range(0, resamples, _CHUNK)
            ]
        )
        alpha = (1.0 - CI_LEVEL) / 2.0
        low, high = np.quantile(samples, [alpha, 1.0 - alpha], axis=0)
    frame["cosine_ci_low"] = low
    frame["cosine_ci_high"] = high
    return _ranked(frame, top_k)


def _ranked(frame: pd.DataFrame, top_k: int) -> pd.DataFrame:
    """Rank within each (concept set, concept, axis), highest cosine first, ties by term; the
    blocks keep the order they were built in."""
    groups = ["concept_set", "concept", "axis"]
    order = frame.assign(
        _block=frame.groupby(groups, sort=False).ngroup() if len(frame) else 0,
        _neg=-frame["cosine"],
    ).sort_values(["_block", "_neg", "term"], kind="mergesort")
    order["rank"] = order.groupby("_block").cumcount().astype("int64") + 1
    size = order.groupby("_block")["term"].transform("size")
    is_axis = order["axis"] != ""
    order["top"] = ((order["rank"] <= top_k) | (is_axis & (order["rank"] > size - top_k))).astype(
        bool
    )
    order["count"] = order["count"].astype("int64")
    return order[DISCOVERY_COLUMNS].reset_index(drop=True)


# --- prose -------------------------------------------------------------------------------------


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


def concept_tops(discovery: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """Per concept of the ranking, in table order: its concept set, the concept and its ``top``
    terms in rank order."""
    on_concepts = discovery[discovery["axis"] == ""]
    return [
        (str(key[0]), str(key[1]), block[block["top"].astype(bool)].sort_values("rank"))
        for key, block in on_concepts.groupby(["concept_set", "concept"], sort=False)
    ]


@dataclass(frozen=True)
class AxisEnds:
    """One (concept set, two-group axis) block of the ranking: the axis's groups and the top
    terms at each end (:func:`axis_ends`)."""

    concept_set: str
    axis: str
    positive_group: str
    negative_group: str
    """The spec's second group of the axis ("" when the spec does not give it two groups)."""
    first: pd.DataFrame
    second: pd.DataFrame


def axis_blocks(discovery: pd.DataFrame, groups: Mapping[str, list[str]]) -> list[AxisEnds]:
    """Per (concept set, two-group axis) of the ranking, in table order, its ends; ``groups``:
    the spec's groups of each axis. The summary, the findings and the report show these."""
    out = []
    on_axes = discovery[discovery["axis"] != ""]
    for key, block in on_axes.groupby(["concept_set", "axis"], sort=False):
        names = groups.get(str(key[1]), [])
        negative = names[1] if len(names) == 2 else ""
        positive = str(block["positive_group"].iloc[0])
        out.append(AxisEnds(str(key[0]), str(key[1]), positive, negative, *axis_ends(block)))
    return out


def _term_records(rows: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {
            "term": str(r["term"]),
            "cosine": summary_number(r["cosine"]),
            "cosine_ci": [summary_number(r["cosine_ci_low"]), summary_number(r["cosine_ci_high"])],
            "count": int(r["count"]),
            "rank": int(r["rank"]),
        }
        for r in rows.to_dict("records")
    ]


def discovery_records(discovery: pd.DataFrame, groups: Mapping[str, list[str]]) -> dict[str, Any]:
    """The summary's ``discovery`` block: the top terms per concept and at each axis end."""
    concepts = [
        {"concept_set": cset, "concept": concept, "top": _term_records(top)}
        for cset, concept, top in concept_tops(discovery)
    ]
    axes = [
        {
            "concept_set": ends.concept_set,
            "axis": ends.axis,
            "positive_group": ends.positive_group,
            "negative_group": ends.negative_group,
            "toward_positive": _term_records(ends.first),
            "toward_negative": _term_records(ends.second),
        }
        for ends in axis_blocks(discovery, groups)
    ]
    return {"n_terms": int(discovery["term"].nunique()), "concepts": concepts, "axes": axes}


def _quoted_terms(rows: pd.DataFrame, limit: int = 3) -> str:
    if rows.empty:
        return "none"
    return ", ".join(f"'{r.term}' ({_signed(r.cosine)})" for r in rows.head(limit).itertuples())


def _signed(value: Any) -> str:
    number = summary_number(value)
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
    for ends in axis_blocks(discovery, groups):
        out.append(
            f"Of the terms mined for '{ends.concept_set}', those leaning most towards "
            f"'{ends.positive_group}' along '{ends.axis}' are {_quoted_terms(ends.first)}; "
            f"towards '{ends.negative_group or 'the second group'}': "
            f"{_quoted_terms(ends.second)}."
        )
    return out


__all__ = [
    "DISCOVERY_COLUMNS",
    "AxisEnds",
    "axis_blocks",
    "axis_ends",
    "concept_tops",
    "discovery_records",
    "discovery_sentences",
    "empty_ranking",
    "rank_terms",
    "ranking_layout",
    "ranking_prompt_ids",
    "ranking_spec",
]
