"""The causal check's analysis: the direction it steers along, its tables, and its prose.

The check itself (:mod:`auditkit.passes.causal`) samples the concept prompts again with
``alpha * g`` added to the hook point's output and reads the images. This module holds what is
computed without the model:

* :func:`steering_directions`: g = G(first group) - G(second group) per axis, from the run's
  stored prompt latents exactly as the analysis computes an axis direction
  (:func:`auditkit.analyze.measures.axis_direction` on the seed-mean, step-mean latents),
  shaped like the hook output's per-sample shape.
* :func:`causal_tables`: the tables of the steered images' readings (schema:
  docs/run-directory.md), which the check writes at the end of every pass:

  * ``captions/causal.parquet``: per (axis, alpha, concept set, concept): the share read as
    the axis's first group, with a Wilson interval.
  * ``captions/causal_curve.parquet``: the same, pooled over the selected concepts.
  * ``captions/causal_axes.parquet``: per axis: Spearman's rho of alpha against the reading
    over all images, whether the pooled share is monotone non-decreasing in alpha, the
    least-squares slope, and the share change from the lowest to the highest alpha.

* :func:`causal_records`, :func:`causal_statement`: the summary's ``causal`` block and its
  findings, which the report shows too.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from auditkit.analyze.latents import load_latents
from auditkit.analyze.measures import AxisLayout, axis_direction
from auditkit.analyze.stats import spearman, summary_number, wilson_interval
from auditkit.errors import RuntimeFailure
from auditkit.extract.store import ActivationStore
from auditkit.plan import AuditPlan, PlannedPrompt, prompt_id
from auditkit.rundir import RunDir
from auditkit.spec.audit import AuditSpec
from auditkit.spec.vocabulary import AxisSpec, fill

CAUSAL_SCHEMA_VERSION = 1
CAUSAL_COLUMNS = [
    *("axis", "alpha", "concept_set", "concept", "attribute", "positive_group"),
    *("n_images", "n_unread", "count", "share", "share_low", "share_high"),
]
CURVE_COLUMNS = [
    *("axis", "alpha", "attribute", "positive_group"),
    *("n_images", "n_unread", "count", "share", "share_low", "share_high"),
]
AXIS_COLUMNS = [
    *("axis", "attribute", "positive_group", "negative_group", "n_alphas", "n_concepts"),
    *("n_images", "alpha_low", "alpha_high", "share_at_low", "share_at_high", "effect"),
    *("rho", "monotone", "slope", "direction_norm", "direction_sha256"),
]
IMAGE_COLUMNS = ["axis", "alpha", "prompt_id", "seed", "value"]
"""One steered image read: its axis, alpha, unit (prompt id, seed) and the value read for the
axis's attribute (what :func:`causal_tables` tabulates)."""


# --- the direction g ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SteeringDirection:
    """An axis's direction g, shaped like one sample of the hook point's output."""

    axis: str
    groups: tuple[str, str]
    vector: np.ndarray  # float32, [C, H, W]
    sha256: str

    @property
    def norm(self) -> float:
        """Euclidean norm of g (the distance alpha = 1 moves h)."""
        return float(np.linalg.norm(self.vector.astype(np.float64)))


def steering_directions(
    spec: AuditSpec, plan: AuditPlan, store: ActivationStore, axes: Sequence[AxisSpec]
) -> dict[str, SteeringDirection]:
    """g = G(first group) - G(second group) of each axis, from the stored prompt latents.

    The same computation as the analysis (:func:`~auditkit.analyze.latents.load_latents` with
    aggregation ``mean``, then :func:`~auditkit.analyze.measures.axis_direction`), over the
    units of the axes' prompts only (which is all g depends on), reshaped to the stored h's
    per-step shape, which is the hook output's per-sample shape.
    """
    texts = {
        fill(t, term)
        for a in axes
        for terms in a.groups.values()
        for t in a.templates
        for term in terms
    }
    wanted = {prompt_id(text) for text in texts}
    units = tuple(u for u in plan.units if u.prompt_id in wanted)
    missing = {u.unit_id for u in units} - store.completed()
    if missing:
        raise RuntimeFailure(
            f"the causal check needs the stored h of the axes' prompts, and {len(missing)} of "
            f"their {len(units)} units are not in {store.root}.",
            hint="rerun 'auditkit run' so extraction completes first.",
        )
    latents = load_latents(store, AuditPlan(**{**plan.__dict__, "units": units}), "mean")
    H = latents.means().astype(np.float64)
    rows = latents.row_map()
    index = store.index().set_index("unit_id")
    shape = json.loads(str(index.loc[units[0].unit_id, "shape"]))[1:]
    directions: dict[str, SteeringDirection] = {}
    for axis in axes:
        layout = AxisLayout(
            name=axis.name,
            group_names=tuple(axis.groups),
            groups={
                g: [[rows[prompt_id(fill(t, term))] for term in terms] for t in axis.templates]
                for g, terms in axis.groups.items()
            },
        )
        vector = axis_direction(H, layout).astype(np.float32).reshape(shape)
        digest = hashlib.sha256(json.dumps(list(vector.shape)).encode())
        digest.update(np.ascontiguousarray(vector).tobytes())
        first, second = layout.group_names[:2]
        directions[axis.name] = SteeringDirection(
            axis.name, (first, second), vector, digest.hexdigest()
        )
    return directions


# --- the tables --------------------------------------------------------------------------------


def causal_tables(
    images: pd.DataFrame,
    prompts: Sequence[PlannedPrompt],
    directions: Mapping[str, SteeringDirection],
) -> dict[str, pd.DataFrame]:
    """The three causal tables (``causal``, ``causal_curve``, ``causal_axes``) of the steered
    images read (:data:`IMAGE_COLUMNS`), samples of ``prompts`` (the check's concept prompts)."""
    occurrences = pd.DataFrame(
        [(p.prompt_id, p.set_name, p.term) for p in prompts],
        columns=["prompt_id", "concept_set", "concept"],
    ).drop_duplicates()
    per_concept = images.merge(occurrences, on="prompt_id", how="inner")
    concept_rows, curve_rows, axis_rows = [], [], []
    for name, direction in directions.items():
        first, second = direction.groups
        mine = per_concept[per_concept["axis"] == name]
        for (alpha, cset, concept), part in mine.groupby(
            ["alpha", "concept_set", "concept"], sort=True
        ):
            keys = {"axis": name, "alpha": _number(alpha), "concept_set": cset, "concept": concept}
            concept_rows.append({**keys, **_share(part["value"], name, first, second)})
        pooled = images[images["axis"] == name]
        curve = [
            {"axis": name, "alpha": _number(alpha), **_share(part["value"], name, first, second)}
            for alpha, part in pooled.groupby("alpha", sort=True)
        ]
        curve_rows.extend(curve)
        read = pooled[pooled["value"].isin([first, second])]
        axis_rows.append(_axis_summary(name, direction, curve, read, len(set(mine["concept"]))))
    return {
        "causal": pd.DataFrame(concept_rows, columns=CAUSAL_COLUMNS),
        "causal_curve": pd.DataFrame(curve_rows, columns=CURVE_COLUMNS),
        "causal_axes": pd.DataFrame(axis_rows, columns=AXIS_COLUMNS),
    }


def _number(value: object) -> float:
    """A pandas group key as a float (typed as Hashable by pandas)."""
    return float(cast(float, value))


def _share(values: pd.Series, attribute: str, first: str, second: str) -> dict[str, Any]:
    """Counts, share of ``first`` among images read as ``first`` or ``second``, Wilson CI."""
    k = int((values == first).sum())
    n = k + int((values == second).sum())
    low, high = wilson_interval(k, n)
    return {
        **{"attribute": attribute, "positive_group": first},
        **{"n_images": n, "n_unread": len(values) - n, "count": k},
        **{"share": k / n if n else math.nan, "share_low": low, "share_high": high},
    }


def _axis_summary(
    name: str,
    direction: SteeringDirection,
    curve: list[dict[str, Any]],
    read: pd.DataFrame,
    n_concepts: int,
) -> dict[str, Any]:
    """One axis's dose-response in numbers (see docs/run-directory.md, causal_axes)."""
    first, second = direction.groups
    shares = np.array([row["share"] for row in curve], dtype=np.float64)
    x = read["alpha"].to_numpy(np.float64)
    y = (read["value"] == first).to_numpy(np.float64)
    slope = math.nan
    if len(x) >= 2 and np.ptp(x) > 0:
        slope = float(np.polyfit(x, y, 1)[0])
    monotone = bool(np.isfinite(shares).all() and len(shares) > 1 and (np.diff(shares) >= 0).all())
    return {
        **{"axis": name, "attribute": name, "positive_group": first, "negative_group": second},
        **{"n_alphas": len(curve), "n_concepts": n_concepts, "n_images": len(read)},
        **{"alpha_low": curve[0]["alpha"], "alpha_high": curve[-1]["alpha"]},
        **{"share_at_low": float(shares[0]), "share_at_high": float(shares[-1])},
        "effect": float(shares[-1] - shares[0]),
        "rho": spearman(x.tolist(), y.tolist()) if len(x) >= 2 else math.nan,
        "monotone": monotone,
        "slope": slope,
        "direction_norm": direction.norm,
        "direction_sha256": direction.sha256,
    }


def read_causal(root: Path) -> dict[str, pd.DataFrame]:
    """The causal tables of a run's ``captions/`` folder, by name (``causal``,
    ``causal_curve``, ``causal_axes``).

    Raises:
        UsageError: the run has no causal check.
        SchemaVersionError: a table was written by a newer auditkit.
    """
    run = RunDir.of_folder(root)
    return {
        name: cast(pd.DataFrame, run.table(name, required=True))
        for name in ("causal", "causal_curve", "causal_axes")
    }


# --- prose -------------------------------------------------------------------------------------


def alpha_text(alpha: float) -> str:
    """A steering strength for prose: ``−1``, ``0``, ``+0.5`` (true minus sign)."""
    return "0" if alpha == 0 else f"{alpha:+g}".replace("-", "−")


def causal_verdict(points: pd.DataFrame, monotone: bool) -> str:
    """One axis's dose-response in a word, from its ``causal_curve`` rows.

    ``causal``: the share of the first group at the largest alpha is clearly (disjoint 95%
    Wilson intervals) above the share at the smallest, and never falls in between;
    ``not monotone``: clearly above, but falls somewhere; ``reversed``: clearly below;
    ``no clear effect``: the intervals at the two ends overlap; ``not measured``: fewer than two
    alphas with images read as either group.
    """
    read = points[points["share"].notna()].sort_values("alpha")
    if len(read) < 2:
        return "not measured"
    low, high = read.iloc[0], read.iloc[-1]
    if float(high["share_low"]) > float(low["share_high"]):
        return "causal" if monotone else "not monotone"
    if float(high["share_high"]) < float(low["share_low"]):
        return "reversed"
    return "no clear effect"


def causal_statement(row: Mapping[str, Any], points: pd.DataFrame, hook: str) -> str:
    """A plain sentence on one steered axis (its ``causal_axes`` row and curve points)."""
    axis, pos = str(row["axis"]), str(row["positive_group"])
    verdict = causal_verdict(points, bool(row["monotone"]))
    if verdict == "not measured":
        return (
            f"Causal check on '{axis}': the captioner read too few steered images as "
            f"'{pos}' or '{row['negative_group']}' to measure a dose-response."
        )
    read = points[points["share"].notna()].sort_values("alpha")
    low, high = read.iloc[0], read.iloc[-1]
    moves = (
        f"Causal check on '{axis}': adding α·g to the {hook} output at every "
        f"denoising step moves the share of images read as '{pos}' from {low['share']:.2f} "
        f"(α = {alpha_text(low['alpha'])}) to {high['share']:.2f} "
        f"(α = {alpha_text(high['alpha'])})"
    )
    if verdict == "causal":
        return moves + ", monotonically: the direction is causally used by the model."
    if verdict == "not monotone":
        shares, alphas = read["share"].tolist(), read["alpha"].tolist()
        fall = next((i for i in range(len(shares) - 1) if shares[i + 1] < shares[i]), None)
        where = (
            f" (it falls between α = {alpha_text(alphas[fall])} and {alpha_text(alphas[fall + 1])})"
            if fall is not None
            else " (some α had no image read as either group)"
        )
        return (
            moves + f", but not monotonically{where}: steering along the direction changes "
            "what the model draws, but not as a steady dose-response."
        )
    if verdict == "reversed":
        return (
            moves + ": the share falls as α grows, against the direction's sign, so the "
            "direction changes what the model draws but not the way the latent axis predicts."
        )
    return (
        moves + ": the 95% intervals at the two ends overlap, so steering has no clear effect "
        "on what the model draws and the direction is not shown to be causally used."
    )


def causal_records(extra: Mapping[str, pd.DataFrame], hook: str) -> list[dict[str, Any]] | None:
    """The summary's ``causal`` block (per steered axis), or None without a causal check."""
    curve, axes = extra.get("causal_curve"), extra.get("causal_axes")
    if curve is None or axes is None:
        return None
    out = []
    for record in axes.to_dict("records"):
        row = {str(k): v for k, v in record.items()}
        points = curve[curve["axis"] == row["axis"]].sort_values("alpha")
        out.append(
            {
                "axis": str(row["axis"]),
                "positive_group": str(row["positive_group"]),
                "negative_group": str(row["negative_group"]),
                "hook": hook,
                "shares": [
                    {
                        "alpha": summary_number(p.alpha),
                        "share": summary_number(p.share),
                        "share_ci": [summary_number(p.share_low), summary_number(p.share_high)],
                        "n_images": int(str(p.n_images)),
                        "n_unread": int(str(p.n_unread)),
                    }
                    for p in points.itertuples()
                ],
                "effect": summary_number(row["effect"]),
                "monotone": bool(row["monotone"]),
                "verdict": causal_verdict(points, bool(row["monotone"])),
                "rho": summary_number(row["rho"]),
                "slope": summary_number(row["slope"]),
                "n_concepts": int(row["n_concepts"]),
                "n_images": int(row["n_images"]),
                "direction_norm": summary_number(row["direction_norm"]),
                "statement": causal_statement(row, points, hook),
            }
        )
    return out


__all__ = [
    "AXIS_COLUMNS",
    "CAUSAL_COLUMNS",
    "CAUSAL_SCHEMA_VERSION",
    "CURVE_COLUMNS",
    "IMAGE_COLUMNS",
    "SteeringDirection",
    "alpha_text",
    "causal_records",
    "causal_statement",
    "causal_tables",
    "causal_verdict",
    "read_causal",
    "steering_directions",
]
