"""Concept structure (clustering, 2-D map) on planted clusters with known answers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from auditkit.analyze.structure import MAP_COLUMNS, cluster_concepts, concept_map
from auditkit.charts import concept_map_chart

scipy_distance = pytest.importorskip("scipy.spatial.distance")
scipy_hierarchy = pytest.importorskip("scipy.cluster.hierarchy")


def planted(
    n_clusters: int = 3, per: int = 5, dim: int = 512, noise: float = 0.3, seed: int = 0
) -> tuple[np.ndarray, list[str], list[int]]:
    """Noisy vectors around random centres; returns vectors, names and the true cluster."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim))
    truth = [c for c in range(n_clusters) for _ in range(per)]
    vectors = centres[truth] + noise * rng.normal(size=(len(truth), dim))
    order = rng.permutation(len(truth))  # interleave so clusters are not contiguous rows
    return vectors[order], [f"concept{i}" for i in range(len(truth))], [truth[i] for i in order]


def same_partition(a: list[int], b: list[int]) -> bool:
    return len(set(zip(a, b, strict=True))) == len(set(a)) == len(set(b))


def test_clustering_recovers_planted_clusters_and_picks_their_number() -> None:
    vectors, names, truth = planted()
    result = cluster_concepts(vectors, names)
    assert result["n_clusters"] == 3 and result["n_clusters_from"] == "largest gap"
    assert same_partition(result["labels"], truth)
    assert sorted(result["leaf_order"]) == list(range(len(names)))
    assert result["leaf_names"] == [names[i] for i in result["leaf_order"]]
    # Leaf order keeps each cluster contiguous, and labels are numbered in leaf order.
    in_order = [result["labels"][i] for i in result["leaf_order"]]
    assert in_order == sorted(in_order) and in_order[0] == 1
    json.dumps(result)
    four = cluster_concepts(*planted(n_clusters=4, per=4, seed=2)[:2])
    assert four["n_clusters"] == 4


def test_clustering_matches_scipy_on_cosine_distance() -> None:
    vectors, names, _ = planted(seed=1, noise=1.0)
    for method in ("average", "complete", "single"):
        result = cluster_concepts(vectors, names, method=method, n_clusters=2)
        reference = scipy_hierarchy.linkage(vectors, method=method, metric="cosine")
        linkage = np.asarray(result["linkage"])
        assert linkage.shape == (len(names) - 1, 4)
        assert np.allclose(np.sort(linkage[:, 2]), np.sort(reference[:, 2]), atol=1e-9)
        assert result["n_clusters"] == 2 and result["n_clusters_from"] == "given"


def test_clustering_edge_cases_and_bad_input() -> None:
    single = cluster_concepts(np.ones((1, 4)), ["only"])
    assert single["labels"] == [1] and single["leaf_order"] == [0] and single["linkage"] == []
    pair = cluster_concepts(np.eye(2, 8), ["a", "b"])
    assert pair["labels"] == [1, 2]
    with pytest.raises(ValueError, match="'b'"):
        cluster_concepts(np.array([[1.0, 0.0], [0.0, 0.0]]), ["a", "b"])
    with pytest.raises(ValueError, match="method"):
        cluster_concepts(np.eye(3), ["a", "b", "c"], method="ward")
    with pytest.raises(ValueError, match="n_clusters"):
        cluster_concepts(np.eye(3), ["a", "b", "c"], n_clusters=4)
    with pytest.raises(ValueError, match="2 names"):
        cluster_concepts(np.eye(3), ["a", "b"])


def test_map_separates_planted_clusters_and_is_deterministic() -> None:
    vectors, names, truth = planted(dim=2048)
    points = concept_map(vectors, names)
    assert list(points.columns) == list(MAP_COLUMNS)
    xy = points[["x", "y"]].to_numpy()
    labels = np.array(truth)
    gaps = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    same = labels[:, None] == labels[None]
    assert gaps[~same].min() > 3 * gaps[same].max()
    assert 0.9 < points["variance_x"].iloc[0] + points["variance_y"].iloc[0] <= 1.0
    pd.testing.assert_frame_equal(points, concept_map(vectors, names))
    # The sign convention holds: the point furthest out on each axis is on the positive side.
    for column in ("x", "y"):
        assert points[column].iloc[int(points[column].abs().argmax())] > 0
    # Negating every vector leaves the Gram matrix, and so the map, unchanged.
    mirrored = concept_map(-vectors, names)
    assert np.allclose(mirrored[["x", "y"]], points[["x", "y"]], atol=1e-9)


def test_map_equals_pca_scores_of_centred_unit_vectors() -> None:
    rng = np.random.default_rng(4)
    vectors = rng.normal(size=(7, 300)) + 2.0
    points = concept_map(vectors, [str(i) for i in range(7)])
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    centred = unit - unit.mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    scores = u[:, :2] * s[:2]
    assert np.allclose(np.abs(points[["x", "y"]].to_numpy()), np.abs(scores), atol=1e-9)
    explained = s**2 / (s**2).sum()
    assert points["variance_x"].iloc[0] == pytest.approx(explained[0])
    assert points["variance_y"].iloc[0] == pytest.approx(explained[1])
    raw = concept_map(vectors, [str(i) for i in range(7)], normalize=False)
    _, s_raw, _ = np.linalg.svd(vectors - vectors.mean(axis=0), full_matrices=False)
    assert raw["variance_x"].iloc[0] == pytest.approx(s_raw[0] ** 2 / (s_raw**2).sum())


def test_map_degenerate_inputs() -> None:
    same = concept_map(np.ones((3, 5)), ["a", "b", "c"])
    assert (same[["x", "y"]] == 0).all(axis=None) and same["variance_x"].isna().all()
    two = concept_map(np.eye(2, 6), ["a", "b"])
    assert two["variance_x"].iloc[0] == pytest.approx(1.0) and two["variance_y"].iloc[0] == 0
    assert (two["y"] == 0).all() and two["x"].abs().max() > 0
    one = concept_map(np.ones((1, 3)), ["a"])
    assert one[["x", "y"]].iloc[0].tolist() == [0.0, 0.0]


def test_concept_map_chart_is_valid_vega_lite_with_tooltips() -> None:
    vectors, names, _ = planted()
    points = concept_map(vectors, names).assign(cluster=cluster_concepts(vectors, names)["labels"])
    spec = concept_map_chart(points).to_dict()
    json.dumps(spec)
    dots = spec["layer"][0]
    assert {t["field"] for t in dots["encoding"]["tooltip"]} >= {"concept", "cluster"}
    assert dots["encoding"]["color"]["field"] == "cluster"
    assert "of variance" in dots["encoding"]["x"]["title"]
    plain = concept_map_chart(concept_map(vectors, names)).to_dict()
    assert "color" not in plain["layer"][0]["encoding"]
