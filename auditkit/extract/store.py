"""The activation store: safetensors shards plus a parquet index, written atomically.

A shard holds one tensor per work unit, keyed by unit id, shaped [kept_steps, C, H, W] (or
[kept_steps, C] when spatially pooled). A unit counts as done only once the index lists it, and
the index is rewritten atomically after its shard is on disk, so an interrupted run loses at
most the batch in flight.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from auditkit.errors import SchemaVersionError
from auditkit.provenance import write_bytes_atomic

STORE_SCHEMA_VERSION = 1
INDEX_COLUMNS = ["unit_id", "prompt_id", "seed", "shard", "shape", "steps", "timesteps", "dtype"]


class ActivationStore:
    """Read and append stored h for work units under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.index_path = root / "index.parquet"
        self._index: pd.DataFrame | None = None

    def index(self) -> pd.DataFrame:
        """One row per completed unit."""
        if self._index is None:
            if self.index_path.is_file():
                frame = pd.read_parquet(self.index_path)
                version = _meta_version(self.index_path)
                if version > STORE_SCHEMA_VERSION:
                    raise SchemaVersionError(
                        f"{self.index_path} has schema_version {version}; this auditkit reads "
                        f"up to {STORE_SCHEMA_VERSION}.",
                        hint="upgrade auditkit to read this run directory.",
                    )
                self._index = frame
            else:
                self._index = pd.DataFrame({c: pd.Series(dtype=object) for c in INDEX_COLUMNS})
        return self._index

    def completed(self) -> set[str]:
        """Ids of units already stored."""
        return set(self.index()["unit_id"].astype(str))

    def write_batch(self, tensors: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        """Store one batch: the shard first, then the index that makes it visible."""
        from safetensors.torch import save

        if not tensors:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        shard = f"shard-{sorted(tensors)[0][:16]}.safetensors"
        payload = {k: v.contiguous().cpu() for k, v in tensors.items()}
        write_bytes_atomic(self.root / shard, save(payload, metadata={"schema_version": "1"}))
        new = pd.DataFrame([{**r, "shard": shard} for r in rows], columns=INDEX_COLUMNS)
        frame = new if self.index().empty else pd.concat([self.index(), new], ignore_index=True)
        frame = frame.drop_duplicates("unit_id", keep="last").reset_index(drop=True)
        buffer = io.BytesIO()
        table = _with_version(frame)
        import pyarrow.parquet as pq

        pq.write_table(table, buffer)
        write_bytes_atomic(self.index_path, buffer.getvalue())
        self._index = frame

    def iter_units(self, unit_ids: Iterable[str]) -> Iterator[tuple[str, Any]]:
        """Yield (unit_id, tensor [kept_steps, ...] float32) shard by shard."""
        from safetensors import safe_open

        wanted = set(unit_ids)
        frame = self.index()
        frame = frame[frame["unit_id"].isin(wanted)]
        missing = wanted - set(frame["unit_id"])
        if missing:
            raise KeyError(f"{len(missing)} units are not in the activation store")
        for shard, group in frame.groupby("shard", sort=True):
            with safe_open(str(self.root / str(shard)), framework="pt") as fh:
                for uid in group["unit_id"]:
                    yield str(uid), fh.get_tensor(str(uid)).float()

    def timesteps(self) -> list[float]:
        """Timesteps of the kept steps (the same for every unit of a run)."""
        frame = self.index()
        if frame.empty:
            return []
        return [float(t) for t in json.loads(str(frame["timesteps"].iloc[0]))]


def _with_version(frame: pd.DataFrame) -> Any:
    import pyarrow as pa

    table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"auditkit_schema_version"] = str(STORE_SCHEMA_VERSION).encode()
    return table.replace_schema_metadata(meta)


def _meta_version(path: Path) -> int:
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    return int(meta.get(b"auditkit_schema_version", b"1"))
