"""Your own reader: a captioner (``kind: custom``) that the user's adapter builds from
safetensors weights. docs/readers.md is the user's guide, with the contract and an example.

The spec names a folder (``id``) and an adapter: ``FILE.py:FUNCTION`` in the folder, or
``entrypoint:NAME`` in the group ``auditkit.readers`` (loaded by :mod:`auditkit.caption.adapter`).
``FUNCTION(folder, weights, device)`` gets the folder, the tensors of its top-level
``*.safetensors`` files in one dict (on the CPU) and the device, and returns an object with
``attributes`` (attribute -> the values it writes; ``unknown`` is reserved and always allowed),
``read(images)`` and optionally ``caption(images)``. Every answer is checked, so a faulty adapter
fails with a message naming it, never with a table of wrong readings.

Identity: ``id`` is the folder's name (an entry point's ``NAME@VERSION``); ``sha256`` hashes the
``sha256sum`` lines of every file in the folder (hidden files and ``__pycache__`` left out, the
adapter always in), then, for an entry point, the line of its function's source file. Every file
counts because the adapter is code that may read any file beside it. The weights and the adapter
are hashed from the very bytes that are loaded and executed.

Safety: the adapter is code the spec declares, executed as it is (naming it is the request).
Weights are never unpickled: a folder holding a pickled weight file is refused.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from auditkit.caption.adapter import load_adapter
from auditkit.errors import ModelLoadError, PrerequisiteError
from auditkit.spec.base import NAME_PATTERN

UNKNOWN = "unknown"  # auditkit.caption.image_to_text.UNKNOWN, kept here to stay a leaf

_HINT = "see 'Your own reader' in docs/readers.md for the adapter's contract."


def load_custom_reader(source: str | Path, *, adapter: str, device: str = "auto") -> CustomReader:
    """Load the reader in folder ``source`` through ``adapter`` (see the module doc).

    Raises:
        ModelLoadError: no such folder, no safetensors file or a pickled one, an unreadable
            weight file, a missing adapter file, function or entry point, an adapter that
            raises, or a reader that breaks the contract (no ``read``, bad ``attributes``).
        PrerequisiteError: ``device`` names CUDA on a machine without it.
    """
    folder = Path(source).expanduser()
    loaded = load_adapter(folder, adapter, f"custom reader {str(folder)!r}")
    where = f"custom reader {str(folder)!r} (adapter {adapter!r})"
    run_on = _device(device)
    try:
        built = loaded.function(folder, loaded.weights, run_on)
    except Exception as exc:
        raise ModelLoadError(
            f"{where}: the adapter raised {type(exc).__name__}: {exc}", hint=_HINT
        ) from exc
    return CustomReader(
        built, id=loaded.identity, sha256=loaded.sha256, adapter=adapter, where=where
    )


class CustomReader:
    """A user's reader as a :class:`~auditkit.caption.Captioner`, its answers checked.

    ``attributes`` is the reader's own table (attribute -> the values it writes), validated;
    ``read`` and ``caption`` check the number, type and values of what it returns. A
    ``caption`` call followed by a ``read`` of the same images (what the captioning stage does)
    runs the reader once.
    """

    id: str
    sha256: str

    def __init__(self, reader: Any, *, id: str, sha256: str, adapter: str, where: str) -> None:
        self.id, self.sha256, self.adapter, self.where = id, sha256, adapter, where
        if not callable(getattr(reader, "read", None)):
            raise ModelLoadError(
                f"{where}: the adapter returned {type(reader).__name__}, which has no read() "
                "method.",
                hint="return an object with read(images) -> list[dict[str, str]] and an "
                f"'attributes' mapping; {_HINT}",
            )
        self.reader = reader
        self.attributes = self._attribute_table(getattr(reader, "attributes", None))
        caption = getattr(reader, "caption", None)
        self._caption: Callable[[np.ndarray], Any] | None = caption if callable(caption) else None
        self._last: tuple[bytes, list[dict[str, str]]] | None = None

    def _attribute_table(self, table: object) -> dict[str, tuple[str, ...]]:
        problems: list[str] = []
        out: dict[str, tuple[str, ...]] = {}
        if not isinstance(table, Mapping) or not table:
            problems.append(
                "it has no 'attributes' mapping (attribute -> the values it can write)"
                if not isinstance(table, Mapping)
                else "its 'attributes' name no attribute"
            )
            table = {}
        for attribute, values in table.items():
            if not isinstance(attribute, str) or not re.fullmatch(NAME_PATTERN, attribute):
                problems.append(f"attribute {attribute!r} is not a name ({NAME_PATTERN})")
                continue
            if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
                problems.append(f"{attribute}: values must be a list of strings, got {values!r}")
                continue
            listed = tuple(values)
            if not listed:
                problems.append(f"{attribute}: no values")
            bad = [v for v in listed if not re.fullmatch(NAME_PATTERN, v)]
            if bad:
                problems.append(f"{attribute}: {bad} are not names ({NAME_PATTERN})")
            if UNKNOWN in listed:
                problems.append(f"{attribute}: {UNKNOWN!r} is reserved (for 'not read')")
            if len(set(listed)) != len(listed):
                problems.append(f"{attribute}: a value is listed twice")
            out[attribute] = listed
        if problems:
            raise ModelLoadError(
                f"{self.where}: the reader's attributes are invalid: {'; '.join(problems)}.",
                hint="give the reader an 'attributes' mapping such as "
                f"{{'gender': ['man', 'woman']}}; {_HINT}",
            )
        return out

    def read(self, images: np.ndarray) -> list[dict[str, str]]:
        """The reader's readings of ``images``, checked: one dict per image, every declared
        attribute, a declared value (or ``unknown``)."""
        key = _digest(images)
        if self._last is not None and self._last[0] == key:
            return [dict(r) for r in self._last[1]]
        answer = self._call("read", self.reader.read, images)
        readings = self._checked_readings(answer, len(images))
        self._last = (key, readings)
        return [dict(r) for r in readings]

    def caption(self, images: np.ndarray) -> list[str]:
        """The reader's captions, or the values read joined by ``", "`` in attribute order."""
        if self._caption is None:
            return [", ".join(r[a] for a in self.attributes) for r in self.read(images)]
        answer = self._call("caption", self._caption, images)
        if not isinstance(answer, list | tuple) or len(answer) != len(images):
            self._fail("caption", f"{_count(answer)} for {len(images)} images")
        if not all(isinstance(t, str) for t in answer):
            self._fail("caption", "a caption that is not a string")
        return list(answer)

    def _call(self, method: str, function: Callable[[np.ndarray], Any], images: np.ndarray) -> Any:
        try:
            return function(images)
        except Exception as exc:
            raise ModelLoadError(
                f"{self.where}: {method}() raised {type(exc).__name__}: {exc}", hint=_HINT
            ) from exc

    def _checked_readings(self, answer: Any, n: int) -> list[dict[str, str]]:
        if not isinstance(answer, list | tuple) or len(answer) != n:
            self._fail("read", f"{_count(answer)} for {n} images")
        readings = []
        for i, reading in enumerate(answer):
            if not isinstance(reading, Mapping):
                self._fail("read", f"{type(reading).__name__} for image {i}, not a dict")
            if set(reading) != set(self.attributes):
                missing = sorted(set(self.attributes) - set(reading))
                extra = sorted(map(str, set(reading) - set(self.attributes)))
                self._fail("read", f"for image {i} missing {missing}, undeclared {extra}")
            for attribute, value in reading.items():
                if not isinstance(value, str):
                    self._fail("read", f"{attribute} = {value!r} for image {i}, not a string")
                if value != UNKNOWN and value not in self.attributes[attribute]:
                    self._fail(
                        "read",
                        f"{attribute} = {value!r} for image {i}, not among its declared values "
                        f"{list(self.attributes[attribute])} (or {UNKNOWN!r})",
                    )
            readings.append({a: reading[a] for a in self.attributes})
        return readings

    def _fail(self, method: str, what: str) -> NoReturn:
        raise ModelLoadError(
            f"{self.where}: {method}() returned {what}.",
            hint="read() returns one dict per image with every attribute the reader declares "
            f"and one of its values (or 'unknown'); caption() one string per image; {_HINT}",
        )


def _device(device: str) -> str:
    """``auto`` -> CUDA when present, else CPU; a CUDA device must exist."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PrerequisiteError(
            f"captions.captioner.device is {device!r} but torch sees no CUDA device here.",
            hint="set captions.captioner.device to 'auto' or 'cpu'.",
        )
    return device


def _digest(images: np.ndarray) -> bytes:
    array = np.ascontiguousarray(images)
    head = f"{array.dtype}{array.shape}".encode()
    return hashlib.blake2b(head + array.tobytes(), digest_size=16).digest()


def _count(answer: Any) -> str:
    if isinstance(answer, list | tuple):
        return f"{len(answer)} items"
    return f"a {type(answer).__name__}"


__all__ = [
    "CustomReader",
    "load_custom_reader",
]
