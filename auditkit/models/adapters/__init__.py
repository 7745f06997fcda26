"""Model adapters, one per architecture family (:mod:`auditkit.models.adapters.base`).

Every module of this package but ``base`` and the private ones (``_tiny_parts``) declares
``ADAPTERS``; :func:`adapters` collects them
in a stable order (the U-Net families first). Adding a family takes its module here (and its
tests); nothing else names it.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from functools import cache
from pathlib import Path

from auditkit.models.adapters.base import Geometry, ModelAdapter

FIRST = ("unet",)
"""Modules read first, so that the U-Net families keep their place in listings."""


@cache
def adapters() -> dict[str, ModelAdapter]:
    """Every adapter by family name."""
    names = sorted(
        m.name for m in pkgutil.iter_modules(__path__) if m.name != "base" and m.name[0] != "_"
    )
    ordered = [n for n in FIRST if n in names] + [n for n in names if n not in FIRST]
    found: dict[str, ModelAdapter] = {}
    for module in ordered:
        for adapter in importlib.import_module(f"{__name__}.{module}").ADAPTERS:
            if adapter.family in found:
                raise ValueError(f"two adapters claim the family {adapter.family!r}")
            found[adapter.family] = adapter
    return found


def families() -> tuple[str, ...]:
    """The family names a spec may give as ``model.pipeline`` (besides ``auto``)."""
    return tuple(adapters())


def for_family(family: str) -> ModelAdapter:
    """The adapter of ``family``; KeyError naming the known ones."""
    found = adapters()
    if family not in found:
        raise KeyError(f"unknown model family {family!r}; known: {', '.join(found)}")
    return found[family]


def for_pipeline_class(class_name: str) -> ModelAdapter | None:
    """The adapter serving the diffusers pipeline class ``class_name``, None if none does."""
    for adapter in adapters().values():
        if class_name in adapter.pipeline_classes:
            return adapter
    return None


def for_folder(folder: Path | None) -> ModelAdapter | None:
    """The adapter of the pipeline saved in ``folder`` (its ``model_index.json`` class), None
    without a folder, an index or an adapter for its class."""
    index = folder / "model_index.json" if folder is not None else None
    if index is None or not index.is_file():
        return None
    return for_pipeline_class(str(json.loads(index.read_text()).get("_class_name", "")))


def pipeline_classes() -> dict[str, str]:
    """Every pipeline class an adapter serves -> its family."""
    return {cls: a.family for a in adapters().values() for cls in a.pipeline_classes}


__all__ = [
    "Geometry",
    "ModelAdapter",
    "adapters",
    "families",
    "for_family",
    "for_folder",
    "for_pipeline_class",
    "pipeline_classes",
]
