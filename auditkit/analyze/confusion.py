"""Shares corrected for the image reader's own errors (issue 17, the estimator only so far).

A captioner reads an image of true class ``t`` as class ``r`` with probability ``C[t, r]`` (its
confusion matrix, rows summing to 1, measured on a labelled calibration set). The shares it
reports for a concept's images are then ``q = C^T p``, where ``p`` are the true shares. The
corrected share solves that system:

- ``p = solve(C^T, q)``, then projected onto the probability simplex (the closest distribution
  in the Euclidean sense; with two classes this is the familiar ``(q1 - C01) / (C11 - C01)``
  clipped to [0, 1]).
- A reader that barely tells the classes apart makes ``C`` nearly singular and the correction
  explode; such a matrix is refused (:class:`UnreliableReader`) rather than turned into a wild
  number. The test is the smallest singular value of ``C`` against :data:`MIN_SEPARATION` (with
  two classes it falls to 0 as the share read as class 1 becomes the same for both true
  classes, ``C11 = C01``).

The interval carries both uncertainties by a parametric bootstrap: each resample draws the
calibration counts again (multinomial per true class, from the measured rows) and the audit's
reads again (multinomial from the measured shares), corrects, and the percentile interval of the
corrected shares is reported. Resamples whose matrix is refused are counted; more than
:data:`MAX_REFUSED_SHARE` of them refuses the interval too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_SEPARATION = 0.1
"""Smallest singular value of the confusion matrix accepted for a correction."""

MAX_REFUSED_SHARE = 0.05
"""Largest share of bootstrap resamples whose confusion matrix may be refused."""


class UnreliableReader(ValueError):
    """The confusion matrix is too close to singular for a correction to mean anything."""


def confusion_matrix(counts: np.ndarray) -> np.ndarray:
    """Row-normalised confusion ``C[t, r] = P(read r | true t)`` from calibration counts
    ``counts[t, r]``; a true class without calibration images is refused."""
    counts = np.asarray(counts, dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    if np.any(totals <= 0):
        missing = [int(i) for i in np.flatnonzero(totals[:, 0] <= 0)]
        raise UnreliableReader(f"no calibration images of true class(es) {missing}")
    return counts / totals


def separation(confusion: np.ndarray) -> float:
    """The smallest singular value of a confusion matrix (0: the reader cannot separate)."""
    return float(np.linalg.svd(np.asarray(confusion, dtype=float), compute_uv=False)[-1])


def project_to_simplex(values: np.ndarray) -> np.ndarray:
    """The Euclidean projection of each row of ``values`` onto the probability simplex."""
    v = np.atleast_2d(np.asarray(values, dtype=float))
    k = v.shape[1]
    u = -np.sort(-v, axis=1)
    cumulative = np.cumsum(u, axis=1) - 1.0
    index = np.arange(1, k + 1)
    condition = u - cumulative / index > 0
    rho = k - 1 - np.argmax(condition[:, ::-1], axis=1)
    theta = cumulative[np.arange(len(v)), rho] / (rho + 1)
    out = np.maximum(v - theta[:, None], 0.0)
    return out if np.ndim(values) > 1 else out[0]


def corrected_shares(read: np.ndarray, confusion: np.ndarray) -> np.ndarray:
    """True shares from read shares ``read`` (last axis: classes; any leading axes) and a
    confusion matrix; refuses a matrix with separation under :data:`MIN_SEPARATION`."""
    confusion = np.asarray(confusion, dtype=float)
    found = separation(confusion)
    if found < MIN_SEPARATION:
        raise UnreliableReader(
            f"the reader's confusion matrix is too close to singular (smallest singular value "
            f"{found:.3f}, under {MIN_SEPARATION}): it barely tells these classes apart, so a "
            "corrected share would be mostly noise"
        )
    read = np.asarray(read, dtype=float)
    solved = np.linalg.solve(confusion.T, read.reshape(-1, read.shape[-1]).T).T
    return project_to_simplex(solved).reshape(read.shape)


@dataclass(frozen=True)
class CorrectedShare:
    """A corrected distribution over the classes, with percentile intervals per class."""

    raw: np.ndarray
    corrected: np.ndarray
    low: np.ndarray
    high: np.ndarray
    refused_resamples: int
    resamples: int


def corrected_with_interval(
    read_counts: np.ndarray,
    calibration_counts: np.ndarray,
    *,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> CorrectedShare:
    """The corrected shares of one concept's images (``read_counts[r]``: images read as class
    r) with a bootstrap interval over both the images and the calibration set."""
    read_counts = np.asarray(read_counts, dtype=np.int64)
    calibration_counts = np.asarray(calibration_counts, dtype=np.int64)
    n = int(read_counts.sum())
    if n <= 0:
        raise ValueError("no images were read")
    confusion = confusion_matrix(calibration_counts)
    raw = read_counts / n
    point = corrected_shares(raw, confusion)
    rng = np.random.default_rng(seed)
    k = len(read_counts)
    reads = rng.multinomial(n, raw, size=resamples) / n
    matrices = np.empty((resamples, k, k))
    for t in range(k):
        rows = rng.multinomial(int(calibration_counts[t].sum()), confusion[t], size=resamples)
        matrices[:, t, :] = rows / rows.sum(axis=1, keepdims=True)
    singular = np.linalg.svd(matrices, compute_uv=False)[:, -1]
    kept = singular >= MIN_SEPARATION
    refused = int((~kept).sum())
    if refused > MAX_REFUSED_SHARE * resamples:
        raise UnreliableReader(
            f"{refused} of {resamples} bootstrap resamples of the calibration set give a "
            "confusion matrix too close to singular: the calibration set is too small or the "
            "reader too weak for an interval"
        )
    solved = np.linalg.solve(np.transpose(matrices[kept], (0, 2, 1)), reads[kept][..., None])[
        ..., 0
    ]
    samples = project_to_simplex(solved)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(samples, [alpha, 1.0 - alpha], axis=0)
    return CorrectedShare(raw, point, low, high, refused, resamples)


__all__ = [
    "MAX_REFUSED_SHARE",
    "MIN_SEPARATION",
    "CorrectedShare",
    "UnreliableReader",
    "confusion_matrix",
    "corrected_shares",
    "corrected_with_interval",
    "project_to_simplex",
    "separation",
]
