"""Checksums of a run directory: what the seal records, and what ``auditkit verify`` checks.

- **Activation shards** carry their sha256 in the store's index (a ``sha256`` column written
  with the shard's index part); the store verifies a shard the first time it reads it.
- **Every other file** (spec, plan, tables, captions, report, model card, gates) is listed with
  its sha256 in the sealed manifest's ``files``. The manifest carries ``seal``: the sha256 of its
  own canonical JSON without that field, so an edited manifest (a changed ``model.id``, a status
  set to complete by hand) is caught too.

Readers of a finished run check the seal and the file they read (:meth:`RunDir.read_checked`);
``auditkit verify`` checks every file without recomputing anything.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditkit.errors import RuntimeFailure
from auditkit.rundir.storage import TEMP_SUFFIX

UNSEALED_NAMES = {"manifest.json", ".lock", ".auditkit-mirror.json"}
"""Files of a run directory that the seal does not list (the manifest seals itself)."""

QUARANTINE_SUFFIX = ".corrupt"
"""A file found corrupt is renamed ``<name>.corrupt`` and left for inspection, not read."""


def sha256_bytes(data: bytes | bytearray) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_path(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


STORES: tuple[tuple[str, ...], ...] = (("activations",), ("grounding", "activations"))
"""The activation stores of a run directory (the audit's, and the image-grounded axes' h of
labelled images), run-relative: their shards carry their own checksums in their index."""


def sealed_paths(root: Path) -> list[Path]:
    """The files the seal lists: everything under ``root`` except the manifest, the lock, the
    activation stores (shards carry their own checksums in the index, which is listed),
    temporaries and quarantined files."""
    out = []
    for folder, dirs, files in os.walk(root):
        rel_folder = Path(folder).relative_to(root)
        dirs.sort()
        store = next((s for s in STORES if rel_folder.parts[: len(s)] == s), None)
        if store is not None and rel_folder.parts[len(store) : len(store) + 1] == ("index-parts",):
            continue
        for name in sorted(files):
            if name in UNSEALED_NAMES or name.endswith((TEMP_SUFFIX, QUARANTINE_SUFFIX)):
                continue
            if store is not None and name != "index.parquet":
                continue
            out.append(Path(folder) / name)
    return out


def file_digests(root: Path) -> dict[str, str]:
    """``{run-relative posix path: sha256}`` of every sealed file."""
    return {p.relative_to(root).as_posix(): sha256_path(p) for p in sealed_paths(root)}


def seal_of(data: dict[str, Any]) -> str:
    """The seal of a manifest's JSON object: sha256 of its canonical JSON without ``seal``."""
    body = {k: v for k, v in data.items() if k != "seal"}
    text = json.dumps(body, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return sha256_bytes(text.encode())


def seal_matches(data: dict[str, Any]) -> bool:
    """Whether a manifest carries no seal, or a seal that matches its content."""
    seal = data.get("seal")
    return seal is None or seal == seal_of(data)


@dataclass(frozen=True)
class Problem:
    """One file that failed verification."""

    path: str
    problem: str

    def line(self) -> str:
        return f"{self.path}: {self.problem}"


def damaged(root: Path, files: dict[str, str]) -> list[Problem]:
    """The files of ``files`` (run-relative path: sha256, as the seal lists them) that are
    missing under ``root`` or whose bytes differ."""
    found = []
    for rel, expected in sorted(files.items()):
        path = root / rel
        if not path.is_file():
            found.append(Problem(path.as_posix(), "missing"))
        elif sha256_path(path) != expected:
            found.append(Problem(path.as_posix(), "its bytes differ from the sealed checksum"))
    return found


class CorruptFile(RuntimeFailure):
    """A run file's bytes differ from the checksum recorded when it was written."""

    def __init__(self, path: Path, problem: str, *, fix: str | None = None) -> None:
        super().__init__(
            f"{path} is corrupt: {problem}. It was not used.",
            hint=fix
            or "run 'auditkit verify RUN_DIR' to list every bad file, then rerun 'auditkit run "
            "SPEC --out RUN_DIR': it recomputes what is corrupt and keeps the rest. (To try other "
            "gates on a run, run the changed spec with 'auditkit run': its units are reused.)",
        )
        self.path = path
