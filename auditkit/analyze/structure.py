"""Structure of a concept set in h-space: which concepts the model groups together.

Two views of the same cosine geometry (METHOD.md, "Structure"): a hierarchical clustering of
the concepts on cosine distance, and a 2-D map by classical MDS (PCA scores of the centred,
unit-length concept vectors). Both are deterministic, so a rerun on the same latents gives the
same dendrogram, cluster labels and map.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import pandas as pd

LINKAGE_METHODS: Final = ("average", "complete", "single", "weighted")
"""Linkage rules that are valid on a non-Euclidean distance such as cosine distance (centroid,
median and Ward assume Euclidean geometry)."""
MAP_COLUMNS: Final = ("concept", "x", "y", "variance_x", "variance_y")
"""Columns of :func:`concept_map`'s table, in order."""


def cosine_distances(vectors: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """The [n, n] cosine-distance matrix (1 - cosine, in [0, 2], exact zeros on the diagonal).

    Raises:
        ValueError: not a 2-D array, a name count that differs from the rows, non-finite
            values, or a zero vector (whose direction, and so cosine, is undefined).
    """
    unit = _unit_rows(vectors, names)
    distance = np.clip(1.0 - unit @ unit.T, 0.0, 2.0)
    distance = (distance + distance.T) / 2.0
    np.fill_diagonal(distance, 0.0)
    return distance


def cluster_concepts(
    vectors: np.ndarray,
    names: Sequence[str],
    method: str = "average",
    n_clusters: int | None = None,
) -> dict[str, Any]:
    """Hierarchical clustering of concept vectors on cosine distance.

    Args:
        vectors: [n_concepts, features] concept latents (centred, as the lean tables use them).
        names: one name per row.
        method: a linkage rule from :data:`LINKAGE_METHODS`.
        n_clusters: how many flat clusters to cut; by default the cut with the largest gap
            between consecutive merge heights, for 2..max(2, n // 2) clusters (the fewest on a
            tie), i.e. where the tree has its clearest separation.

    Returns:
        A JSON-ready dict: ``names``; ``leaf_order`` (row indices, optimal leaf ordering so
        neighbours are similar; sorts a similarity heatmap) and ``leaf_names``; ``linkage`` (the
        scipy linkage matrix as lists: merged a, merged b, height, size); ``merge_heights``;
        ``labels`` (1-based cluster per row, numbered in leaf order); ``n_clusters``;
        ``n_clusters_from`` ("given" or "largest gap"); ``method`` and ``metric``.

    Raises:
        ValueError: no concepts, an unknown method, an n_clusters outside 1..n, or bad vectors
            (see :func:`cosine_distances`).
    """
    if method not in LINKAGE_METHODS:
        raise ValueError(f"method must be one of {list(LINKAGE_METHODS)}, got {method!r}")
    distance = cosine_distances(vectors, names)
    n = len(names)
    if n_clusters is not None and not 1 <= n_clusters <= n:
        raise ValueError(f"n_clusters must be between 1 and {n}, got {n_clusters}")
    result: dict[str, Any] = {"names": list(names), "method": method, "metric": "cosine"}
    if n == 1:
        return result | {
            **{"leaf_order": [0], "leaf_names": list(names), "linkage": []},
            **{"merge_heights": [], "labels": [1], "n_clusters": 1},
            "n_clusters_from": "given" if n_clusters else "single concept",
        }
    try:
        from scipy.cluster import hierarchy
        from scipy.spatial.distance import squareform
    except ImportError as error:  # scipy ships with the dev extra only
        raise ImportError("cluster_concepts needs scipy: pip install scipy") from error
    condensed = squareform(distance, checks=False)
    tree = hierarchy.optimal_leaf_ordering(hierarchy.linkage(condensed, method=method), condensed)
    heights = tree[:, 2]
    given = n_clusters is not None
    k = n_clusters if n_clusters is not None else _largest_gap_cut(heights, n)
    raw = hierarchy.fcluster(tree, k, criterion="maxclust")
    leaves = [int(i) for i in hierarchy.leaves_list(tree)]
    renumber: dict[int, int] = {}
    for leaf in leaves:
        renumber.setdefault(int(raw[leaf]), len(renumber) + 1)
    return result | {
        **{"leaf_order": leaves, "leaf_names": [names[i] for i in leaves]},
        **{"linkage": tree.tolist(), "merge_heights": heights.tolist()},
        **{"labels": [renumber[int(c)] for c in raw], "n_clusters": len(renumber)},
        "n_clusters_from": "given" if given else "largest gap",
    }


def _largest_gap_cut(heights: np.ndarray, n: int) -> int:
    """Cluster count (2..max(2, n // 2)) whose cut falls in the widest gap between merges.

    Cutting to k clusters keeps merges 0..n-k-1 and undoes the rest, so the cut lies between
    ``heights[n-k-1]`` (0 when no merge is kept) and ``heights[n-k]``.
    """
    best_k, best_gap = 2, -math.inf
    for k in range(2, min(max(2, n // 2), n) + 1):
        below = heights[n - k - 1] if n - k - 1 >= 0 else 0.0
        gap = float(heights[n - k] - below)
        if gap > best_gap + 1e-12:
            best_k, best_gap = k, gap
    return best_k


def concept_map(vectors: np.ndarray, names: Sequence[str], normalize: bool = True) -> pd.DataFrame:
    """A 2-D map of the concepts: classical MDS, i.e. the first two PCA scores.

    Rows are scaled to unit length first (``normalize``, so the map shows the cosine geometry
    the clusters are built on, not differences in norm), then centred on their mean. The scores
    come from the eigen-decomposition of the n x n Gram matrix, which stays small when the
    features are many (h-space has 1280 x 8 x 8). Each axis's sign is fixed so that the concept
    furthest from the centre along it has a positive coordinate, making maps reproducible.

    Returns:
        One row per concept: ``concept``, ``x``, ``y`` and the share of the total variance each
        component explains (``variance_x``, ``variance_y``, repeated on every row; NaN when all
        concepts coincide). A missing component (fewer than three concepts) is all zeros.
    """
    data = _unit_rows(vectors, names) if normalize else _checked(vectors, names)
    centred = data - data.mean(axis=0, keepdims=True)
    gram = centred @ centred.T
    eigenvalues, eigenvectors = np.linalg.eigh((gram + gram.T) / 2.0)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues = np.clip(eigenvalues[order], 0.0, None)
    eigenvectors = eigenvectors[:, order]
    total = float(eigenvalues.sum())
    coords = np.zeros((len(names), 2))
    shares = [math.nan, math.nan]
    if total > 1e-12 * float((data * data).sum()):
        for c in range(2):
            if c >= len(names) or eigenvalues[c] <= 1e-12 * total:
                shares[c] = 0.0
                continue
            scores = eigenvectors[:, c] * math.sqrt(eigenvalues[c])
            peak = int(np.argmax(np.abs(scores)))
            coords[:, c] = scores if scores[peak] >= 0 else -scores
            shares[c] = float(eigenvalues[c] / total)
    return pd.DataFrame(
        {
            **{"concept": list(names), "x": coords[:, 0], "y": coords[:, 1]},
            **{"variance_x": shares[0], "variance_y": shares[1]},
        },
        columns=list(MAP_COLUMNS),
    )


def _checked(vectors: np.ndarray, names: Sequence[str]) -> np.ndarray:
    array = np.asarray(vectors, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"vectors must be [n_concepts, features], got shape {array.shape}")
    if array.shape[0] != len(names) or array.shape[0] == 0:
        raise ValueError(f"got {array.shape[0]} vectors for {len(names)} names (need >= 1)")
    if not np.isfinite(array).all():
        raise ValueError("vectors contain NaN or infinite values")
    return array


def _unit_rows(vectors: np.ndarray, names: Sequence[str]) -> np.ndarray:
    array = _checked(vectors, names)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    zero = [names[int(i)] for i in np.flatnonzero(norms[:, 0] == 0)]
    if zero:
        raise ValueError(f"zero vectors have no direction (cosine undefined): {zero}")
    return array / norms
