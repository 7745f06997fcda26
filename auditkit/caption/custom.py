"""Your own reader: a captioner (``kind: custom``) that the user's adapter builds from
safetensors weights. docs/readers.md is the user's guide, with the contract and an example.

The spec names a folder (``id``) and an adapter: ``FILE.py:FUNCTION`` in the folder, or
``entrypoint:NAME`` in the group :data:`ENTRY_POINT_GROUP`. ``FUNCTION(folder, weights,
device)`` gets the folder, the tensors of its top-level ``*.safetensors`` files in one dict (on
the CPU) and the device, and returns an object with ``attributes`` (attribute -> the values it
writes; ``unknown`` is reserved and always allowed), ``read(images)`` and optionally
``caption(images)``. Every answer is checked, so a faulty adapter fails with a message naming
it, never with a table of wrong readings.

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
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from auditkit.errors import ModelLoadError, PrerequisiteError
from auditkit.provenance import sha256_file
from auditkit.spec.base import NAME_PATTERN
from auditkit.spec.captioner import ADAPTER_ENTRY_POINT, ADAPTER_FILE

if TYPE_CHECKING:
    import torch

ENTRY_POINT_GROUP = "auditkit.readers"
"""The entry-point group of readers installed as packages (``entrypoint:NAME``)."""

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
"""Weight files that only unpickling reads; a reader's folder may not hold one."""

UNKNOWN = "unknown"  # auditkit.caption.image_to_text.UNKNOWN, kept here to stay a leaf

_HINT = "see 'Your own reader' in docs/readers.md for the adapter's contract."


@dataclass(frozen=True)
class AdapterRef:
    """A parsed ``adapter`` value: a file and function in the folder, or an entry point."""

    text: str
    file: str | None = None
    function: str | None = None
    entry_point: str | None = None

    @classmethod
    def parse(cls, text: str) -> AdapterRef:
        """``FILE.py:FUNCTION`` or ``entrypoint:NAME`` (the spec has checked the syntax)."""
        found = re.fullmatch(ADAPTER_ENTRY_POINT, text)
        if found:
            return cls(text, entry_point=found["name"])
        found = re.fullmatch(ADAPTER_FILE, text)
        if not found or ".." in found["file"].split("/"):
            raise ValueError(
                f"adapter {text!r} is neither 'FILE.py:FUNCTION' (a file inside the reader's "
                "folder) nor 'entrypoint:NAME'"
            )
        return cls(text, file=found["file"], function=found["function"])


def load_custom_reader(source: str | Path, *, adapter: str, device: str = "auto") -> CustomReader:
    """Load the reader in folder ``source`` through ``adapter`` (see the module doc).

    Raises:
        ModelLoadError: no such folder, no safetensors file or a pickled one, an unreadable
            weight file, a missing adapter file, function or entry point, an adapter that
            raises, or a reader that breaks the contract (no ``read``, bad ``attributes``).
        PrerequisiteError: ``device`` names CUDA on a machine without it.
    """
    folder = Path(source).expanduser()
    where = f"custom reader {str(folder)!r}"
    ref = AdapterRef.parse(adapter)
    if not folder.is_dir():
        raise ModelLoadError(
            f"{where}: no such folder.",
            hint="captions.captioner.id names the folder holding the reader's *.safetensors "
            "weights and its adapter file (relative to the spec's folder).",
        )
    files = _reader_files(folder)
    pickled = [p for p in files if p.suffix.lower() in PICKLE_SUFFIXES]
    if pickled:
        raise ModelLoadError(
            f"{where} holds pickled weights ({', '.join(_rel(p, folder) for p in pickled)}); "
            "auditkit never unpickles a file (unpickling can run any code in it).",
            hint="convert them with safetensors.torch.save_file(model.state_dict(), "
            "'weights.safetensors') and remove the pickled files from the folder.",
        )
    weight_files = sorted(p for p in files if p.parent == folder and p.suffix == ".safetensors")
    if not weight_files:
        raise ModelLoadError(
            f"{where} has no *.safetensors weight file directly in it.",
            hint="save the reader's weights with safetensors.torch.save_file into the folder.",
        )
    digests: dict[Path, str] = {}
    weights = _load_weights(weight_files, folder, digests)
    if ref.entry_point is not None:
        function, identity, line = _entry_point_function(ref.entry_point, where)
    else:
        assert ref.file is not None and ref.function is not None
        function = _file_function(folder, ref.file, ref.function, digests, where)
        identity, line = Path(os.path.abspath(folder)).name, ""
    # every file, and the adapter file even where it is hidden
    hashed = sorted(set(files) | set(digests), key=lambda p: _rel(p, folder))
    lines = "".join(f"{digests.get(p) or sha256_file(p)}  {_rel(p, folder)}\n" for p in hashed)
    sha256 = hashlib.sha256((lines + line).encode()).hexdigest()
    where = f"{where} (adapter {adapter!r})"
    run_on = _device(device)
    try:
        built = function(folder, weights, run_on)
    except Exception as exc:
        raise ModelLoadError(
            f"{where}: the adapter raised {type(exc).__name__}: {exc}", hint=_HINT
        ) from exc
    return CustomReader(built, id=identity, sha256=sha256, adapter=adapter, where=where)


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


def _reader_files(folder: Path) -> list[Path]:
    """Every file of the reader's folder, hidden files and ``__pycache__`` left out."""
    return [
        p
        for p in folder.rglob("*")
        if p.is_file()
        and not any(
            part.startswith(".") or part == "__pycache__" for part in p.relative_to(folder).parts
        )
    ]


def _rel(path: Path, folder: Path) -> str:
    return path.relative_to(folder).as_posix()


def _load_weights(
    files: list[Path], folder: Path, digests: dict[Path, str]
) -> dict[str, torch.Tensor]:
    """Every tensor of ``files`` in one dict, each file read once: hashed into ``digests`` and
    loaded from the same bytes."""
    from safetensors.torch import load

    weights: dict[str, torch.Tensor] = {}
    owner: dict[str, str] = {}
    for path in files:
        data = path.read_bytes()
        digests[path] = hashlib.sha256(data).hexdigest()
        try:
            tensors = load(data)
        except Exception as exc:  # safetensors raises its own SafetensorError
            raise ModelLoadError(
                f"custom reader {str(folder)!r}: {path.name} is not a readable safetensors "
                f"file ({exc}).",
                hint="write it again with safetensors.torch.save_file.",
            ) from None
        for name, tensor in sorted(tensors.items()):
            if name in weights:
                raise ModelLoadError(
                    f"custom reader {str(folder)!r}: tensor {name!r} is in both "
                    f"{owner[name]} and {path.name}.",
                    hint="give every tensor one name across the folder's safetensors files.",
                )
            weights[name], owner[name] = tensor, path.name
    return weights


def _file_function(
    folder: Path, file: str, function: str, digests: dict[Path, str], where: str
) -> Callable[..., Any]:
    """``function`` of the adapter file, executed from the bytes that are hashed."""
    path = folder / file
    if not path.is_file():
        raise ModelLoadError(
            f"{where}: the adapter file {file!r} is not in the folder.",
            hint=f"put the adapter file in {folder}, or correct captions.captioner.adapter.",
        )
    source = path.read_bytes()
    digests[path] = digest = hashlib.sha256(source).hexdigest()
    name = f"auditkit_reader_{digest[:16]}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # a dataclass in the adapter looks its module up there
    try:
        exec(compile(source, str(path), "exec"), module.__dict__)
    except Exception as exc:
        raise ModelLoadError(
            f"{where}: importing the adapter {file!r} raised {type(exc).__name__}: {exc}",
            hint="fix the adapter file; it may import installed packages (torch, numpy), "
            "not other files of the folder.",
        ) from exc
    found = getattr(module, function, None)
    if not callable(found):
        defined = sorted(
            n for n, v in vars(module).items() if inspect.isfunction(v) and v.__module__ == name
        )
        raise ModelLoadError(
            f"{where}: the adapter {file!r} has no function {function!r} "
            f"(it defines {defined or 'none'}).",
            hint="name the function that builds the reader: adapter: 'FILE.py:FUNCTION'.",
        )
    return found


def _entry_point_function(name: str, where: str) -> tuple[Callable[..., Any], str, str]:
    """The entry point's function, the reader's id (``NAME@VERSION``) and the sha256 line of
    its source file."""
    from importlib.metadata import entry_points

    found = list(entry_points(group=ENTRY_POINT_GROUP, name=name))
    if not found:
        known = sorted({e.name for e in entry_points(group=ENTRY_POINT_GROUP)})
        raise ModelLoadError(
            f"{where}: no installed package declares the entry point {name!r} in group "
            f"{ENTRY_POINT_GROUP!r} (installed: {known or 'none'}).",
            hint="install the package of the reader (pip install ...), or use "
            "adapter: 'FILE.py:FUNCTION' for an adapter file in the folder.",
        )
    point = found[0]
    try:
        function = point.load()
    except Exception as exc:
        raise ModelLoadError(
            f"{where}: loading entry point {name!r} ({point.value}) raised "
            f"{type(exc).__name__}: {exc}",
            hint="check that the reader's package is installed completely.",
        ) from exc
    source = inspect.getsourcefile(function) if callable(function) else None
    if source is None:
        raise ModelLoadError(
            f"{where}: entry point {name!r} ({point.value}) is not a Python function with a "
            "source file, so it cannot be hashed.",
            hint="point the entry point at the Python function that builds the reader.",
        )
    version = point.dist.version if point.dist is not None else "unknown"
    identity = f"{name}@{version}"
    return function, identity, f"{sha256_file(Path(source))}  entrypoint:{identity}\n"


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
    "ENTRY_POINT_GROUP",
    "PICKLE_SUFFIXES",
    "AdapterRef",
    "CustomReader",
    "load_custom_reader",
]
