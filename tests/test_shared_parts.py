"""The analysis's shortcuts at scale give the bits of the plain computation (issue 15, B2).

A 1,000-concept audit's measures repeat each axis for every concept and each concept for
every axis; the bootstrap computes those shared parts once (``LeanRows``, ``CosineRows``),
assembles a streamed audit's inner products through slices, takes a one-template concept's
latent as its row, and computes interval quantiles on several threads. Each must give exactly
the numbers of the plain computation, or a large audit's tables would depend on its size.
"""

from __future__ import annotations

import numpy as np
import pytest

from auditkit.analyze import products as products_module
from auditkit.analyze import uncertainty
from auditkit.analyze.gram import (
    CosineRows,
    LeanRows,
    centred_cosine,
    cosine_from_rows,
    lean_from_gram,
    lean_from_rows,
)
from auditkit.analyze.measures import ConceptLayout, ConceptMatrix
from auditkit.analyze.products import ProductPlan, SeedProducts, streamed_inner_products


def _gram(rng: np.random.Generator, B: int, V: int) -> np.ndarray:
    X = rng.normal(size=(B, V, 7))
    Q = X @ X.transpose(0, 2, 1)
    Q[:, V - 1, :] = np.nan  # a pair whose products a streamed audit did not keep
    Q[:, :, V - 1] = np.nan
    return Q


def test_shared_lean_parts_give_each_rows_own_numbers() -> None:
    rng = np.random.default_rng(3)
    Q = _gram(rng, 4, 12)
    # a lean table: every concept along every axis, as the bootstrap lays it out
    concepts, axes = [0, 1, 2, 3, 11], [(5, 6), (7, 8), (9, 10)]
    rows = [(c, 4, p, n) for c in concepts for p, n in axes]
    concept, ref, pos, neg = (np.asarray(col) for col in zip(*rows, strict=True))
    shared = LeanRows.of(concept, ref, pos, neg)
    assert shared.axes[1] is not None and len(shared.axes[0][0]) == len(axes)
    together = lean_from_rows(Q, shared)
    one_by_one = [lean_from_gram(Q, *row) for row in rows]
    for k in range(3):  # cosine, projection, score
        alone = np.stack([parts[k] for parts in one_by_one], axis=-1)
        np.testing.assert_array_equal(together[k], alone)
    assert np.isnan(together[2][:, -len(axes) :]).all()  # the unkept concept stays unknown


def test_shared_cosine_parts_give_each_rows_own_numbers() -> None:
    rng = np.random.default_rng(4)
    Q = _gram(rng, 3, 10)
    rows = [(a, b, 8) for a in (0, 1, 2, 9) for b in (3, 4, 5)] + [(6, 7, 2)]
    a, b, r = (np.asarray(col) for col in zip(*rows, strict=True))
    together = cosine_from_rows(Q, CosineRows.of(a, b, r))
    alone = np.stack([centred_cosine(Q, *row) for row in rows], axis=-1)
    np.testing.assert_array_equal(together, alone)


def _products(rng: np.random.Generator) -> tuple[SeedProducts, np.ndarray, np.ndarray]:
    """Seed products of 8 prompts (directions 0, 1, 5, 6 and 7; one concept group of rows 2
    and 3; row 4 a group of its own) and coefficients [B, V, rows] for 9 vectors: pure
    direction vectors of one and of several terms (0, 1 and 3-5: two runs), group vectors (2,
    6 and 7) and a mixed one (8)."""
    N, P = 5, 8
    directions = np.asarray([0, 1, 5, 6, 7])
    X = rng.normal(size=(P, N, 6))
    cross = np.einsum("ind,jmd->ijnm", X, X[directions]).astype(np.float32)
    groups = np.asarray([[2, 3], [4, -1]])
    own = np.zeros((2, 2, 2, N, N), dtype=np.float32)
    own[0] = np.einsum("ind,jmd->ijnm", X[[2, 3]], X[[2, 3]])
    own[1, 0, 0] = np.einsum("nd,md->nm", X[4], X[4])
    products = SeedProducts(P, (), directions, cross, groups, own)
    pattern = np.zeros((9, P))
    pattern[0, 0] = pattern[1, [0, 1]] = pattern[3, 5] = 1.0  # pure: directions alone
    pattern[4, [5, 6, 7]] = pattern[5, [6, 7]] = 1.0  # pure, several terms
    pattern[2, 2] = pattern[6, [2, 3]] = pattern[7, 4] = 1.0  # in one group
    pattern[8, [0, 2]] = 1.0  # mixed: a direction and a concept row
    coeffs = pattern[None] * rng.uniform(0.2, 1.0, size=(3, *pattern.shape))
    return products, coeffs, X


def test_streamed_inner_products_are_written_through_slices_as_through_indices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(5)
    products, coeffs, X = _products(rng)
    weights = rng.dirichlet(np.ones(5), size=3)
    plan = ProductPlan.of(products, coeffs[0] != 0)
    assert len(plan.dir_runs) == 2 and isinstance(plan.used_rows, slice)
    assert plan.later_terms  # vectors of several terms are summed term by term
    by_slices = streamed_inner_products(products, coeffs, weights, plan).copy()
    monkeypatch.setattr(products_module, "DIRECTION_RUNS", 0)
    plan = ProductPlan.of(products, coeffs[0] != 0)
    by_indices = streamed_inner_products(products, coeffs, weights, plan)
    np.testing.assert_array_equal(by_slices, by_indices)
    # both are the inner products of the resampled vectors, wherever they are kept
    means = np.einsum("bn,pnd->bpd", weights, X)
    vectors = coeffs @ means
    direct = vectors @ vectors.transpose(0, 2, 1)
    kept = ~np.isnan(by_slices)
    assert kept[:, [0, 1, 3, 4, 5]].all()  # every pure direction vector with every vector
    assert kept[:, 2, 6].all() and not kept[:, 2, 7].any()  # one group; two groups
    np.testing.assert_allclose(by_slices[kept], direct[kept], rtol=1e-4, atol=1e-4)


def test_a_one_template_concepts_latent_is_its_row() -> None:
    rng = np.random.default_rng(6)
    H = rng.normal(size=(6, 2, 3)).astype(np.float32)
    single = ConceptLayout("set", ("a", "b", "c"), {"a": [4], "b": [1], "c": [3]}, ("t",))
    matrix = ConceptMatrix.of(H, single)
    expected = matrix.averaging @ H.reshape(6, -1).astype(np.float64)
    np.testing.assert_array_equal(matrix.block(0, 3), expected)
    two = ConceptLayout("set", ("a", "b"), {"a": [4, 5], "b": [1, 0]}, ("t", "u"))
    matrix = ConceptMatrix.of(H, two)
    np.testing.assert_allclose(
        matrix.block(0, 2), matrix.averaging @ H.reshape(6, -1).astype(np.float64)
    )


def test_interval_quantiles_on_threads_are_the_same_bounds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(7)
    samples = rng.normal(size=(200, 5000, 2))
    estimates = rng.normal(size=(5000, 2))
    for centred in (None, estimates):
        threaded = uncertainty._interval(samples, centred)
        monkeypatch.setattr(uncertainty, "QUANTILE_THREADS", 1)
        alone = uncertainty._interval(samples, centred)
        monkeypatch.undo()
        np.testing.assert_array_equal(threaded[0], alone[0])
        np.testing.assert_array_equal(threaded[1], alone[1])
