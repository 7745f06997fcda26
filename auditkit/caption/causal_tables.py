"""The causal check's tables: per concept, pooled per alpha, and per axis.

Written by :func:`auditkit.caption.causal.run_causal_check` at the end of every pass from the
stored readings of its steered images (schema: docs/run-directory.md):

* ``captions/causal.parquet``: per (axis, alpha, concept set, concept): the share read as the
  axis's first group, with a Wilson interval.
* ``captions/causal_curve.parquet``: the same, pooled over the selected concepts.
* ``captions/causal_axes.parquet``: per axis: Spearman's rho of alpha against the reading over
  all images, whether the pooled share is monotone non-decreasing in alpha, the least-squares
  slope, and the share change from the lowest to the highest alpha.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd

from auditkit.analyze.stats import spearman, wilson_interval
from auditkit.caption.stage import CaptionStore
from auditkit.plan import PlannedPrompt
from auditkit.rundir import RunDir

if TYPE_CHECKING:
    from auditkit.caption.causal import CausalJob, SteeringDirection

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


def write_causal_tables(
    root: Path,
    chunks: CaptionStore,
    prompts: Sequence[PlannedPrompt],
    directions: Mapping[str, SteeringDirection],
    jobs: Sequence[CausalJob],
) -> None:
    """(Re)write the three causal tables from the stored readings of ``jobs`` (steered
    samples of ``prompts``, the concept prompts of the check)."""
    stored = chunks.rows().set_index("unit_id")["readings"]
    value = {
        j.job_id: str(json.loads(str(stored.loc[j.job_id])).get(j.axis, "unknown")) for j in jobs
    }
    images = pd.DataFrame(
        [
            {
                "axis": j.axis,
                "alpha": j.alpha,
                "prompt_id": j.unit.prompt_id,
                "seed": j.unit.seed,
                "value": value[j.job_id],
            }
            for j in jobs
        ],
        columns=["axis", "alpha", "prompt_id", "seed", "value"],
    )
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
    meta = {"captioner_id": str(chunks.record["id"]), "captioner_sha256": chunks.record["sha256"]}
    tables = {
        "causal": pd.DataFrame(concept_rows, columns=CAUSAL_COLUMNS),
        "causal_curve": pd.DataFrame(curve_rows, columns=CURVE_COLUMNS),
        "causal_axes": pd.DataFrame(axis_rows, columns=AXIS_COLUMNS),
    }
    run = RunDir.of_folder(root)
    for name, frame in tables.items():
        run.write_table(name, frame, meta)


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


__all__ = [
    "AXIS_COLUMNS",
    "CAUSAL_COLUMNS",
    "CAUSAL_SCHEMA_VERSION",
    "CURVE_COLUMNS",
    "read_causal",
    "write_causal_tables",
]
