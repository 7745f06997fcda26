"""Shares corrected for the image reader's own errors, and the reader's calibration tables.

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

The interval carries both uncertainties by a parametric (Bayesian) bootstrap: each resample
draws every row of the confusion matrix from Dirichlet(calibration counts + 1/2) and the audit's
read shares from Dirichlet(read counts + 1/2) (the Jeffreys prior: a share read as 0 or 1 still
varies, where a multinomial redraw would give a zero-width interval), corrects, and the
percentile interval of the corrected shares is reported. Resamples whose matrix is refused are
counted; more than :data:`MAX_REFUSED_SHARE` of them refuses the interval too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd

from auditkit.analyze.stats import wilson_interval

MIN_SEPARATION = 0.1
"""Smallest singular value of the confusion matrix accepted for a correction."""

JEFFREYS = 0.5
"""Pseudo-count added to every cell before a resample is drawn (the Jeffreys prior): a share
read as 0 or 1 still varies between resamples, so its interval is not a point."""

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
    reads = rng.dirichlet(read_counts + JEFFREYS, size=resamples)
    matrices = np.empty((resamples, k, k))
    for t in range(k):
        matrices[:, t, :] = rng.dirichlet(calibration_counts[t] + JEFFREYS, size=resamples)
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


CONFUSION_COLUMNS: Final = (
    *("attribute", "true_group", "read_as", "count", "n_true", "rate", "rate_low", "rate_high"),
)
"""Columns of :func:`calibration_tables`' confusion table, in order."""
ACCURACY_COLUMNS: Final = (
    *("attribute", "group", "n_images", "n_unread", "correct", "accuracy"),
    *("accuracy_low", "accuracy_high", "separation", "usable", "note"),
)
"""Columns of :func:`calibration_tables`' accuracy table, in order."""
UNREAD: Final = "(other)"
"""The ``read_as`` of calibration images read as none of the attribute's groups."""


def calibration_tables(
    labels: pd.DataFrame,
    reads: Sequence[Mapping[str, str]],
    groups: Mapping[str, Sequence[str]],
    confidence: float = 0.95,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The reader's confusion matrix and accuracy per group, from a labelled calibration set.

    Args:
        labels: one row per calibration image; a column per labelled attribute (a group name,
            or "" where the image is not labelled for it).
        reads: what the reader read in each image, in ``labels``' row order.
        groups: attribute -> its groups (what the audit's shares are of); attributes without
            a label column are left out.
        confidence: level of the Wilson intervals.

    Returns:
        ``confusion``: per (attribute, true group, value read) the count and its rate among the
        true group's images, with a Wilson interval; a value read that is no group of the
        attribute is pooled as :data:`UNREAD`. ``accuracy``: per (attribute, true group) the
        share read correctly (the reader's own bias shows as unequal accuracy across groups),
        and on every row of an attribute the matrix's :func:`separation` and whether it is
        ``usable`` for a correction (``note`` says why not).
    """
    if len(reads) != len(labels):
        raise ValueError(f"{len(reads)} reads for {len(labels)} labelled images")
    confusion_rows: list[dict[str, object]] = []
    accuracy_rows: list[dict[str, object]] = []
    for attribute, names in groups.items():
        if attribute not in labels.columns:
            continue
        names = [str(g) for g in names]
        truth = labels[attribute].astype(str).to_numpy()
        read = np.array([str(r.get(attribute, "")) for r in reads], dtype=object)
        matrix = np.zeros((len(names), len(names)), dtype=np.int64)
        rows: list[dict[str, object]] = []
        for t, true_group in enumerate(names):
            mine = read[truth == true_group]
            n_true = len(mine)
            for r, read_as in enumerate([*names, UNREAD]):
                count = (
                    int((mine == read_as).sum())
                    if read_as != UNREAD
                    else int((~np.isin(mine, names)).sum())
                )
                if r < len(names):
                    matrix[t, r] = count
                low, high = wilson_interval(count, n_true, confidence)
                confusion_rows.append(
                    {
                        **{"attribute": attribute, "true_group": true_group, "read_as": read_as},
                        **{"count": count, "n_true": n_true},
                        **{"rate": count / n_true if n_true else np.nan},
                        **{"rate_low": low, "rate_high": high},
                    }
                )
            correct = int((mine == true_group).sum())
            low, high = wilson_interval(correct, n_true, confidence)
            rows.append(
                {
                    **{"attribute": attribute, "group": true_group, "n_images": n_true},
                    **{"n_unread": int((~np.isin(mine, names)).sum()), "correct": correct},
                    **{"accuracy": correct / n_true if n_true else np.nan},
                    **{"accuracy_low": low, "accuracy_high": high},
                }
            )
        usable, note, sep = True, "", np.nan
        try:
            sep = separation(confusion_matrix(matrix))
            if sep < MIN_SEPARATION:
                usable = False
                note = (
                    f"too close to singular (smallest singular value {sep:.3f} < "
                    f"{MIN_SEPARATION}): the reader barely tells these groups apart"
                )
        except UnreliableReader as exc:
            usable, note = False, str(exc)
        for row in rows:
            accuracy_rows.append({**row, "separation": sep, "usable": usable, "note": note})
    return (
        pd.DataFrame(confusion_rows, columns=list(CONFUSION_COLUMNS)),
        pd.DataFrame(accuracy_rows, columns=list(ACCURACY_COLUMNS)),
    )


def calibration_counts(confusion: pd.DataFrame, attribute: str, names: Sequence[str]) -> np.ndarray:
    """``counts[t, r]`` of one attribute from the confusion table, in ``names``' order (images
    read as none of the groups left out: the shares they correct leave them out too)."""
    part = confusion[(confusion["attribute"] == attribute) & (confusion["read_as"] != UNREAD)]
    table = part.pivot_table(index="true_group", columns="read_as", values="count", aggfunc="sum")
    table = table.reindex(index=list(names), columns=list(names)).fillna(0)
    return table.to_numpy(dtype=np.int64)


CORRECTION_COLUMNS: Final = (
    *("share_basis", "corrected", "corrected_low", "corrected_high"),
    *("corrected_difference", "max_abs_gap_corrected", "correction"),
)
"""Columns :func:`correct_output_shares` adds to the outputs table, in order."""


def correct_output_shares(
    outputs: pd.DataFrame,
    confusion: pd.DataFrame | None,
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """The outputs table (shares against the reference) with each concept's shares corrected
    for the captioner's measured confusion, beside the raw ones.

    Per (concept, attribute) with a calibration of the attribute: :func:`corrected_with_interval`
    on the counts read as each group and the calibration's counts. ``share_basis`` is
    ``corrected`` there, and ``raw`` where there is no calibration of the attribute, no image
    was read, or the matrix was refused (``correction`` says which, with the refusal's reason).
    ``corrected_difference`` is corrected − reference and ``max_abs_gap_corrected`` the
    concept's largest |corrected − reference| (on every group row of the concept).
    """
    out = outputs.copy()
    n = len(out)
    out["share_basis"] = "raw"
    for column in CORRECTION_COLUMNS[1:-1]:
        out[column] = np.full(n, np.nan)
    out["correction"] = "no calibration"
    calibrated = set() if confusion is None else set(confusion["attribute"].astype(str))
    keys = ["concept_set", "concept", "attribute"]
    for (_, _, attribute), part in out.groupby(keys, sort=False):
        rows = part.index
        if str(attribute) not in calibrated:
            continue
        assert confusion is not None
        names = [str(g) for g in part["group"]]
        counts = part["count"].to_numpy(np.int64)
        if counts.sum() == 0:
            out.loc[rows, "correction"] = "no image read"
            continue
        try:
            calibration = calibration_counts(confusion, str(attribute), names)
            found = corrected_with_interval(
                counts, calibration, resamples=resamples, level=level, seed=seed
            )
        except UnreliableReader as exc:
            out.loc[rows, "correction"] = f"refused: {exc}"
            continue
        reference = part["reference"].to_numpy(np.float64)
        out.loc[rows, "share_basis"] = "corrected"
        out.loc[rows, "corrected"] = found.corrected
        out.loc[rows, "corrected_low"] = found.low
        out.loc[rows, "corrected_high"] = found.high
        out.loc[rows, "corrected_difference"] = found.corrected - reference
        out.loc[rows, "max_abs_gap_corrected"] = float(np.abs(found.corrected - reference).max())
        out.loc[rows, "correction"] = "corrected for the measured confusion"
    return out


__all__ = [
    "ACCURACY_COLUMNS",
    "CONFUSION_COLUMNS",
    "CORRECTION_COLUMNS",
    "MAX_REFUSED_SHARE",
    "MIN_SEPARATION",
    "UNREAD",
    "CorrectedShare",
    "UnreliableReader",
    "calibration_counts",
    "calibration_tables",
    "confusion_matrix",
    "correct_output_shares",
    "corrected_shares",
    "corrected_with_interval",
    "project_to_simplex",
    "separation",
]
