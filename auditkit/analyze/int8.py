"""int8 products with exact sums: the arithmetic of the seed products
(:mod:`auditkit.analyze.product_reading`).

Each vector is rounded to int8 against its largest value (:func:`quantised`); two sets of
such vectors are multiplied with exact integer sums (:func:`int_products`), by torch's int8
kernel where it is fast, or as float32 products of the same values where it is not
(:func:`int8_kernel`): the same bits either way.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

INT_SPAN = 131_072
"""Values per int8 product: 127² x 131,072 stays inside int32."""

FLOAT_SPAN = 1_024
"""Values per float32 product of int8 values: 127² x 1,024 < 2²⁴, so every partial sum is a
whole number that float32 holds exactly, in whatever order the kernel adds: the float32
products of the int8 values equal the int8 kernel's bit for bit."""


def quantised(
    E: torch.Tensor, out: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 values and per-vector scales of E [..., D] (float32, overwritten): E ≈ scale x
    values (the rounding error is under 0.4% of each vector's largest value). ``out``: an int8
    tensor of E's shape to write the values to."""
    import torch

    # two vectorised reductions: torch's fused aminmax ran 4-9x slower than amin and amax
    # together on the CPUs measured (benchmarks/NOTES.md)
    peak = torch.maximum(-E.amin(dim=-1), E.amax(dim=-1))
    scale = torch.where(peak > 0, peak / 127.0, torch.ones_like(peak))
    rounded = E.mul_((1.0 / scale)[..., None]).round_()
    if out is None:
        return rounded.to(torch.int8), scale
    return out.copy_(rounded), scale  # whole numbers in [-127, 127]: the cast is exact


def int_products(
    qa: torch.Tensor, sa: torch.Tensor, qb: torch.Tensor, sb: torch.Tensor
) -> torch.Tensor:
    """(scale x int8 rows) · (scale x int8 rows) [M, Nb] in float64: int8 products with exact
    int32 sums over spans of :data:`INT_SPAN` values."""
    import torch

    total = torch.zeros((qa.shape[0], qb.shape[0]), dtype=torch.float64)
    if int8_kernel() == "float32":
        for start in range(0, qa.shape[1], FLOAT_SPAN):
            part = slice(start, start + FLOAT_SPAN)
            total += (qa[:, part].float() @ qb[:, part].float().T).double()
    else:
        for start in range(0, qa.shape[1], INT_SPAN):
            part = slice(start, start + INT_SPAN)
            total += torch._int_mm(qa[:, part].contiguous(), qb[:, part].T).double()
    return total * sa.double()[:, None] * sb.double()[None, :]


@functools.cache
def int8_kernel() -> str:
    """How this process multiplies int8 values: ``"int8"`` (torch's int8 kernel, exact int32
    sums) or ``"float32"`` (the same values as floats, in spans of :data:`FLOAT_SPAN`), chosen
    once on a probe. Both give the same bits. The int8 kernel runs at 3-8x the float32 rate on
    CPUs with int8 dot-product instructions (AVX-512 VNNI, AMX) and about 1% of it on CPUs
    without them (0.9 GOPS against 87 GFLOPS on an AVX2 AMD EPYC). The two are timed in turns
    and float32 is chosen only when it is at least :data:`FLOAT_MARGIN` times faster: a busy
    moment of the machine during the probe must not send a VNNI CPU down the path that is 3-6x
    slower there (a 1,000-concept read took 258 s instead of 85 s)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    a = torch.randint(-127, 128, (128, FLOAT_SPAN), dtype=torch.int8, generator=generator)
    b = torch.randint(-127, 128, (128, FLOAT_SPAN), dtype=torch.int8, generator=generator)
    products: dict[str, Callable[[], torch.Tensor]] = {
        "int8": lambda: torch._int_mm(a, b.T).double(),
        "float32": lambda: (a.float() @ b.float().T).double(),
    }
    out = {name: product() for name, product in products.items()}  # warm-up
    seconds: dict[str, list[float]] = {name: [] for name in products}
    for _ in range(5):  # in turns, so that a slow moment hits both
        for name, product in products.items():
            started = time.perf_counter()
            out[name] = product()
            seconds[name].append(time.perf_counter() - started)
    return chosen_kernel(seconds, same_bits=torch.equal(out["float32"], out["int8"]))


def chosen_kernel(seconds: dict[str, list[float]], *, same_bits: bool) -> str:
    """:func:`int8_kernel`'s choice from the probe's timings of each kernel (seconds per
    call): float32 only where its fastest call beats the int8 kernel's fastest by
    :data:`FLOAT_MARGIN` and its products are the same bits."""
    faster = min(seconds["float32"]) * FLOAT_MARGIN < min(seconds["int8"])
    return "float32" if faster and same_bits else "int8"


FLOAT_MARGIN = 2.0
"""How many times faster the float32 products must be on the probe to be chosen."""
