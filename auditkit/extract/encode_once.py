"""Each distinct prompt is read by the text encoders once per pipeline call.

An audit's batch holds few distinct prompts: a prompt's seeds sit side by side in the plan, and
with classifier-free guidance every unit's unconditional half encodes the same empty prompt. A
diffusers pipeline encodes every row anyway: a batch of 16 units of 4 prompts runs 32 encoder
rows where 5 say everything. :func:`encode_once` wraps the forward of every ``text_encoder*``
component for the length of one call: rows whose inputs (token ids, attention mask, any other
per-row tensor) are equal byte for byte are encoded once, as a smaller batch, and the result is
copied back to every row that asked for it.

Each row's output is then the encoder's output for that row in the smaller batch. A text
encoder treats its rows independently, and on the CPU the 3-D outputs (the token states every
pipeline conditions on) are bit-equal however the rows are batched; a pooled projection
([rows, width], SDXL's and SD3's ``text_embeds``) can move in its last bit when the matrix
product has fewer rows (``tests/test_encode_once.py`` checks both; tiny SD3's h moved by at
most 6e-7, every other family's not at all). A key-value cache in the output (SANA's Gemma
returns one) is dropped: no pipeline reads it. An encoder whose output holds anything else but
tensors and tuples of them is left alone after its first call: it is called as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


class _Unsupported(Exception):
    """The output holds something that cannot be copied per row."""


def _per_row(value: Any, index: torch.Tensor, rows: int) -> Any:
    """``value`` (an encoder's output for ``rows`` distinct rows) with its rows repeated as
    ``index`` asks, keeping its type (a tensor, a tuple or list of them, a ``ModelOutput``)."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        if value.dim() == 0 or value.shape[0] != rows:
            raise _Unsupported(f"a tensor of shape {tuple(value.shape)}")
        return value.index_select(0, index.to(value.device))
    if isinstance(value, dict):  # a transformers ModelOutput is an ordered dict of its fields
        fields = {key: _per_row(item, index, rows) for key, item in value.items()}
        try:
            return type(value)(**fields)
        except TypeError as exc:  # a mapping that is not built from its fields
            raise _Unsupported(type(value).__name__) from exc
    if type(value).__name__.endswith("Cache"):
        return None  # a decoder-style encoder's key-value cache (SANA's Gemma): unread
    if type(value) in (tuple, list):
        return type(value)(_per_row(item, index, rows) for item in value)
    raise _Unsupported(type(value).__name__)


def _distinct_rows(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[list[int], list[int]]:
    """The first row of each distinct input row, and each row's place among them; every
    tensor argument must have the batch's rows (else every row counts as distinct)."""
    tensors = [v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor)]
    if not tensors or tensors[0].dim() == 0:
        return [], []
    batch = tensors[0].shape[0]
    if any(t.dim() == 0 or t.shape[0] != batch for t in tensors):
        return list(range(batch)), list(range(batch))
    host = [t.detach().reshape(batch, -1).cpu().numpy() for t in tensors]
    seen: dict[tuple[bytes, ...], int] = {}
    first: list[int] = []
    where: list[int] = []
    for row in range(batch):
        key = tuple(h[row].tobytes() for h in host)
        if key not in seen:
            seen[key] = len(first)
            first.append(row)
        where.append(seen[key])
    return first, where


def _take(value: Any, rows: torch.Tensor, batch: int) -> Any:
    return (
        value.index_select(0, rows.to(value.device))
        if (isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == batch)
        else value
    )


def _once(forward: Any, state: dict[str, Any]) -> Any:
    def encode(*args: Any, **kwargs: Any) -> Any:
        if not state["rows"]:
            return forward(*args, **kwargs)
        first, where = _distinct_rows(args, kwargs)
        if len(first) == len(where):
            return forward(*args, **kwargs)
        batch = len(where)
        rows = torch.tensor(first)
        out = forward(
            *(_take(a, rows, batch) for a in args),
            **{k: _take(v, rows, batch) for k, v in kwargs.items()},
        )
        try:
            return _per_row(out, torch.tensor(where), len(first))
        except _Unsupported:
            state["rows"] = False
            return forward(*args, **kwargs)

    return encode


@contextmanager
def encode_once(pipe: Any) -> Iterator[None]:
    """For the ``with`` block, every ``text_encoder*`` component of ``pipe`` encodes each
    distinct input row of a call once; their own forward is back afterwards."""
    swapped: list[tuple[torch.nn.Module, Any]] = []
    try:
        for name, module in getattr(pipe, "components", {}).items():
            if not name.startswith("text_encoder") or not isinstance(module, torch.nn.Module):
                continue
            own = module.__dict__.get("forward")  # an offloading wrapper, if one is installed
            # whether this forward's output could be split is remembered with that forward
            state = module.__dict__.get("_auditkit_rows")
            if state is None or state["forward"] is not own:
                state = module.__dict__["_auditkit_rows"] = {"forward": own, "rows": True}
            module.forward = _once(module.forward, state)
            swapped.append((module, own))
        yield
    finally:
        for module, own in reversed(swapped):
            if own is None:
                del module.__dict__["forward"]
            else:
                module.forward = own
