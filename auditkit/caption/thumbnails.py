"""Exemplar thumbnails: compressed copies of some captioned images, for the report's grids.

The captioning stage decodes every captioned unit anyway; for the units of the first
``captions.exemplars.seeds`` seeds it also keeps a thumbnail (longest side at most
``exemplars.size`` pixels, never enlarged; webp, jpeg or png). Thumbnails are stored per unit
under a key of the thumbnail settings, in atomic chunks like the captions, so an interrupted
stage resumes, a change of captioner keeps them, and a change of size or format makes new ones.

At the end of the stage ``captions/exemplars.parquet`` is (re)written: one row per captioned
prompt occurrence and exemplar seed, with the caption, the captioner's readings and the image
bytes. The ``exemplars`` analysis slice declares that table (:mod:`auditkit.analyses.exemplars`;
like every slice's, it is registered once the slices are loaded, as every command that runs an
audit does first) and embeds the images in the report within ``report.image_budget_mb``.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from auditkit.plan import WorkUnit
from auditkit.rundir import REGISTRY, RunDir, write_bytes_atomic, write_json_atomic
from auditkit.spec.audit import AuditSpec
from auditkit.spec.captions import ExemplarSpec

THUMBNAIL_MIME = {"webp": "image/webp", "jpeg": "image/jpeg", "png": "image/png"}
_STORE_COLUMNS = ["unit_id", "mime", "width", "height", "image"]


def encode_thumbnail(image: np.ndarray, settings: ExemplarSpec) -> tuple[bytes, int, int]:
    """One uint8 image [H, W, 3] as compressed bytes, its longest side at most
    ``settings.size``; returns (bytes, width, height)."""
    from PIL import Image

    picture = Image.fromarray(np.ascontiguousarray(image[..., :3]), mode="RGB")
    if max(picture.size) > settings.size:
        picture.thumbnail((settings.size, settings.size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    if settings.format == "png":
        picture.save(buffer, format="PNG", optimize=True)
    elif settings.format == "jpeg":
        picture.save(buffer, format="JPEG", quality=settings.quality, optimize=True)
    else:
        picture.save(buffer, format="WEBP", quality=settings.quality, method=6)
    return buffer.getvalue(), picture.size[0], picture.size[1]


def exemplar_seeds(spec: AuditSpec) -> list[int]:
    """The seeds whose captioned images get a thumbnail (none without a captions section)."""
    if spec.captions is None:
        return []
    captioned = spec.seed_list[: spec.captions.seeds] if spec.captions.seeds else spec.seed_list
    return list(captioned[: spec.captions.exemplars.seeds])


def settings_key(settings: ExemplarSpec) -> str:
    """sha256 of the settings that decide a thumbnail's bytes."""
    text = json.dumps(settings.model_dump(mode="json", exclude={"seeds"}), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


class UnitChunks:
    """A store of rows per unit in ``folder``'s ``chunk-*.parquet`` files, each written
    atomically; a unit stored twice keeps its last row."""

    folder: Path
    columns: Sequence[str]
    """The columns of a chunk (those of an empty store)."""

    def read_chunk(self, path: Path) -> pd.DataFrame:
        return pd.read_parquet(path)

    def rows(self) -> pd.DataFrame:
        """Every stored unit (one row each)."""
        frames = [self.read_chunk(path) for path in sorted(self.folder.glob("chunk-*.parquet"))]
        if not frames:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in self.columns})
        frame = pd.concat(frames, ignore_index=True)
        return frame.drop_duplicates("unit_id", keep="last").reset_index(drop=True)

    def completed(self) -> set[str]:
        """Ids of the units stored."""
        return set(self.rows()["unit_id"].astype(str))


class ThumbnailStore(UnitChunks):
    """Thumbnails per unit under ``root/thumbnails/<settings key[:16]>/``, in atomic chunks."""

    columns = _STORE_COLUMNS

    def __init__(self, root: Path, settings: ExemplarSpec) -> None:
        self.settings = settings
        self.key = settings_key(settings)
        self.folder = root / "thumbnails" / self.key[:16]

    def write_chunk(self, units: Sequence[WorkUnit], images: np.ndarray) -> None:
        """Encode and store the thumbnails of ``units`` (their images, in order) atomically."""
        if not len(units):
            return
        if not (self.folder / "settings.json").is_file():
            settings = {"key": self.key, **self.settings.model_dump(mode="json")}
            write_json_atomic(self.folder / "settings.json", settings)
        rows = []
        for unit, image in zip(units, images, strict=True):
            data, width, height = encode_thumbnail(image, self.settings)
            rows.append(
                {
                    "unit_id": unit.unit_id,
                    "mime": THUMBNAIL_MIME[self.settings.format],
                    "width": width,
                    "height": height,
                    "image": data,
                }
            )
        frame = pd.DataFrame(rows, columns=_STORE_COLUMNS)
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        write_bytes_atomic(self.folder / f"chunk-{units[0].unit_id}.parquet", buffer.getvalue())


def exemplar_table(
    captions: pd.DataFrame, readings: pd.Series, store: ThumbnailStore
) -> pd.DataFrame:
    """The rows of ``captions`` (the captions table) whose unit has a thumbnail, with the
    unit's readings (``readings``: unit id -> JSON object) and its image."""
    names = REGISTRY["exemplars"].names
    thumbs = store.rows()
    if captions.empty or thumbs.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in names})
    table = captions.merge(thumbs, on="unit_id", how="inner")
    table["readings"] = table["unit_id"].map(readings).fillna("{}").astype(str)
    table["width"] = table["width"].astype("int64")
    table["height"] = table["height"].astype("int64")
    return table[names].reset_index(drop=True)


def write_exemplars(root: Path, table: pd.DataFrame, meta: dict[str, str]) -> None:
    """Write ``captions/exemplars.parquet`` (removed when there is nothing to show)."""
    run = RunDir.of_folder(root)
    if table.empty:
        run.remove(run.table_path("exemplars"))
        return
    run.write_table("exemplars", table, meta)


__all__ = [
    "THUMBNAIL_MIME",
    "ThumbnailStore",
    "UnitChunks",
    "encode_thumbnail",
    "exemplar_seeds",
    "exemplar_table",
    "settings_key",
    "write_exemplars",
]
