"""A shard's bytes as tensors, without a copy, and tensors as a shard's bytes: the safetensors
layout written and read by the store.

A shard read for the first time is read whole to be checked against its sha256; its tensors
are then views of those same bytes (:func:`shard_tensors`), where the safetensors loader would
copy each tensor twice. :func:`shard_payload` writes the library's own bytes.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from auditkit.rundir import integrity

_DTYPES = {"F16": ("float16", 2), "BF16": ("bfloat16", 2), "F32": ("float32", 4)}
"""The safetensors dtypes a shard holds: torch's name and the bytes per value."""


def shard_payload(tensors: dict[str, Any], metadata: dict[str, str]) -> bytes:
    """The safetensors bytes of CPU tensors, as ``safetensors.torch.save`` writes them. Through
    the library's numpy writer where numpy has the dtype (float16, float32): the same bytes in
    a quarter of the time for a batch of small tensors, which a small model's every batch pays
    (``tests/test_extract.py``); bfloat16 goes through the torch writer."""
    import torch

    if all(t.dtype in (torch.float16, torch.float32) for t in tensors.values()):
        from safetensors.numpy import save as save_numpy

        return save_numpy({k: t.numpy() for k, t in tensors.items()}, metadata=metadata)
    from safetensors.torch import save

    return save(tensors, metadata=metadata)


def read_all(path: Path) -> bytearray:
    """A file's bytes, in a buffer tensors can view without a copy."""
    with path.open("rb") as fh:
        data = bytearray(os.fstat(fh.fileno()).st_size)
        got = fh.readinto(data)
    return data[:got] if got != len(data) else data


def shard_tensors(data: bytearray, path: Path) -> dict[str, Any]:
    """The tensors of a shard's bytes (the safetensors layout: an 8-byte little-endian header
    length, a JSON header of each tensor's dtype, shape and byte range, then the values), as
    views of ``data``: no copy (the library's loader copies each tensor twice, which was a
    sixth of a first read of a large store)."""
    import torch

    def bad(why: str) -> integrity.CorruptFile:
        return integrity.CorruptFile(path, f"it is not a readable shard ({why})")

    if len(data) < 8:
        raise bad("shorter than its header")
    size = int.from_bytes(data[:8], "little")
    try:
        header = json.loads(bytes(data[8 : 8 + size]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad(f"its header is not JSON: {exc}") from None
    start = 8 + size
    out: dict[str, Any] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, width = _DTYPES[entry["dtype"]]
            begin, end = (int(x) for x in entry["data_offsets"])
            shape = [int(x) for x in entry["shape"]]
        except (KeyError, TypeError, ValueError):
            raise bad(f"its entry for {name!r} is not one auditkit wrote") from None
        count = math.prod(shape)
        if not 0 <= begin <= end <= len(data) - start or end - begin != count * width:
            raise bad(f"{name!r} lies outside its bytes")
        values = (
            torch.frombuffer(data, dtype=getattr(torch, dtype), count=count, offset=start + begin)
            if count
            else torch.empty(0, dtype=getattr(torch, dtype))
        )
        out[name] = values.view(shape)
    return out
