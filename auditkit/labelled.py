"""Labelled images, loaded: the captioner's calibration set and the image-grounded axes' images.

A spec names them with :class:`auditkit.spec.labelled.LabelledImagesSpec`: a folder of image
files with a labels CSV (a ``file`` column and one column per attribute, each cell a group name
or empty), or a set drawn from the toyworld with the attributes it was drawn with. Either way the
result is a :class:`LabelledSet`: uint8 images at the audit's resolution, a labels table, and a
digest of both that names the set in a run's provenance.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from auditkit.errors import UsageError
from auditkit.spec.labelled import LabelledImagesSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
"""Image files a labelled folder may hold."""
MAX_LABELLED_IMAGES = 20_000
"""Most images a labels CSV may list (a larger set is sampled down by its owner)."""
MAX_LABELS_BYTES = 16 * 2**20
"""Largest labels CSV read."""


@dataclass(frozen=True)
class LabelledSet:
    """Images with known attributes.

    Attributes:
        images: uint8 [N, resolution, resolution, 3].
        labels: one row per image: ``file`` and one string column per attribute ("" where the
            image is not labelled for it).
        digest: sha256 of the labels and every image's pixels: which set this is.
        source: where it came from, as a report names it ("toyworld draw of 400, seed 0" or the
            folder's path).
    """

    images: np.ndarray
    labels: pd.DataFrame
    digest: str
    source: str

    @property
    def attributes(self) -> list[str]:
        """The labelled attributes, in the CSV's column order."""
        return [str(c) for c in self.labels.columns if c != "file"]

    def of(self, attribute: str, group: str) -> np.ndarray:
        """Row indices of the images labelled ``group`` for ``attribute``."""
        return np.flatnonzero(self.labels[attribute].astype(str).to_numpy() == group)


def load_labelled(
    section: LabelledImagesSpec,
    *,
    resolution: int,
    groups: Mapping[str, Sequence[str]],
    model_id: str,
    where: str,
) -> LabelledSet:
    """Load the labelled images ``section`` names.

    Args:
        section: the spec section.
        resolution: side of the square images returned (the audit's ``model.resolution``).
        groups: attribute -> the groups it may take (the axes' groups, or what the captioner
            reads). A label column that names none of these attributes is kept but not checked;
            a cell that is not one of its attribute's groups is an error.
        model_id: the audited model's id (a toyworld draw needs a toyworld model).
        where: the spec location, for messages ("captions.calibration").

    Raises:
        UsageError: the folder, the CSV or an image is missing, unreadable or mislabelled (every
            problem found is listed, with its row), or a toyworld draw for a model that is not
            a toyworld.
    """
    if section.toyworld is not None:
        return _toyworld_set(section, resolution, model_id, where)
    assert section.folder is not None
    return _folder_set(Path(section.folder), section.labels, resolution, groups, where)


def _toyworld_set(
    section: LabelledImagesSpec, resolution: int, model_id: str, where: str
) -> LabelledSet:
    from auditkit.models.builtin import SHIPPED_BUILTINS
    from auditkit.toyworld.world import ATTRIBUTES, random_people, render_many

    name = model_id.removeprefix("builtin:")
    if not model_id.startswith("builtin:") or name not in SHIPPED_BUILTINS:
        raise UsageError(
            f"{where}.toyworld: a set drawn from the toyworld needs a toyworld model; "
            f"model.id is {model_id!r}.",
            hint=f"name a folder of labelled images instead ({where}.folder).",
        )
    n = int(section.toyworld or 0)
    rng = np.random.default_rng(section.seed)
    people = random_people(n, rng)
    skirt = "occupation" if name == "toyworld-reworded" else "trousers"
    images = render_many(people, rng, resolution, skirt=skirt)
    columns = {"file": [f"toyworld/{i:05d}" for i in range(n)]}
    for attribute in (*ATTRIBUTES, "occupation"):
        columns[attribute] = [str(getattr(p, attribute)) for p in people]
    labels = pd.DataFrame(columns)
    return LabelledSet(
        images, labels, _digest(labels, images), f"toyworld draw of {n} (seed {section.seed})"
    )


def _folder_set(
    folder: Path, labels_name: str, resolution: int, groups: Mapping[str, Sequence[str]], where: str
) -> LabelledSet:
    if not folder.is_dir():
        raise UsageError(f"{where}.folder: no folder {folder}.", hint="create it or fix the path.")
    path = folder / labels_name
    if not path.is_file():
        raise UsageError(
            f"{where}.labels: no labels file {path}.",
            hint="write a CSV with a 'file' column and one column per attribute.",
        )
    if path.stat().st_size > MAX_LABELS_BYTES:
        raise UsageError(f"{where}.labels: {path} is over {MAX_LABELS_BYTES // 2**20} MiB.")
    try:
        labels = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise UsageError(f"{where}.labels: {path} is not a readable CSV ({exc}).") from None
    labels.columns = [str(c).strip() for c in labels.columns]
    if "file" not in labels.columns:
        raise UsageError(
            f"{where}.labels: {path} has no 'file' column (columns: {list(labels.columns)})."
        )
    if len(labels) == 0:
        raise UsageError(f"{where}.labels: {path} lists no image.")
    if len(labels) > MAX_LABELLED_IMAGES:
        raise UsageError(
            f"{where}.labels: {path} lists {len(labels)} images; at most "
            f"{MAX_LABELLED_IMAGES} are read."
        )
    problems: list[str] = []
    root = folder.resolve()
    images = np.empty((len(labels), resolution, resolution, 3), dtype=np.uint8)
    for row, name in enumerate(labels["file"].astype(str)):
        line = row + 2  # the header is line 1
        target = (folder / name).resolve()
        if not name or root not in (target, *target.parents) or target == root:
            problems.append(f"line {line}: file {name!r} is not a file inside the folder")
            continue
        if target.suffix.lower() not in IMAGE_SUFFIXES:
            problems.append(f"line {line}: {name!r} is not an image file ({IMAGE_SUFFIXES})")
            continue
        try:
            images[row] = read_image(target, resolution)
        except (OSError, ValueError) as exc:
            problems.append(f"line {line}: cannot read {name!r} ({exc})")
    for attribute, allowed in groups.items():
        if attribute not in labels.columns:
            continue
        values = labels[attribute].astype(str).str.strip()
        labels[attribute] = values
        for row, value in enumerate(values):
            if value and value not in allowed:
                problems.append(
                    f"line {row + 2}: {attribute} is {value!r}, not one of {list(allowed)}"
                )
    if problems:
        shown = problems[:20] + ([f"... {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise UsageError(f"{where}: {len(problems)} problem(s) in {path}:\n  " + "\n  ".join(shown))
    return LabelledSet(images, labels, _digest(labels, images), str(folder))


def read_image(path: Path, resolution: int) -> np.ndarray:
    """One image file as uint8 RGB [resolution, resolution, 3]: centre-cropped to a square,
    then resized (Lanczos)."""
    from PIL import Image

    with Image.open(path) as opened:
        picture = opened.convert("RGB")
    width, height = picture.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    picture = picture.crop((left, top, left + side, top + side))
    if side != resolution:
        picture = picture.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.asarray(picture, dtype=np.uint8)


def _digest(labels: pd.DataFrame, images: np.ndarray) -> str:
    text = io.StringIO()
    labels.to_csv(text, index=False)
    hasher = hashlib.sha256(text.getvalue().encode())
    hasher.update(np.ascontiguousarray(images).tobytes())
    return hasher.hexdigest()


__all__ = ["IMAGE_SUFFIXES", "LabelledSet", "load_labelled", "read_image"]
