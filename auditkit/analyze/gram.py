"""Every measure as a function of inner products between prompt latents.

Each vector the method uses (a concept latent, a group latent, a centring reference, one
prompt's latent) is a linear combination of prompt latents: a row of the coefficient matrix
``C`` [vectors, prompts]. With ``M`` the prompts' Gram matrix (``H Hᵀ``), all inner products
the measures need are ``Q = C M Cᵀ``. Resampling seeds only changes ``M``, and for seed weights
``w`` it is a contraction of the per-seed Gram tensor, so a 1,000-resample bootstrap costs
``resamples x prompts² x seeds²`` flops whatever the size of h.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from auditkit.analyze.measures import AuditLayout


@dataclass(frozen=True)
class VectorBasis:
    """Named coefficient rows over the prompt latents."""

    index: dict[tuple[str, ...], int]
    coeffs: np.ndarray  # [V, P]

    def __getitem__(self, key: tuple[str, ...]) -> int:
        return self.index[key]


Component = tuple[int, str, int, str, int, float]
"""One term of a basis vector: (prompt row, template-list key, template index, term-list key,
term index, factor). The vector is the sum over its components of factor x the weight of its
template x the weight of its term; an empty key has weight 1. With uniform weights the vectors
are the plain means of the method."""


def template_key(templates: tuple[str, ...] | list[str]) -> str:
    """Key shared by every list with exactly these templates (their resamples are paired)."""
    return "templates:" + "\x1f".join(templates)


def term_key(axis: str, group: str) -> str:
    """Key of one group's term list."""
    return f"terms:{axis}\x1f{group}"


def basis_components(
    layout: AuditLayout, ref_rows: dict[tuple[str, int], int] | None = None
) -> dict[tuple[str, ...], list[Component]]:
    """Every vector the measures use, as components over prompt rows (see :data:`Component`):
    references, concepts, groups, and the single prompts the defaults compare. ``ref_rows``:
    rows that hold each concept set's reference part per template ((set, template) -> row;
    :func:`auditkit.analyze.products.ref_parts`), used for the references instead of their
    concepts' rows."""
    out: dict[tuple[str, ...], list[Component]] = {}

    def add(key: tuple[str, ...], parts: list[Component]) -> None:
        out.setdefault(key, parts)

    for cset in layout.concepts:
        tkey = template_key(cset.templates) if cset.templates else ""
        per_concept = 1.0 / max(len(cset.terms), 1)
        if layout.centring == "base" and layout.base is not None:
            add(("ref", cset.name), [(layout.base, "", 0, "", 0, 1.0)])
        elif ref_rows is not None:
            add(
                ("ref", cset.name),
                [
                    (row, tkey, t, "", 0, 1.0)
                    for (name, t), row in ref_rows.items()
                    if name == cset.name
                ],
            )
        else:
            add(
                ("ref", cset.name),
                [
                    (r, tkey, t, "", 0, per_concept / (1 if tkey else len(rows_)))
                    for rows_ in cset.terms.values()
                    for t, r in enumerate(rows_)
                ],
            )
        for concept, rows_ in cset.terms.items():
            add(
                ("concept", cset.name, concept),
                [
                    (r, tkey, t, "", 0, 1.0 if tkey else 1.0 / len(rows_))
                    for t, r in enumerate(rows_)
                ],
            )
            for r in rows_:
                add(("row", str(r)), [(r, "", 0, "", 0, 1.0)])
    for axis in layout.axes:
        tkey = template_key(axis.templates) if axis.templates else ""
        for group, per_template in axis.groups.items():
            kkey = term_key(axis.name, group)
            add(
                ("group", axis.name, group),
                [
                    (r, tkey, t, kkey, k, 1.0 if tkey else 1.0 / len(per_template))
                    for t, terms in enumerate(per_template)
                    for k, r in enumerate(terms)
                ],
            )
    for marked_rows in layout.marked.values():
        for r in marked_rows:
            add(("row", str(r)), [(r, "", 0, "", 0, 1.0)])
    return out


def uniform_weights(layout: AuditLayout) -> dict[str, np.ndarray]:
    """Equal weights for every template list and term list: [1, size] each."""
    weights: dict[str, np.ndarray] = {}
    for cset in layout.concepts:
        if cset.templates:
            n = len(cset.templates)
            weights[template_key(cset.templates)] = np.full((1, n), 1.0 / n)
    for axis in layout.axes:
        if axis.templates:
            n = len(axis.templates)
            weights[template_key(axis.templates)] = np.full((1, n), 1.0 / n)
        for group, per_template in axis.groups.items():
            k = len(per_template[0]) if per_template else 1
            weights[term_key(axis.name, group)] = np.full((1, k), 1.0 / k)
    return weights


def weighted_coeffs(
    components: dict[tuple[str, ...], list[Component]],
    n_prompts: int,
    weights: dict[str, np.ndarray],
    out: np.ndarray | None = None,
    cache: dict[Any, Any] | None = None,
) -> np.ndarray:
    """Coefficient matrices [B, V, P] of the vectors for B draws of template and term weights
    (``weights``: list key -> [B, size], each row summing to 1). ``out``: the array an earlier
    call with the same components, size and B returned, to be overwritten (its zeros stay
    zeros; allocating and faulting in a fresh [B, V, P] array per chunk cost more than the
    rest of this function at 1,000 concepts). ``cache``: a dict the caller keeps for calls
    with the same components, where the entries' layout is kept (a streamed audit's
    bootstrap calls this hundreds of times; the layout was most of its cost)."""
    B = next(iter(weights.values())).shape[0] if weights else 1
    shape = (B, len(components), n_prompts)
    reuse = out is not None and out.shape == shape
    out = out if reuse and out is not None else np.zeros(shape)
    # every component's weight columns in one matrix (column 0: ones), then one scatter-add
    keys = list(weights)
    sizes = tuple((k, weights[k].shape[1]) for k in keys)
    found = cache.get(("coefficient layout", n_prompts, sizes)) if cache is not None else None
    if found is None:
        found = _coefficient_layout(components, n_prompts, sizes)
        if cache is not None:
            cache[("coefficient layout", n_prompts, sizes)] = found
    index, factors, tcol, kcol, distinct = found
    table = np.concatenate([np.ones((B, 1)), *(weights[k] for k in keys)], axis=1)
    values = factors * table[:, tcol] * table[:, kcol]  # [B, components]
    if distinct:  # each entry from one component: 0 + x = x
        out.reshape(B, -1)[:, index] = values
    else:
        if reuse:
            out.reshape(B, -1)[:, index] = 0.0
        np.add.at(out.reshape(B, -1), (np.arange(B)[:, None], index[None, :]), values)
    return out


def _coefficient_layout(
    components: dict[tuple[str, ...], list[Component]],
    n_prompts: int,
    sizes: tuple[tuple[str, int], ...],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """Where :func:`weighted_coeffs` puts each component's entry (flat index into [V, P]), its
    factor, its template and term columns in the weight table (``sizes``: each list's key and
    length, in the table's order), and whether no two entries share a place."""
    offsets = dict(zip([k for k, _ in sizes], np.cumsum([1] + [n for _, n in sizes]), strict=False))
    flat, factors, tcol, kcol = [], [], [], []
    for v, parts in enumerate(components.values()):
        for row, tkey, t, kkey, k, factor in parts:
            flat.append(v * n_prompts + row)
            factors.append(factor)
            tcol.append(offsets[tkey] + t if tkey else 0)
            kcol.append(offsets[kkey] + k if kkey else 0)
    index = np.asarray(flat, dtype=np.int64)
    distinct = bool(np.unique(index).size == index.size)
    return index, np.asarray(factors), np.asarray(tcol), np.asarray(kcol), distinct


def build_basis(
    layout: AuditLayout, n_prompts: int, ref_rows: dict[tuple[str, int], int] | None = None
) -> VectorBasis:
    """Coefficient rows for references, concepts, groups and single prompts used by defaults
    (every template and term weighted equally); ``n_prompts`` counts every row, the reference
    parts' too (:func:`basis_components`)."""
    components = basis_components(layout, ref_rows)
    coeffs = weighted_coeffs(components, n_prompts, uniform_weights(layout))[0]
    return VectorBasis({key: i for i, key in enumerate(components)}, coeffs)


def gram_of(H: np.ndarray) -> np.ndarray:
    """Gram matrix of prompt latents [P, D] -> [P, P], in float64."""
    H = np.asarray(H, dtype=np.float64)
    return H @ H.T


def seed_gram_tensor(per_seed: np.ndarray) -> np.ndarray:
    """K[p, n, q, m] = h(p, n) · h(q, m) for per-seed latents [P, N, D] (float64)."""
    P, N, D = per_seed.shape
    X = per_seed.reshape(P * N, D).astype(np.float64)
    return (X @ X.T).reshape(P, N, P, N)


SEED_GRAM_BUDGET = 64 << 20
"""Bytes the seed Gram tensor may take when it is chosen for its speed alone."""


def seed_gram_pays(prompts: int, seeds: int, width: int) -> bool:
    """Whether a bootstrap should resample the seed Gram tensor K (:func:`resampled_grams`,
    ``prompts²·seeds²`` per resample after K) rather than the latents themselves
    (:func:`weighted_grams`, ``prompts·width·(seeds + prompts)``). K is always taken when it is
    smaller than the latents (``width > prompts·seeds``, as before); otherwise when the latents'
    path costs at least twice the multiply-adds and K fits :data:`SEED_GRAM_BUDGET`. Measured on
    2 cores, 100 resamples (benchmarks/NOTES.md, "eighth"): at the default audit's 68 prompts x
    32 seeds x 2,048 values (ratio 2.9) 49 against 164 ms; at 64 seeds (ratio 1.0) 234 against
    148 ms; at 200 prompts x 32 seeds (ratio 2.3, K 328 MB) 520 against 427 ms."""
    P, N, D = prompts, seeds, width
    if D > P * N:
        return True
    return D * (N + P) >= 2 * P * N * N and (P * N) ** 2 * 8 <= SEED_GRAM_BUDGET


def weighted_grams(per_seed: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Prompt Gram matrices for seed weights [B, N] straight from the latents [P, N, D]: the
    resampled means first, then their Gram. The same numbers as :func:`resampled_grams` (to
    rounding), which is cheaper where :func:`seed_gram_pays`."""
    X = np.asarray(per_seed, dtype=np.float64)
    P, N, D = X.shape
    # two BLAS products (einsum's batched path was 10x slower here, for the same numbers)
    means = np.asarray(weights, dtype=np.float64) @ X.transpose(1, 0, 2).reshape(N, P * D)
    means = means.reshape(-1, P, D)
    return means @ means.transpose(0, 2, 1)


def resampled_grams(K: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Prompt Gram matrices for seed weights [B, N] (each row sums to 1): [B, P, P]."""
    return np.einsum("bn,pnqm,bm->bpq", weights, K, weights, optimize=True)


def inner_products(basis: VectorBasis, grams: np.ndarray) -> np.ndarray:
    """Q = C M Cᵀ for one Gram [P, P] or a stack [B, P, P]."""
    C = basis.coeffs
    return np.einsum("vp,...pq,wq->...vw", C, grams, C, optimize=True)


def paired_inner_products(coeffs: np.ndarray, grams: np.ndarray) -> np.ndarray:
    """Q_b = C_b M_b C_bᵀ for coefficient matrices [B, V, P] paired with Grams [B, P, P]."""
    return np.einsum("bvp,bpq,bwq->bvw", coeffs, grams, coeffs, optimize=True)


Row = int | np.ndarray
"""A basis row, or an array of them (one per table row: the measures vectorise over rows)."""


def _centred(Q: np.ndarray, a: Row, b: Row, r: Row) -> np.ndarray:
    """(x_a − x_r)·(x_b − x_r) from inner products."""
    return Q[..., a, b] - Q[..., a, r] - Q[..., r, b] + Q[..., r, r]


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den is 0, NaN where either is unknown (a streamed audit's
    products of two concepts)."""
    out = np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)
    unknown = np.isnan(num) | np.isnan(den)
    if unknown.any():
        out[unknown] = np.nan
    return out


def centred_cosine(Q: np.ndarray, a: Row, b: Row, r: Row) -> np.ndarray:
    """cos(x_a − x_r, x_b − x_r)."""
    return cosine_from_rows(Q, CosineRows(a, b, ((a, r), None), ((b, r), None)))


def position_from_gram(Q: np.ndarray, unmarked: Row, first: Row, second: Row) -> np.ndarray:
    """:func:`auditkit.analyze.measures.marked_position` of one template from inner products:
    2 (u − (a + b)/2)·(a − b) / ‖a − b‖²."""
    num = 2.0 * (Q[..., unmarked, first] - Q[..., unmarked, second])
    num -= Q[..., first, first] - Q[..., second, second]
    den = Q[..., first, first] - 2.0 * Q[..., first, second] + Q[..., second, second]
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _distinct(*rows: Row) -> tuple[Any, np.ndarray | None]:
    """The distinct tuples of ``rows`` (row arrays of one length) and each row's place among
    them; ints, or anything else, as they are (None)."""
    arrays = [r for r in rows if isinstance(r, np.ndarray) and r.ndim == 1 and r.size]
    if len(arrays) < len(rows):
        return rows, None
    dims = tuple(int(r.max()) + 1 for r in arrays)
    # one integer per tuple: np.unique of a 1-d array is ~10x faster than along an axis
    keys, where = np.unique(np.ravel_multi_index(tuple(arrays), dims), return_inverse=True)
    return tuple(np.unravel_index(keys, dims)), where.reshape(-1)


def _spread(values: np.ndarray, where: np.ndarray | None) -> np.ndarray:
    """Per-row values from the values of the distinct rows (``where``: each row's place)."""
    return values if where is None else values[..., where]


@dataclass(frozen=True)
class CosineRows:
    """The basis rows of a table of centred cosines (a and b, each centred on r), with the
    parts rows share found once (as :class:`LeanRows`): the distinct (a, r) and (b, r)."""

    a: Row
    b: Row
    a_refs: tuple[tuple[Row, Row], np.ndarray | None]
    b_refs: tuple[tuple[Row, Row], np.ndarray | None]

    @classmethod
    def of(cls, a: Row, b: Row, r: Row) -> CosineRows:
        return cls(a, b, _distinct(a, r), _distinct(b, r))


def cosine_from_rows(Q: np.ndarray, rows: CosineRows) -> np.ndarray:
    """:func:`centred_cosine` of every row of ``rows``, each shared part computed once."""
    (a, ar), at_a = rows.a_refs
    (b, br), at_b = rows.b_refs
    num = Q[..., rows.a, rows.b] - _spread(Q[..., a, ar], at_a) - _spread(Q[..., br, b], at_b)
    num += _spread(Q[..., br, br], at_b)
    den = np.sqrt(
        _spread(np.clip(_centred(Q, a, a, ar), 0, None), at_a)
        * _spread(np.clip(_centred(Q, b, b, br), 0, None), at_b)
    )
    return _safe_div(num, den)


@dataclass(frozen=True)
class LeanRows:
    """The basis rows of a table of leans (concept, reference, positive and negative group, one
    each per table row), with the parts that rows share found once: a lean table repeats each
    axis for every concept and each concept for every axis, so most of a lean's terms are one
    of a few distinct values. ``axes``, ``ref_axes`` and ``concept_refs``: the distinct (pos,
    neg), (ref, pos, neg) and (concept, ref) rows, and each table row's place among them (None:
    one per row, as given)."""

    concept: Row
    ref: Row
    pos: Row
    neg: Row
    axes: tuple[tuple[Row, Row], np.ndarray | None]
    ref_axes: tuple[tuple[Row, Row, Row], np.ndarray | None]
    concept_refs: tuple[tuple[Row, Row], np.ndarray | None]

    @classmethod
    def of(cls, concept: Row, ref: Row, pos: Row, neg: Row) -> LeanRows:
        """The rows given, their shared parts found (row arrays) or taken as they are (ints)."""
        return cls(
            concept, ref, pos, neg,
            _distinct(pos, neg), _distinct(ref, pos, neg), _distinct(concept, ref),
        )  # fmt: skip


def lean_from_gram(
    Q: np.ndarray, concept: Row, ref: Row, pos: Row, neg: Row
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cosine, projection, score) of a concept along g = pos − neg, from inner products."""
    alone = LeanRows(
        concept, ref, pos, neg, ((pos, neg), None), ((ref, pos, neg), None), ((concept, ref), None)
    )
    return lean_from_rows(Q, alone)


def lean_from_rows(Q: np.ndarray, rows: LeanRows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`lean_from_gram` of every row of ``rows``, each shared part computed once."""
    # g·g, (c − r)·g, (c − mid)·g with mid = (pos + neg)/2
    (p, n), at_axis = rows.axes
    gg_axis = Q[..., p, p] - 2 * Q[..., p, n] + Q[..., n, n]
    gg = _spread(gg_axis, at_axis)
    norm = _spread(np.sqrt(np.clip(gg_axis, 0, None)), at_axis)
    mid_g = _spread(0.5 * (Q[..., p, p] - Q[..., n, n]), at_axis)
    (r, rp, rn), at_ref = rows.ref_axes
    c_g = Q[..., rows.concept, rows.pos] - Q[..., rows.concept, rows.neg]
    cr_g = c_g - _spread(Q[..., r, rp] - Q[..., r, rn], at_ref)
    (c, cr), at_concept = rows.concept_refs
    cr_cr = _spread(_centred(Q, c, c, cr), at_concept)
    cosine = _safe_div(cr_g, np.sqrt(np.clip(cr_cr, 0, None)) * norm)
    c_mid_g = c_g - mid_g
    projection = _safe_div(c_mid_g, norm)
    score = _safe_div(2.0 * c_mid_g, gg)
    return cosine, projection, score
