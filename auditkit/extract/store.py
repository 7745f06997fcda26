"""The activation store: safetensors shards plus a parquet index, written atomically.

A shard holds one tensor per work unit, keyed by unit id, shaped [stored steps, C, H, W] (or
[stored steps, C] when spatially pooled): h at each stored step. When a unit stores fewer steps
than it averages over (``probe.per_step_h``), the shard also holds ``<unit id>#mean``, the mean
of h over every kept step, accumulated on the device; the index's ``mean_steps`` lists those
steps (empty when there is no stored mean: the mean is then taken over the stored steps, as
stores before version 2 always did). A unit counts as done only once the index lists it.
Each batch writes its shard, then a small index part (``index-parts/<shard>.parquet``, atomic)
that makes it visible, so an interrupted run loses at most the batch in flight and a batch costs
the same however many units are stored already. :meth:`ActivationStore.compact` merges the parts
into ``index.parquet`` (atomic, then the parts are removed; a part left over by an interruption
repeats rows the merged index already has, which the reader drops).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from auditkit.extract.shard_bytes import read_all, shard_payload, shard_tensors
from auditkit.rundir import (
    integrity,
    read_versioned_parquet,
    storage,
    write_bytes_atomic,
)
from auditkit.rundir.versioned import arrow_parquet_bytes

STORE_SCHEMA_VERSION = 2
INDEX_COLUMNS = [
    "unit_id", "prompt_id", "seed", "shard", "shape", "steps", "timesteps", "dtype", "mean_steps",
    "sha256",
]  # fmt: skip
"""``sha256``: the shard's checksum, verified when the shard is read (empty in stores written
before shards carried one)."""
MEAN_SUFFIX = "#mean"
"""A unit's stored mean over its kept steps is ``<unit id>#mean`` in its shard."""

IndexRows = dict[str, list[Any]]
"""One batch's index rows, column by column (``INDEX_COLUMNS``)."""


class ActivationStore:
    """Read and append stored h for work units under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.index_path = root / "index.parquet"
        self.parts_dir = root / "index-parts"
        self._index: pd.DataFrame | None = None
        self._pending: list[IndexRows] = []  # rows written since the index was last built
        self._written: dict[str, IndexRows] = {}  # index parts this object wrote, by name
        self._verified: set[str] = set()

    def index(self) -> pd.DataFrame:
        """One row per completed unit (the merged index and every part, later rows winning)."""
        if self._index is None:
            frames = self._stored_frames()
            if self._pending:
                frames.append(_frame(*self._pending))
            self._pending = []
            if frames:
                frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
                frame = frame.drop_duplicates("unit_id", keep="last").reset_index(drop=True)
            else:
                frame = pd.DataFrame({c: pd.Series(dtype=object) for c in INDEX_COLUMNS})
            self._index = frame
        elif self._pending:
            frame = pd.concat([self._index, _frame(*self._pending)], ignore_index=True)
            self._index = frame.drop_duplicates("unit_id", keep="last").reset_index(drop=True)
            self._pending = []
        return self._index

    def completed(self) -> set[str]:
        """Ids of units already stored."""
        if self._index is None and not self.index_path.is_file() and not self._parts():
            return set()  # a fresh store: no frame to build
        return set(self.index()["unit_id"].astype(str))

    def write_batch(
        self,
        tensors: dict[str, Any],
        rows: list[dict[str, Any]],
        means: dict[str, Any] | None = None,
    ) -> None:
        """Store one batch: the shard first, then the index part that makes it visible.
        ``means``: each unit's mean over its kept steps, when it stores fewer steps."""
        if not tensors:
            return
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        stem = f"shard-{sorted(tensors)[0][:16]}"
        shard = f"{stem}.safetensors"
        payload = {k: v.contiguous().cpu() for k, v in tensors.items()}
        payload |= {k + MEAN_SUFFIX: v.contiguous().cpu() for k, v in (means or {}).items()}
        data = shard_payload(payload, {"schema_version": "1"})
        write_bytes_atomic(self.root / shard, data)
        digest = integrity.sha256_bytes(data)
        self._verified.add(shard)
        fixed = {"shard": shard, "sha256": digest}
        new = {c: [fixed[c] if c in fixed else r.get(c, "") for r in rows] for c in INDEX_COLUMNS}
        # the index part is the batch's commit marker: create-if-absent on an object store
        part = self.parts_dir / f"{stem}.parquet"
        write_bytes_atomic(part, _part_bytes(new), create_only=True)
        self._written[part.name] = new
        if self._index is not None:
            self._pending.append(new)

    def compact(self) -> None:
        """Merge the index parts into ``index.parquet`` (atomically) and remove them."""
        parts = self._parts()
        if not parts:
            return
        if not self.index_path.is_file() and all(p.name in self._written for p in parts):
            # every row is one this object wrote: merged as lists, the same bytes as the frame's
            data = _part_bytes(_merged_rows([self._written[p.name] for p in parts]))
        else:
            self._index, self._pending = None, []
            data = _parquet_bytes(self.index())
        write_bytes_atomic(self.index_path, data)
        self._index, self._pending, self._written = None, [], {}  # read again when asked
        for path in parts:
            storage.remove(path)
        with contextlib.suppress(OSError):  # not empty: another writer's part appeared
            self.parts_dir.rmdir()

    def _parts(self) -> list[Path]:
        return sorted(self.parts_dir.glob("*.parquet")) if self.parts_dir.is_dir() else []

    def _stored_frames(self) -> list[pd.DataFrame]:
        """The merged index and every part on disk, in reading order; a part this object
        wrote is taken from memory (its bytes are the rows' own), not read back; consecutive
        such parts make one frame."""
        frames = [self._read(self.index_path)] if self.index_path.is_file() else []
        own: list[IndexRows] = []
        for path in self._parts():
            rows = self._written.get(path.name)
            if rows is not None:
                own.append(rows)
                continue
            if own:
                frames.append(_frame(*own))
                own = []
            frames.append(self._read(path))
        if own:
            frames.append(_frame(*own))
        return frames

    @staticmethod
    def _read(path: Path) -> pd.DataFrame:
        try:
            frame: pd.DataFrame = read_versioned_parquet(path, newest=STORE_SCHEMA_VERSION)
        except (OSError, ValueError) as exc:  # pyarrow's errors are both
            raise integrity.CorruptFile(
                path, f"it is not a readable index of the activation store ({exc})"
            ) from None
        if "mean_steps" not in frame.columns:  # version 1: every kept step stored, no mean
            frame["mean_steps"] = ""
        if "sha256" not in frame.columns:  # written before shards carried a checksum
            frame["sha256"] = ""
        return frame

    def verify_shard(self, shard: str, expected: str, *, fetch: bool = False) -> str | None:
        """What is wrong with one shard (missing, or not the bytes its index part recorded);
        None when it is intact or carries no checksum. A shard of a remote run directory that
        is not downloaded yet is checked only with ``fetch`` (when it is read): the object
        store keeps its own checksums, and a resumed driver must not download the store."""
        return self._checked(shard, expected, fetch=fetch, keep=False)[0]

    def _checked(
        self, shard: str, expected: str, *, fetch: bool, keep: bool
    ) -> tuple[str | None, bytearray | None]:
        """:meth:`verify_shard`, and with ``keep`` the bytes it hashed (when this call hashed
        them), so that a first read of the shard reads it once, not once to check and once to
        use."""
        path = self.root / shard
        if storage.is_remote(path) and not path.is_file():
            if not fetch:
                return None, None
            storage.ensure_local(path)
        if not path.is_file():
            return "missing", None
        if expected and shard not in self._verified:
            local = storage.ensure_local(path)
            data = read_all(local) if keep else None
            digest = integrity.sha256_path(local) if data is None else integrity.sha256_bytes(data)
            if digest != expected:
                return "its bytes differ from the checksum recorded when it was written", None
            self._verified.add(shard)
            return None, data
        return None, None

    def problems(self) -> list[integrity.Problem]:
        """Every index file that cannot be read and every shard that is missing or altered,
        without changing anything (``auditkit verify``)."""
        found = []
        frames = []
        for path in [self.index_path, *self._parts()]:
            if not path.is_file():
                continue
            try:
                frames.append(self._read(path))
            except integrity.CorruptFile as exc:
                found.append(integrity.Problem(path.as_posix(), exc.message))
        if frames:
            frame = pd.concat(frames, ignore_index=True).drop_duplicates("shard", keep="last")
            for shard, expected in zip(frame["shard"], frame["sha256"], strict=True):
                problem = self.verify_shard(str(shard), str(expected or ""))
                if problem:
                    found.append(integrity.Problem((self.root / str(shard)).as_posix(), problem))
        return found

    def heal(self) -> list[str]:
        """Before extraction: set aside (``<name>.corrupt``) every unreadable index file and
        every missing or altered shard, and forget their units, so that they are extracted
        again. Returns one line per file set aside."""
        lines = []
        bad_shards: set[str] = set()
        for problem in self.problems():
            path = Path(problem.path)
            lines.append(f"{path}: {problem.problem}; its units are extracted again.")
            if path.suffix == ".safetensors":
                bad_shards.add(path.name)
            if path.is_file():
                path.replace(path.with_name(path.name + integrity.QUARANTINE_SUFFIX))
        if bad_shards:
            self._index = None
            frame = self.index()
            kept = frame[~frame["shard"].isin(bad_shards)].reset_index(drop=True)
            write_bytes_atomic(self.index_path, _parquet_bytes(kept))
            for path in self._parts():
                storage.remove(path)
        self._index = None
        self._pending = []
        self._written = {}
        return lines

    def iter_units(self, unit_ids: Iterable[str]) -> Iterator[tuple[str, Any]]:
        """Yield (unit_id, tensor [stored steps, ...] float32) shard by shard."""
        for uid, steps, _mean in self.iter_stored(unit_ids):
            yield uid, steps

    def iter_stored(
        self,
        unit_ids: Iterable[str],
        *,
        stored_mean_only: bool = False,
        need_mean: bool = True,
        as_stored: bool = False,
    ) -> Iterator[tuple[str, Any, Any]]:
        """Yield (unit_id, h at the stored steps, stored mean over the kept steps or None),
        float32, shard by shard. ``stored_mean_only``: skip reading the steps (None) of the
        units that have a stored mean; ``need_mean`` False: skip the stored means (None);
        ``as_stored``: the tensors in the dtype they are stored in (views of the shard's bytes
        where they were just read to be checked), not float32 copies."""
        wanted = set(unit_ids)
        frame = self.index()
        frame = frame[frame["unit_id"].isin(wanted)]
        missing = wanted - set(frame["unit_id"])
        if missing:
            raise KeyError(f"{len(missing)} units are not in the activation store")
        shards = [(str(shard), group) for shard, group in frame.groupby("shard", sort=True)]

        def check(at: int) -> tuple[str | None, bytearray | None]:
            shard, group = shards[at]
            expected = str(group["sha256"].iloc[0] or "")
            return self._checked(shard, expected, fetch=True, keep=True)

        # the next shard is read and checked in a thread while this one's units are used: the
        # read and the hash release the GIL, and on a first read they were a third of the pass
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="auditkit-shard") as ahead:
            coming = ahead.submit(check, 0) if shards else None
            for at, (shard, group) in enumerate(shards):
                assert coming is not None
                problem, data = coming.result()
                coming = ahead.submit(check, at + 1) if at + 1 < len(shards) else None
                if problem:
                    if coming is not None:
                        coming.cancel()
                    raise integrity.CorruptFile(self.root / shard, problem)
                units = map(str, group["unit_id"])
                yield from self._shard_units(
                    shard, units, data, steps=not stored_mean_only, mean=need_mean,
                    as_stored=as_stored,
                )  # fmt: skip

    def _shard_units(
        self,
        shard: str,
        units: Iterable[str],
        data: bytearray | None,
        *,
        steps: bool,
        mean: bool,
        as_stored: bool,
    ) -> Iterator[tuple[str, Any, Any]]:
        """:meth:`iter_stored` for one verified shard's ``units``, from ``data`` when its
        bytes were just read to be checked, else from the file. ``steps`` False: a unit's
        steps only where it has no stored mean."""
        from safetensors import safe_open

        tensors = shard_tensors(data, self.root / shard) if data is not None else None
        with contextlib.ExitStack() as stack:
            if tensors is None:
                path = storage.ensure_local(self.root / shard)
                fh = stack.enter_context(safe_open(str(path), framework="pt"))
                names = set(fh.keys())

            def get(key: str) -> Any:
                if tensors is not None:
                    found = tensors.get(key)
                else:
                    found = fh.get_tensor(key) if key in names else None
                return found if found is None or as_stored else found.float()

            for uid in units:
                stored_mean = get(uid + MEAN_SUFFIX) if mean or not steps else None
                at_steps = get(uid) if steps or stored_mean is None else None
                yield uid, at_steps, stored_mean if mean else None

    def timesteps(self) -> list[float]:
        """Timesteps of the kept steps (the same for every unit of a run)."""
        frame = self.index()
        if frame.empty:
            return []
        return [float(t) for t in json.loads(str(frame["timesteps"].iloc[0]))]


def _frame(*batches: IndexRows) -> pd.DataFrame:
    """The index rows of ``batches``, in order, as one frame."""
    rows = batches[0] if len(batches) == 1 else _joined(batches)
    return pd.DataFrame(rows, columns=INDEX_COLUMNS)


def _joined(batches: Iterable[IndexRows]) -> IndexRows:
    """The rows of ``batches``, in order, column by column."""
    joined: IndexRows = {c: [] for c in INDEX_COLUMNS}
    for rows in batches:
        for c in INDEX_COLUMNS:
            joined[c].extend(rows[c])
    return joined


def _merged_rows(batches: list[IndexRows]) -> IndexRows:
    """The rows of ``batches`` in order, a unit listed twice keeping its last row where that
    row stands (what the index's ``drop_duplicates(keep="last")`` keeps)."""
    joined = _joined(batches)
    ids = joined["unit_id"]
    last = {uid: i for i, uid in enumerate(ids)}
    if len(last) == len(ids):
        return joined
    keep = [i for i, uid in enumerate(ids) if last[uid] == i]
    return {c: [column[i] for i in keep] for c, column in joined.items()}


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    return _part_bytes({c: frame[c].tolist() for c in INDEX_COLUMNS})


def _part_bytes(rows: IndexRows) -> bytes:
    """Index rows as parquet, built with pyarrow directly (``seed`` int64, the other columns
    text): a third of the cost of going through a DataFrame, which a batch of a small model
    notices."""
    import pyarrow as pa

    types = {c: pa.int64() if c == "seed" else pa.large_string() for c in INDEX_COLUMNS}
    table = pa.table({c: pa.array(rows[c], type=types[c]) for c in INDEX_COLUMNS})
    return arrow_parquet_bytes(table, STORE_SCHEMA_VERSION)
