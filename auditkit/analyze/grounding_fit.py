"""The least-squares fit behind an image-derived axis (:mod:`auditkit.analyze.grounding`): the
design of each image's h regressed on its group and the attributes adjusted for, whether the
group coefficient can be estimated from those images, and that coefficient's weights over the
images (``g_img = Σ_i v_i h_i``), so that every product is worked out from Gram matrices.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

MAX_PARAMETER_SHARE = 0.5
"""The fit may have at most this many parameters per image (more levels to adjust for than
that over-fits the images)."""


def design(first: np.ndarray, covariates: Mapping[str, np.ndarray]) -> np.ndarray:
    """The least-squares design [images, parameters]: an intercept, the indicator of the first
    group, then one indicator per value of each covariate but its first (sorted) value."""
    columns = [np.ones(len(first)), first.astype(np.float64)]
    for name in sorted(covariates):
        values = np.asarray(covariates[name]).astype(str)
        for level in sorted(set(values.tolist()))[1:]:
            columns.append((values == level).astype(np.float64))
    return np.stack(columns, axis=1)


def design_problem(first: np.ndarray, covariates: Mapping[str, np.ndarray]) -> str | None:
    """Why the group coefficient cannot be estimated from these images (None when it can): the
    attributes adjusted for separate the groups, or have more levels than the images carry."""
    Z = design(first, covariates)
    rank = np.linalg.matrix_rank(Z)
    if rank == np.linalg.matrix_rank(np.delete(Z, 1, axis=1)):
        culprits = [
            name
            for name in sorted(covariates)
            if np.linalg.matrix_rank(design(first, {name: covariates[name]}))
            == np.linalg.matrix_rank(np.delete(design(first, {name: covariates[name]}), 1, 1))
        ]
        named = f" ({', '.join(repr(c) for c in culprits)})" if culprits else ""
        return (
            f"the attributes adjusted for{named} separate the two groups' images, so no "
            "difference between the groups can be told apart from them; drop them from "
            "grounding.adjust_for, or label images of both groups at each of their values"
        )
    if Z.shape[1] > MAX_PARAMETER_SHARE * len(first):
        return (
            f"adjusting for {sorted(covariates)} fits {Z.shape[1]} parameters to "
            f"{len(first)} images (at most {MAX_PARAMETER_SHARE:g} per image); list fewer "
            "attributes in grounding.adjust_for, or label more images"
        )
    return None


def contrast_weights(Z: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """v with ``g_img = Σ_i v_i h_i``: the group coefficient of the least-squares fit of h on
    ``Z`` with image i counted ``counts[i]`` times (a bootstrap resample's weights). A level
    no image of the resample carries drops out (minimum-norm solution)."""
    gram = Z.T @ (counts[:, None] * Z)
    coefficient = np.linalg.pinv(gram, hermitian=True)[:, 1]
    return counts * (Z @ coefficient)
