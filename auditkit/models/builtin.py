"""The models auditkit builds or ships itself, which a spec names ``builtin:NAME``.

Two kinds: the tiny random-weight pipelines (:mod:`auditkit.models.tiny`, built from configs
on first use under the cache folder) and the checkpoints shipped inside the package (the
toyworld models, which ``auditkit toyworld train`` writes to :data:`SHIPPED_CHECKPOINTS`).

This is a table of data, not a registry that code fills in: loading a builtin model never
imports the code that trains it, so the dependency points one way (toyworld uses models).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from auditkit.errors import ModelLoadError

if TYPE_CHECKING:
    from auditkit.models.tiny import TinyKind

BUILTIN_PREFIX = "builtin:"
"""What a spec's ``model.id`` starts with to name a builtin model."""

TINY_BUILTINS: dict[str, TinyKind] = {"tiny-sd": "sd", "tiny-lcm": "lcm", "tiny-sdxl": "sdxl"}
"""Builtin name -> the kind of tiny pipeline built for it (in ``CACHE_DIR/tiny-KIND``), for
the U-Net kinds; every model adapter with a tiny pipeline adds ``tiny-<its tiny>``
(:func:`tiny_builtins`)."""


def tiny_builtins() -> dict[str, TinyKind]:
    """Every tiny builtin: the U-Net ones and the model adapters' (``builtin:tiny-pixart``...)."""
    from auditkit.models.adapters import adapters

    found = dict(TINY_BUILTINS)
    for adapter in adapters().values():
        if adapter.tiny:
            found.setdefault(f"tiny-{adapter.tiny}", adapter.tiny)
    return found


SHIPPED_CHECKPOINTS = Path(__file__).resolve().parents[1] / "toyworld" / "checkpoints"
"""The folder inside the package that holds the shipped checkpoints (and their captioners)."""

SHIPPED_BUILTINS = ("toyworld-biased", "toyworld-balanced", "toyworld-reworded", "toyworld-dit")
"""Builtin names of the shipped checkpoints, each a folder of :data:`SHIPPED_CHECKPOINTS`."""


def builtin_name(model_id: str) -> str | None:
    """NAME for a ``builtin:NAME`` model id; None for a hub id or a folder."""
    return model_id[len(BUILTIN_PREFIX) :] if model_id.startswith(BUILTIN_PREFIX) else None


def shipped_folder(name: str) -> Path:
    """The folder of a shipped checkpoint; ModelLoadError when this installation lacks it."""
    folder = SHIPPED_CHECKPOINTS / name
    if not (folder / "model_index.json").is_file():
        raise ModelLoadError(
            f"model.id: the toyworld checkpoint {name!r} is not in this installation ({folder}).",
            hint=f"train it with 'auditkit toyworld train --variant "
            f"{name.removeprefix('toyworld-')}' or reinstall auditkit.",
        )
    return folder


def tiny_kind(name: str) -> TinyKind:
    """The tiny pipeline kind of builtin NAME; ModelLoadError naming every builtin if unknown."""
    tiny = tiny_builtins()
    if name not in tiny:
        known = [*tiny, *SHIPPED_BUILTINS]
        raise ModelLoadError(
            f"model.id: unknown builtin model {BUILTIN_PREFIX + name!r}.",
            hint=f"use one of {', '.join(BUILTIN_PREFIX + b for b in known)}.",
        )
    return tiny[name]


def existing_builtin_folder(name: str, cache_dir: Path) -> Path | None:
    """The folder of builtin NAME if it is already on disk (never builds anything)."""
    if name in SHIPPED_BUILTINS:
        folder = SHIPPED_CHECKPOINTS / name
    else:
        folder = cache_dir / f"tiny-{tiny_builtins().get(name, name)}"
    return folder if (folder / "model_index.json").is_file() else None
