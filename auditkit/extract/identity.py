"""What the activation store's units were computed with: the model's weights, the device type
and the effective dtype (``activations/model.json``).

A unit id names the spec's settings, ``model.id`` among them, but not the bytes behind that id.
Before a run reuses stored units it compares the model it would run now with the record the
store keeps: other weights (a local checkpoint replaced between a kill and a rerun), another
device type or another effective dtype (``dtype: auto`` is float32 on a CPU, float16 on a GPU)
would mix two models' h in one analysis, so the run is refused, naming what differs.

Weight files are hashed once: a file whose size and modification time match the record keeps
its recorded sha256.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auditkit.errors import UsageError
from auditkit.rundir import storage, write_bytes_atomic

if TYPE_CHECKING:
    from auditkit.models.loading import LoadedPipeline
    from auditkit.spec.sampling import ModelSpec

RECORD = "model.json"


def current_identity(
    folder: Path | None, device: str | None, dtype: str | None, before: dict[str, Any] | None
) -> dict[str, Any]:
    """The identity of the model in ``folder`` run on ``device`` in ``dtype``. ``before``: the
    store's record, whose hashes are reused for files of the same size and time."""
    from auditkit.provenance import WEIGHT_SUFFIXES, sha256_file

    known = {f["path"]: f for f in (before or {}).get("files", [])}
    files = []
    if folder is not None:
        for path in sorted(folder.rglob("*")):
            if not path.is_file() or path.suffix not in WEIGHT_SUFFIXES:
                continue
            if ".cache" in path.parts:
                continue
            rel = path.relative_to(folder).as_posix()
            stat = path.stat()
            old = known.get(rel)
            same = (
                old and old.get("bytes") == stat.st_size and old.get("mtime_ns") == stat.st_mtime_ns
            )
            sha = old["sha256"] if same and old else sha256_file(path)
            files.append(
                {"path": rel, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha}
            )
    weights = hashlib.sha256(
        "".join(f"{f['path']}\0{f['sha256']}\n" for f in files).encode()
    ).hexdigest()
    return {
        "weights": weights if files else None,
        "device": device.split(":")[0] if device else None,
        "dtype": dtype,
        "files": files,
    }


def for_spec(
    model: ModelSpec,
    cache_dir: Path,
    given: LoadedPipeline | None,
    local: bool,
    record: dict[str, Any] | None,
) -> dict[str, Any]:
    """The identity of the model a run would use: its files on disk, and the device type and
    effective dtype of a pipeline ``given`` or, with the local executor, of the spec's (a Ray
    run learns its workers' once they load)."""
    from auditkit.models.loading import existing_model_folder, resolve_device, resolve_dtype

    folder = given.model_dir if given is not None else None
    folder = folder or existing_model_folder(model, cache_dir)
    device = dtype = None
    if given is not None:
        device, dtype = given.device, given.dtype
    elif local:
        device = resolve_device(model.device)
        dtype = resolve_dtype(model.dtype, device)
    return current_identity(folder, device, dtype, record)


def read_record(root: Path) -> dict[str, Any] | None:
    path = root / RECORD
    if not path.is_file():
        return None
    try:
        data = json.loads(storage.read_bytes(path))
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def write_record(root: Path, identity: dict[str, Any]) -> None:
    write_bytes_atomic(root / RECORD, storage.json_text(identity).encode())


def differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between the store's record and the model now (empty: the same model, or
    a part neither side knows)."""
    out = []
    if before.get("weights") and now.get("weights") and before["weights"] != now["weights"]:
        old = {f["path"]: f["sha256"] for f in before.get("files", [])}
        new = {f["path"]: f["sha256"] for f in now.get("files", [])}
        changed = sorted(p for p in old.keys() | new.keys() if old.get(p) != new.get(p))
        shown = ", ".join(
            f"{p} (sha256 {str(old.get(p) or 'absent')[:12]} then, "
            f"{str(new.get(p) or 'absent')[:12]} now)"
            for p in changed[:3]
        )
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        out.append(f"the model's files changed: {shown}{more}")
    for key, what in (("device", "device type"), ("dtype", "effective dtype")):
        if before.get(key) and now.get(key) and before[key] != now[key]:
            out.append(f"the {what} was {before[key]}, now {now[key]}")
    return out


def refuse_mixing(
    store_root: Path, record: dict[str, Any] | None, now: dict[str, Any], units: int
) -> None:
    """Raise a UsageError when ``units`` stored units were computed with another model than
    ``now`` (per the store's ``record``), naming what differs."""
    found = differences(record, now) if units and record is not None else []
    if found:
        raise UsageError(
            f"{store_root} holds {units} units extracted from another model than this run's: "
            + "; ".join(found)
            + ". Reusing them would mix two models' h in one analysis, so nothing was extracted.",
            hint=f"run into a new --out folder, or delete {store_root} to extract every unit "
            "again with this model.",
        )
