"""A lean beside its images: where the latent finding and what the model draws part ways.

Split from :mod:`auditkit.analyze.outputs` (the image shares this reads come from there).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import numpy as np
import pandas as pd

from auditkit.analyze.outputs import agreement_points

IMAGE_SKEW: Final = 0.1
"""Images lean clearly when the 95% interval of the positive group's share lies wholly beyond
0.5 ± this: ten points, about what a lean at the default band went with on the calibration
models (docs/method.md)."""
WITNESS_COLUMNS: Final = ("image_share", "image_share_low", "image_share_high", "witness")
"""Columns :func:`add_witness` adds to the lean table."""


def add_witness(
    lean: pd.DataFrame, shares: pd.DataFrame, attribute_axis: Mapping[str, str]
) -> None:
    """Set each lean beside what the images show, where the axis's attribute was read.

    Adds the share of the axis's positive group among the concept's images (with its Wilson
    interval) and ``witness``, comparing the row's finding (``significant``) with the images:

    * ``agree``: a finding, and the images' interval excludes parity on the same side;
    * ``images only``: no finding, but the images lean clearly (interval wholly beyond
      0.5 ± :data:`IMAGE_SKEW`): the latent lean is a weak witness here;
    * ``latent only``: a finding the images do not show (their interval includes 0.5);
    * ``opposite``: a finding on one side, images clearly on the other;
    * ``neither``: no finding and no clear lean in the images.

    Rows of axes without readings get NaN shares and an empty ``witness``.
    """
    points = agreement_points(lean, shares, attribute_axis)
    keys = ["axis", "concept_set", "concept"]
    merged = lean[keys].merge(
        points[[*keys, "share", "share_low", "share_high"]], on=keys, how="left"
    )
    share = merged["share"].to_numpy(dtype=np.float64)
    low = merged["share_low"].to_numpy(dtype=np.float64)
    high = merged["share_high"].to_numpy(dtype=np.float64)
    found = (
        lean["significant"].fillna(False).astype(bool).to_numpy()
        if "significant" in lean.columns
        else np.zeros(len(lean), dtype=bool)
    )
    towards_first = lean["score"].to_numpy(dtype=np.float64) > 0
    images_first, images_second = low > 0.5, high < 0.5
    clear = (low > 0.5 + IMAGE_SKEW) | (high < 0.5 - IMAGE_SKEW)
    same = np.where(towards_first, images_first, images_second)
    other = np.where(towards_first, images_second, images_first)
    witness = np.select(
        [~np.isfinite(share), found & same, found & other & clear, found, clear],
        ["", "agree", "opposite", "latent only", "images only"],
        default="neither",
    )
    lean["image_share"] = share
    lean["image_share_low"] = low
    lean["image_share_high"] = high
    lean["witness"] = witness
