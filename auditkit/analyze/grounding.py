"""Image-grounded axes: does each prompt-derived axis point where real images of its groups do?

For a two-group axis, the prompt-derived direction is the lean analysis's own:
``g = G(first) − G(second)`` from the prompt latents (centring subtracts the same reference
from both groups, so it does not move g). Its image-derived twin ``g_img`` comes from h of
labelled images, read through the denoiser as a prompt's h is (same hook, steps and
aggregation; :mod:`auditkit.extract.images`):

* **Estimator.** ``g_img`` is the coefficient of the axis's group in a least-squares fit of
  each image's h on an intercept, an indicator of the axis's first group and indicators of
  the values of the other labelled attributes the spec adjusts for (``grounding.adjust_for``;
  every other label column by default). Without attributes to adjust for it is the plain
  difference of the two groups' mean h. Adjusting keeps a chance imbalance of other
  attributes between the groups (more doctors among the men's images than the women's) out
  of the axis, where it would make the concepts (occupations) lean along it for the wrong
  reason. The coefficient is linear in h: ``g_img = Σ_i v_i h_i`` with weights ``v`` from the
  design alone, so everything below is computed from the Gram matrix of the images' h and
  their products with g and with the concepts.
* ``cosine``: cos(g, g_img), with a percentile bootstrap interval over images (the images of
  each group drawn with replacement within the group and the fit repeated; the prompt
  latents held at their point estimate: the prompt side's seed uncertainty is the lean
  table's) and a chance level: the 95th percentile of |cos(g, axis)| over axes fitted, the
  same way, to two random halves of one group's images (halves that do not differ in the
  axis's attribute). Shuffling the group labels would not do: a chance imbalance of the true
  attribute between shuffled groups points along the attribute's own direction, and a cosine
  ignores how small it is. An axis is *reproduced* when its cosine's interval lies wholly
  above the chance level. ``other_cosine`` is the largest |cos(g, image-derived axis of
  another grounded attribute)|: an axis that matches its own twin no better than another
  attribute's is not specific to its attribute.
* Per concept c, its lean along g_img beside its lean along g. Image-derived and
  prompt-derived latents sit apart (an image's h is read at another prompt, from another
  trajectory), so a projection from the image groups' midpoint means nothing; both axes get
  a *centred* score ``2 (H(c) − M)·d / ‖d‖²`` for d = g or g_img, M the mean latent of every
  concept of the audit: in units of half the axis (+1: as far from the concepts' mean, along
  the axis, as the first group sits from the groups' midpoint). The cosine
  ``cos(H(c) − R, g_img)`` (R the lean's reference) is given too. Spearman's rho across the
  concepts between the image-axis score and the lean score says whether the images order the
  concepts as the prompts do; the bootstrap gives it an interval.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from auditkit.analyze.grounding_fit import contrast_weights, design
from auditkit.analyze.measures import (
    AuditLayout,
    AxisLayout,
    Lean,
    axis_direction,
    axis_parts,
    concepts_of,
    cosine,
    group_means,
    leans_of,
    reference,
)
from auditkit.analyze.stats import spearman

CHANCE_QUANTILE = 0.95
"""The chance level of the cosine: this quantile of |cos| over axes of random halves of one
group's images."""
LEVEL = 0.95
"""Interval coverage."""
AXIS_COLUMNS = [
    "axis", "positive_group", "negative_group", "n_positive", "n_negative", "adjusted_for",
    "cosine", "cosine_ci_low", "cosine_ci_high", "chance_cosine", "reproduced", "other_cosine",
    "other_axis", "prompt_norm",
    "image_norm", "n_concepts", "rho", "rho_ci_low", "rho_ci_high", "n_resamples",
]  # fmt: skip
"""Columns of ``grounding_axes`` (declared in auditkit/analyses/grounding.tables.yaml)."""
LEAN_COLUMNS = [
    "axis", "concept_set", "concept", "positive_group", "negative_group", "prompt_score",
    "prompt_centred", "prompt_cosine", "image_score", "image_score_ci_low",
    "image_score_ci_high", "image_cosine", "image_cosine_ci_low", "image_cosine_ci_high",
]  # fmt: skip
"""Columns of ``grounding_leans``."""


@dataclass(frozen=True)
class GroundedAxis:
    """The images of one grounded axis: their rows of the image latents, whether each is of
    the axis's first group, and the values of the attributes the axis is adjusted for."""

    axis: str
    rows: np.ndarray
    first: np.ndarray
    covariates: Mapping[str, np.ndarray]

    @property
    def n_first(self) -> int:
        return int(self.first.sum())

    @property
    def n_second(self) -> int:
        return int((~self.first).sum())


@dataclass(frozen=True)
class GroundedImages:
    """What the grounding pass stored, read back: every image's latent [images, features]
    (aggregated over steps as the prompts' are) and the grounded axes."""

    latents: np.ndarray
    axes: tuple[GroundedAxis, ...]


def read_grounded(
    table: pd.DataFrame,
    latent_of: Mapping[str, np.ndarray],
) -> GroundedImages:
    """The images table (``grounding_images``) and each unit's latent as a
    :class:`GroundedImages`: one latent row per distinct unit, the axes in table order."""
    units = list(dict.fromkeys(str(u) for u in table["unit_id"]))
    row_of = {u: i for i, u in enumerate(units)}
    latents = np.stack([np.asarray(latent_of[u], dtype=np.float32).reshape(-1) for u in units])
    axes = []
    for axis, part in table.groupby("axis", sort=False):
        groups = list(dict.fromkeys(str(g) for g in part["group"]))
        cells = [json.loads(str(c)) if str(c) else {} for c in part["covariates"]]
        names = sorted({k for cell in cells for k in cell})
        axes.append(
            GroundedAxis(
                axis=str(axis),
                rows=np.array([row_of[str(u)] for u in part["unit_id"]], dtype=np.int64),
                first=(part["group"].astype(str) == groups[0]).to_numpy(),
                covariates={n: np.array([str(cell.get(n, "")) for cell in cells]) for n in names},
            )
        )
    return GroundedImages(latents, tuple(axes))


@dataclass(frozen=True)
class _Concepts:
    """The audit's concepts in one list, each as weights over the rows of H (never copied out
    of H, so a large concept set costs [concepts, prompts], not [concepts, features]): (set,
    name), the concept's latent H(c) = weights @ H, and its set's reference R = refs @ H (the
    lean's centring reference)."""

    keys: list[tuple[str, str]]
    weights: np.ndarray
    refs: np.ndarray

    @property
    def centred(self) -> np.ndarray:
        """Weights of H(c) − M, M the mean latent of every concept of the audit."""
        return self.weights - self.weights.mean(axis=0) if self.keys else self.weights

    @property
    def referenced(self) -> np.ndarray:
        """Weights of H(c) − R."""
        return self.weights - self.refs


def _concepts(H: np.ndarray, layout: AuditLayout) -> _Concepts:
    keys: list[tuple[str, str]] = []
    weights: list[np.ndarray] = []
    refs: list[np.ndarray] = []
    for cset in layout.concepts:
        ref = np.zeros(len(H))
        if layout.centring == "base" and layout.base is not None:
            ref[layout.base] = 1.0  # as measures.reference
        else:
            rows = [r for rows in cset.terms.values() for r in rows]
            np.add.at(ref, rows, 1.0 / len(rows))
        for name, rows in cset.terms.items():
            weight = np.zeros(len(H))
            np.add.at(weight, rows, 1.0 / len(rows))  # as measures.concept_latents
            keys.append((cset.name, name))
            weights.append(weight)
            refs.append(ref)
    if not keys:
        empty = np.zeros((0, len(H)))
        return _Concepts([], empty, empty)
    return _Concepts(keys, np.stack(weights), np.stack(refs))


def _norms(weights: np.ndarray, H: np.ndarray, block: int = 64) -> np.ndarray:
    """‖weights_j @ H‖ for every row j, a block of rows at a time."""
    out = np.empty(len(weights))
    for start in range(0, len(weights), block):
        part = weights[start : start + block]
        used = np.flatnonzero(part.any(axis=0))
        out[start : start + block] = np.linalg.norm(part[:, used] @ H[used], axis=1)
    return out


def _prompt_leans(H: np.ndarray, layout: AuditLayout, axis: AxisLayout) -> dict[tuple, Lean]:
    """Every concept's lean along the prompt-derived axis, as the lean table measures it."""
    parts = axis_parts(group_means(H, axis), axis.group_names[:2])
    out: dict[tuple, Lean] = {}
    for cset in layout.concepts:
        ref = reference(H, layout, cset)
        for name, measured in leans_of(concepts_of(H, cset), ref, parts):
            out[(cset.name, name)] = measured
    return out


def _resample_counts(rng: np.random.Generator, first: np.ndarray) -> np.ndarray:
    """How often each image is drawn when each group's images are drawn with replacement,
    as many as the group has."""
    counts = np.zeros(len(first))
    for members in (np.flatnonzero(first), np.flatnonzero(~first)):
        counts[members] = rng.multinomial(len(members), np.full(len(members), 1 / len(members)))
    return counts


def _split_weights(rng: np.random.Generator, item: GroundedAxis, turn: int) -> np.ndarray:
    """v of the chance level's null: the images of one group (the first on even turns, the
    second on odd ones) split at random into two halves, fitted as the two groups are (the
    same attributes adjusted for). The halves do not differ in the axis's attribute, so the
    cosine their axis reaches is what images that carry no group difference reach."""
    members = np.flatnonzero(item.first if turn % 2 == 0 else ~item.first)
    half = np.zeros(len(members), dtype=bool)
    half[rng.permutation(len(members))[: len(members) // 2]] = True
    covariates = {name: values[members] for name, values in item.covariates.items()}
    v = np.zeros(len(item.rows))
    v[members] = contrast_weights(design(half, covariates), np.ones(len(members)))
    return v


def _quantiles(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The percentile interval of ``values`` along axis 0 (NaN rows ignored)."""
    tail = (1.0 - LEVEL) / 2.0 * 100.0
    with np.errstate(all="ignore"):
        low = np.nanpercentile(values, tail, axis=0)
        high = np.nanpercentile(values, 100.0 - tail, axis=0)
    return low, high


def ground_axes(
    H: np.ndarray,
    layout: AuditLayout,
    grounded: GroundedImages,
    *,
    resamples: int,
    seed: int,
) -> dict[str, pd.DataFrame]:
    """The ``grounding_axes`` and ``grounding_leans`` tables.

    Args:
        H: prompt latents [prompts, features] (the lean analysis's).
        layout: which rows of ``H`` hold which prompts.
        grounded: the image latents, aggregated as the prompts' are, and the grounded axes.
        resamples: bootstrap resamples (and label shuffles for the chance level); 0: no
            intervals and no chance level.
        seed: the bootstrap's seed (each axis draws from its own stream).
    """
    H = H.reshape(len(H), -1)
    concepts = _concepts(H, layout)
    by_name = {a.name: a for a in layout.axes}
    axis_rows: list[dict[str, object]] = []
    lean_rows: list[dict[str, object]] = []
    directions: list[tuple[np.ndarray, np.ndarray]] = []
    for k, item in enumerate(grounded.axes):
        rng = np.random.default_rng([seed, k])
        axis_row, rows, pair = _ground_one(
            H, layout, by_name[item.axis], concepts, grounded.latents, item, resamples, rng
        )
        axis_rows.append(axis_row)
        lean_rows.extend(rows)
        directions.append(pair)
    for k, row in enumerate(axis_rows):
        others = [
            (abs(cosine(directions[k][0], image)), str(axis_rows[j]["axis"]))
            for j, (_g, image) in enumerate(directions)
            if j != k
        ]
        best = max(others) if others else (float("nan"), "")
        row["other_cosine"], row["other_axis"] = best
    return {
        "grounding_axes": pd.DataFrame(axis_rows, columns=AXIS_COLUMNS),
        "grounding_leans": pd.DataFrame(lean_rows, columns=LEAN_COLUMNS),
    }


def _ground_one(
    H: np.ndarray,
    layout: AuditLayout,
    axis: AxisLayout,
    concepts: _Concepts,
    images: np.ndarray,
    item: GroundedAxis,
    resamples: int,
    rng: np.random.Generator,
) -> tuple[dict[str, object], list[dict[str, object]], tuple[np.ndarray, np.ndarray]]:
    """One axis's row of ``grounding_axes``, its rows of ``grounding_leans`` and its two
    directions (g, g_img)."""
    positive, negative = axis.group_names[:2]
    g = axis_direction(H, axis).reshape(-1)
    g_norm = float(np.linalg.norm(g))
    X = np.asarray(images[item.rows], dtype=np.float64)
    gram = X @ X.T
    along_g = X @ g
    along_prompts = X @ H.T  # [images, prompts]: every concept's product through its weights
    along_centred = along_prompts @ concepts.centred.T  # [images, concepts]
    along_ref = along_prompts @ concepts.referenced.T
    ref_norms = _norms(concepts.referenced, H)
    Z = design(item.first, item.covariates)

    def measures(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """For weights v [R, images] (g_img = v @ X): cos(g, g_img) [R], ‖g_img‖ [R], the
        concepts' centred image scores and image cosines [R, concepts]."""
        norm2 = np.einsum("ri,ij,rj->r", v, gram, v)
        norm = np.sqrt(np.clip(norm2, 0.0, None))
        with np.errstate(divide="ignore", invalid="ignore"):
            cos = (v @ along_g) / (norm * g_norm)
            score = 2.0 * (v @ along_centred) / norm2[:, None]
            image_cos = (v @ along_ref) / (norm[:, None] * ref_norms[None, :])
        return cos, norm, score, image_cos

    point = contrast_weights(Z, np.ones(len(item.rows)))[None]
    cos, image_norm, image_score, image_cos = (m[0] for m in measures(point))
    leans = _prompt_leans(H, layout, axis)
    prompt = [leans[key] for key in concepts.keys]
    prompt_scores = [p.score for p in prompt]
    prompt_centred = (
        2.0 * (concepts.centred @ (H @ g)) / g_norm**2 if g_norm else np.zeros(len(prompt))
    )
    many = len(concepts.keys) > 1
    rho = spearman(image_score, prompt_scores) if many else float("nan")

    nan = float("nan")
    n_concepts = len(concepts.keys)
    cos_ci, rho_ci, chance = (nan, nan), (nan, nan), nan
    score_ci = cosine_ci = (np.full(n_concepts, nan), np.full(n_concepts, nan))
    if resamples > 0:
        drawn = [_resample_counts(rng, item.first) for _ in range(resamples)]
        v = np.stack([contrast_weights(Z, counts) for counts in drawn])
        cos_b, _norm_b, score_b, image_cos_b = measures(v)
        low, high = _quantiles(cos_b)
        cos_ci = (float(low), float(high))
        score_ci, cosine_ci = _quantiles(score_b), _quantiles(image_cos_b)
        if many:
            rho_b = np.array([spearman(s, prompt_scores) for s in score_b])
            r_low, r_high = _quantiles(rho_b)
            rho_ci = (float(r_low), float(r_high))
        splits = np.stack([_split_weights(rng, item, turn) for turn in range(resamples)])
        chance = float(np.nanquantile(np.abs(measures(splits)[0]), CHANCE_QUANTILE))
    axis_row: dict[str, object] = {
        "axis": axis.name,
        "positive_group": positive,
        "negative_group": negative,
        "n_positive": item.n_first,
        "n_negative": item.n_second,
        "adjusted_for": ",".join(sorted(item.covariates)),
        "cosine": float(cos),
        "cosine_ci_low": cos_ci[0],
        "cosine_ci_high": cos_ci[1],
        "chance_cosine": chance,
        "reproduced": bool(np.isfinite(chance) and cos_ci[0] > chance),
        "prompt_norm": g_norm,
        "image_norm": float(image_norm),
        "n_concepts": n_concepts,
        "rho": float(rho),
        "rho_ci_low": rho_ci[0],
        "rho_ci_high": rho_ci[1],
        "n_resamples": int(resamples),
    }
    lean_rows = [
        {
            "axis": axis.name,
            "concept_set": cset_name,
            "concept": name,
            "positive_group": positive,
            "negative_group": negative,
            "prompt_score": prompt_scores[j],
            "prompt_centred": float(prompt_centred[j]),
            "prompt_cosine": prompt[j].cosine,
            "image_score": float(image_score[j]),
            "image_score_ci_low": float(score_ci[0][j]),
            "image_score_ci_high": float(score_ci[1][j]),
            "image_cosine": float(image_cos[j]),
            "image_cosine_ci_low": float(cosine_ci[0][j]),
            "image_cosine_ci_high": float(cosine_ci[1][j]),
        }
        for j, (cset_name, name) in enumerate(concepts.keys)
    ]
    return axis_row, lean_rows, (g, (point @ X)[0])


__all__ = [
    "AXIS_COLUMNS",
    "CHANCE_QUANTILE",
    "LEAN_COLUMNS",
    "GroundedAxis",
    "GroundedImages",
    "ground_axes",
    "read_grounded",
]
