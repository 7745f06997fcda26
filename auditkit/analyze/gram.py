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

import numpy as np

from auditkit.analyze.measures import AuditLayout


@dataclass(frozen=True)
class VectorBasis:
    """Named coefficient rows over the prompt latents."""

    index: dict[tuple[str, ...], int]
    coeffs: np.ndarray  # [V, P]

    def __getitem__(self, key: tuple[str, ...]) -> int:
        return self.index[key]


def build_basis(layout: AuditLayout, n_prompts: int) -> VectorBasis:
    """Coefficient rows for references, concepts, groups and single prompts used by defaults."""
    rows: list[np.ndarray] = []
    index: dict[tuple[str, ...], int] = {}

    def add(key: tuple[str, ...], vec: np.ndarray) -> None:
        if key not in index:
            index[key] = len(rows)
            rows.append(vec)

    def unit(row: int) -> np.ndarray:
        vec = np.zeros(n_prompts)
        vec[row] = 1.0
        return vec

    def mean_of(rows_: list[int]) -> np.ndarray:
        return np.mean([unit(r) for r in rows_], axis=0)

    for cset in layout.concepts:
        all_rows = [r for rows_ in cset.terms.values() for r in rows_]
        if layout.centring == "base" and layout.base is not None:
            add(("ref", cset.name), unit(layout.base))
        else:
            add(("ref", cset.name), mean_of(all_rows))
        for concept, rows_ in cset.terms.items():
            add(("concept", cset.name, concept), mean_of(rows_))
            for r in rows_:
                add(("row", str(r)), unit(r))
    for axis in layout.axes:
        for group, per_template in axis.groups.items():
            vec = np.mean([mean_of(terms) for terms in per_template], axis=0)
            add(("group", axis.name, group), vec)
    for marked_rows in layout.marked.values():
        for r in marked_rows:
            add(("row", str(r)), unit(r))
    return VectorBasis(index, np.asarray(rows))


def gram_of(H: np.ndarray) -> np.ndarray:
    """Gram matrix of prompt latents [P, D] -> [P, P], in float64."""
    H = np.asarray(H, dtype=np.float64)
    return H @ H.T


def seed_gram_tensor(per_seed: np.ndarray) -> np.ndarray:
    """K[p, n, q, m] = h(p, n) · h(q, m) for per-seed latents [P, N, D] (float64)."""
    P, N, D = per_seed.shape
    X = per_seed.reshape(P * N, D).astype(np.float64)
    return (X @ X.T).reshape(P, N, P, N)


def resampled_grams(K: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Prompt Gram matrices for seed weights [B, N] (each row sums to 1): [B, P, P]."""
    return np.einsum("bn,pnqm,bm->bpq", weights, K, weights, optimize=True)


def inner_products(basis: VectorBasis, grams: np.ndarray) -> np.ndarray:
    """Q = C M Cᵀ for one Gram [P, P] or a stack [B, P, P]."""
    C = basis.coeffs
    return np.einsum("vp,...pq,wq->...vw", C, grams, C, optimize=True)


def _centred(Q: np.ndarray, a: int, b: int, r: int) -> np.ndarray:
    """(x_a − x_r)·(x_b − x_r) from inner products."""
    return Q[..., a, b] - Q[..., a, r] - Q[..., r, b] + Q[..., r, r]


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def centred_cosine(Q: np.ndarray, a: int, b: int, r: int) -> np.ndarray:
    """cos(x_a − x_r, x_b − x_r)."""
    num = _centred(Q, a, b, r)
    den = np.sqrt(np.clip(_centred(Q, a, a, r), 0, None) * np.clip(_centred(Q, b, b, r), 0, None))
    return _safe_div(num, den)


def lean_from_gram(
    Q: np.ndarray, concept: int, ref: int, pos: int, neg: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cosine, projection, score) of a concept along g = pos − neg, from inner products."""
    # g·g, (c − r)·g, (c − mid)·g with mid = (pos + neg)/2
    gg = Q[..., pos, pos] - 2 * Q[..., pos, neg] + Q[..., neg, neg]
    norm = np.sqrt(np.clip(gg, 0, None))
    cr_g = (Q[..., concept, pos] - Q[..., concept, neg]) - (Q[..., ref, pos] - Q[..., ref, neg])
    cr_cr = _centred(Q, concept, concept, ref)
    cosine = _safe_div(cr_g, np.sqrt(np.clip(cr_cr, 0, None)) * norm)
    mid_g = 0.5 * (Q[..., pos, pos] - Q[..., neg, neg])
    c_mid_g = (Q[..., concept, pos] - Q[..., concept, neg]) - mid_g
    projection = _safe_div(c_mid_g, norm)
    score = _safe_div(2.0 * c_mid_g, gg)
    return cosine, projection, score
