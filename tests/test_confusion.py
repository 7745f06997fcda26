"""The captioner-error correction's estimator (issue 17): exact on known confusions, refused
when the reader cannot separate the classes, and an interval that covers the truth."""

from __future__ import annotations

import numpy as np
import pytest

from auditkit.analyze.confusion import (
    UnreliableReader,
    confusion_matrix,
    corrected_shares,
    corrected_with_interval,
    project_to_simplex,
)

TRUE_CONFUSION = np.array([[0.95, 0.05], [0.20, 0.80]])
"""A reader that reads 5% of men as women and 20% of women as men."""


def test_the_correction_inverts_a_known_confusion_exactly() -> None:
    truth = np.array([[0.7, 0.3], [0.5, 0.5], [0.1, 0.9]])
    read = truth @ TRUE_CONFUSION
    assert np.allclose(corrected_shares(read, TRUE_CONFUSION), truth)
    three = np.array([[0.8, 0.1, 0.1], [0.1, 0.7, 0.2], [0.05, 0.15, 0.8]])
    truth3 = np.array([0.2, 0.5, 0.3])
    assert np.allclose(corrected_shares(truth3 @ three, three), truth3)


def test_a_share_outside_the_readers_range_is_kept_a_distribution() -> None:
    # read 2% as class 1: below what even an all-class-0 world would give (5%)
    corrected = corrected_shares(np.array([0.98, 0.02]), TRUE_CONFUSION)
    assert np.allclose(corrected, [1.0, 0.0])
    projected = project_to_simplex(np.array([[1.3, -0.3], [0.2, 0.2]]))
    assert np.allclose(projected, [[1.0, 0.0], [0.5, 0.5]])


def test_a_reader_that_cannot_separate_the_classes_is_refused() -> None:
    weak = np.array([[0.55, 0.45], [0.5, 0.5]])
    with pytest.raises(UnreliableReader, match="too close to singular"):
        corrected_shares(np.array([0.6, 0.4]), weak)
    with pytest.raises(UnreliableReader, match="no calibration images"):
        confusion_matrix(np.array([[10, 2], [0, 0]]))
    # a usable reader measured on too few images: the interval is refused, not wild
    with pytest.raises(UnreliableReader, match="calibration set is too small"):
        corrected_with_interval(np.array([60, 40]), np.array([[3, 1], [1, 2]]))


def test_corrected_shares_recover_the_truth_where_raw_shares_do_not() -> None:
    rng = np.random.default_rng(1)
    truth = np.array([0.6, 0.4])
    labels = rng.multinomial(20_000, truth)
    reads = sum(rng.multinomial(labels[t], TRUE_CONFUSION[t]) for t in range(2))
    calibration = np.stack([rng.multinomial(5_000, row) for row in TRUE_CONFUSION])
    result = corrected_with_interval(reads, calibration, resamples=400)
    assert abs(result.raw[1] - truth[1]) > 0.05
    assert abs(result.corrected[1] - truth[1]) < 0.02
    assert result.low[1] <= truth[1] <= result.high[1]


def test_the_interval_covers_the_truth_90_to_99_percent_of_the_time() -> None:
    """200 simulated audits: 128 images of a concept whose true share of class 1 is 0.3, read
    by :data:`TRUE_CONFUSION`, corrected with a calibration set of 200 images per class."""
    rng = np.random.default_rng(20261201)
    truth = np.array([0.7, 0.3])
    covered = 0
    for audit in range(200):
        labels = rng.multinomial(128, truth)
        reads = sum(rng.multinomial(labels[t], TRUE_CONFUSION[t]) for t in range(2))
        calibration = np.stack([rng.multinomial(200, row) for row in TRUE_CONFUSION])
        result = corrected_with_interval(reads, calibration, resamples=1000, seed=audit)
        covered += bool(result.low[1] <= truth[1] <= result.high[1])
    assert 0.90 <= covered / 200 <= 0.99, covered
