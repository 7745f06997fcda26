"""Loading a user's reader (``kind: custom``): its folder, its safetensors weights and the
adapter function that builds it, each hashed from the very bytes that are loaded and executed.
:mod:`auditkit.caption.custom` builds the reader from what :func:`load_adapter` returns and checks
its answers; the module doc there states the contract and the identity rules.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auditkit.errors import ModelLoadError
from auditkit.provenance import sha256_file
from auditkit.spec.captioner import ADAPTER_ENTRY_POINT, ADAPTER_FILE

if TYPE_CHECKING:
    import torch

ENTRY_POINT_GROUP = "auditkit.readers"
"""The entry-point group of readers installed as packages (``entrypoint:NAME``)."""

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
"""Weight files that only unpickling reads; a reader's folder may not hold one."""


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


@dataclass(frozen=True)
class LoadedAdapter:
    """What a reader's folder gives: the adapter's function, every tensor of its weights, the
    reader's id and the sha256 of its folder (and entry point)."""

    function: Callable[..., Any]
    weights: dict[str, torch.Tensor]
    identity: str
    sha256: str


def load_adapter(folder: Path, adapter: str, where: str) -> LoadedAdapter:
    """The adapter ``adapter`` of the reader in ``folder`` and its weights, loaded and hashed;
    ``where`` starts every error message.

    Raises:
        ModelLoadError: no such folder, no safetensors file or a pickled one, an unreadable
            weight file, or a missing adapter file, function or entry point.
    """
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
    return LoadedAdapter(function, weights, identity, sha256)


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
