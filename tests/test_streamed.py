"""Audits too large to hold every unit's h in memory (issue 15, B2).

Above ``LATENT_MEMORY_BUDGET`` the store is read twice into seed products
(:mod:`auditkit.analyze.products`) instead of per-seed latents. Forced here on the default
audit (budget 0), every table must match the in-memory path:

- the point estimates to rounding;
- the interval bounds to a small share of the intervals' width (the int8 products' rounding:
  at most 2.5%, while a 1,000-resample bootstrap's own Monte Carlo error on a 95% bound has a
  standard deviation of about 2% of the width);
- the same leans significant.

A concept set too large to keep its concepts' products with each other gets no similarity
intervals off the diagonal, and every other interval still.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from auditkit.analyses.checks import check_spec
from auditkit.analyses.stage import analyze_audit
from auditkit.analyze import int8
from auditkit.analyze import products as products_module
from auditkit.analyze.int8 import FLOAT_SPAN, INT_SPAN, int_products, quantised
from auditkit.analyze.latents import load_latents
from auditkit.analyze.measures import build_layout
from auditkit.analyze.significance import label_null_p_values
from auditkit.extract.store import ActivationStore
from auditkit.plan import AuditPlan
from auditkit.rundir import RunDir
from auditkit.spec import load_run_spec

WIDTH_SHARE = 0.025
"""How far an interval bound may move, as a share of that interval's width (measured on
2026-12-01: at most 0.9%, in the defaults table; 0.5% for lean_by_step, 0.3% for lean)."""
FLOOR = 1e-4
"""And in absolute terms, beyond that share: since the default audit marks every axis, its
defaults table has cosines near 1 whose intervals are 0.003 wide, where the float32 products
of a large set move a bound by up to 8e-5 (2.5% of that width; measured 2026-12-04). A
ten-thousandth of a cosine is below the report's three decimals."""


def _compare(memory: pd.DataFrame, streamed: pd.DataFrame, name: str) -> None:
    assert list(memory.columns) == list(streamed.columns), name
    for column in memory.columns:
        a, b = memory[column], streamed[column]
        if column in ("p_value", "q_value"):  # from the resampled scores' spread
            la, lb = np.log(a.to_numpy(float)), np.log(b.to_numpy(float))
            assert np.all(np.abs(la - lb) <= 0.05 * np.abs(la) + 0.01), (name, column)
        elif column.endswith(("_ci_low", "_ci_high")):
            measure = column.rsplit("_ci_", 1)[0]
            width = (memory[f"{measure}_ci_high"] - memory[f"{measure}_ci_low"]).to_numpy(copy=True)
            moved = np.abs(a.to_numpy(float) - b.to_numpy(float))
            both_nan = np.isnan(a.to_numpy(float)) & np.isnan(b.to_numpy(float))
            moved[both_nan], width[both_nan] = 0.0, 0.0  # no interval in either (a NaN measure)
            assert np.all(moved <= WIDTH_SHARE * width + FLOOR), (name, column, moved.max())
        elif pd.api.types.is_float_dtype(a):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6, err_msg=f"{name}.{column}")
        else:
            assert a.equals(b), (name, column)


def test_streamed_products_give_the_default_audits_tables(
    runs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = RunDir(runs["biased"])
    spec = check_spec(load_run_spec(run.root))
    plan = AuditPlan.from_json(json.loads(run.plan.read_text()))
    store = ActivationStore(run.activations)
    memory = load_latents(store, plan, "mean", spec=spec)
    streamed = load_latents(store, plan, "mean", spec=spec, budget=0)
    assert memory.per_seed is not None and streamed.per_seed is None
    # one product set for the mean over steps, one per stored step
    assert len(streamed.products) == 1 + len(memory.steps)
    np.testing.assert_allclose(streamed.means(), memory.means(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(streamed.step_means, memory.step_means, rtol=1e-5, atol=1e-5)
    a = analyze_audit(spec, plan, memory, store=store)
    b = analyze_audit(spec, plan, streamed, store=store)
    assert set(a.tables) == set(b.tables)
    for name in a.tables:
        _compare(a[name], b[name], name)
    assert a["lean"]["significant"].tolist() == b["lean"]["significant"].tolist()
    assert a["lean"]["significant"].any()  # the planted biases are found either way
    layout = build_layout(spec, memory.row_map())
    p_memory = label_null_p_values(a["lean"], layout, memory)
    p_streamed = label_null_p_values(a["lean"], layout, streamed)
    np.testing.assert_allclose(p_streamed, p_memory, atol=2e-3)

    # a concept set too large to keep its concepts' products with each other
    monkeypatch.setattr(products_module, "SMALL_SET_VECTORS", 0)
    large = load_latents(store, plan, "mean", spec=spec, budget=0)
    c = analyze_audit(spec, plan, large, store=store)
    similarity = c["similarity"]
    diagonal = similarity["concept_a"] == similarity["concept_b"]
    assert similarity.loc[~diagonal, "cosine_ci_low"].isna().all()
    assert similarity.loc[diagonal, "cosine_ci_low"].notna().all()
    np.testing.assert_allclose(similarity["cosine"], a["similarity"]["cosine"], atol=1e-6)
    for name in ("lean", "descriptors", "defaults", "lean_by_step"):
        _compare(a[name], c[name], name)


def test_large_concept_sets_get_the_same_numbers_from_matrix_products(
    runs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A set above ROW_LOOP_LIMIT / PAIR_LOOP_LIMIT concepts has its leans, robustness,
    descriptors, similarity and structure from matrix products over the whole set; forced on
    the default audit, they match the concept-by-concept numbers to rounding."""
    from auditkit.analyses import similarity
    from auditkit.analyze import measures

    run = RunDir(runs["biased"])
    spec = check_spec(load_run_spec(run.root))
    plan = AuditPlan.from_json(json.loads(run.plan.read_text()))
    store = ActivationStore(run.activations)
    latents = load_latents(store, plan, "mean", spec=spec)
    spec = spec.model_copy(
        update={"statistics": spec.statistics.model_copy(update={"bootstrap_resamples": 50})}
    )
    looped = analyze_audit(spec, plan, latents, store=store)
    monkeypatch.setattr(measures, "ROW_LOOP_LIMIT", 0)
    monkeypatch.setattr(similarity, "PAIR_LOOP_LIMIT", 0)
    matrix = analyze_audit(spec, plan, latents, store=store)
    for name in looped.tables:
        a, b = looped[name], matrix[name]
        assert list(a.columns) == list(b.columns), name
        for column in a.columns:
            if pd.api.types.is_float_dtype(a[column]):
                np.testing.assert_allclose(b[column], a[column], atol=1e-9, err_msg=name + column)
            else:
                assert a[column].equals(b[column]), (name, column)


def test_int8_products_are_exact_sums_of_the_rounded_values() -> None:
    """The e·e products: each vector rounded to int8 against its largest value (error at most
    half a step), products summed exactly, however long the vectors (int32 per span)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    width = 2 * INT_SPAN + 5  # three spans
    E = torch.randn(3, width, generator=generator) * torch.tensor([[1.0], [30.0], [1e-3]])
    q, scale = quantised(E.clone())
    assert q.dtype == torch.int8 and int(q.abs().max()) == 127
    step = scale[:, None]
    assert torch.all((q.float() * step - E).abs() <= 0.5 * step * (1 + 1e-5))
    exact = (q.double() * scale.double()[:, None]) @ (q.double() * scale.double()[:, None]).T
    assert torch.allclose(int_products(q, scale, q, scale), exact, rtol=1e-12, atol=0)
    # a zero vector stays zero (scale 1, values 0)
    zero_q, zero_scale = quantised(torch.zeros(1, 10))
    assert int(zero_q.abs().sum()) == 0 and float(zero_scale[0]) == 1.0


@pytest.mark.parametrize("kernel", ["int8", "float32"])
def test_both_int8_kernels_give_the_same_bits(kernel: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The float32 products of int8 values (what a CPU without int8 instructions runs) equal
    the int8 kernel's exactly, at the largest values, across span boundaries, and whichever
    kernel this machine picks."""
    import torch

    generator = torch.Generator().manual_seed(1)
    width = 3 * FLOAT_SPAN + 7
    qa = torch.randint(-127, 128, (40, width), dtype=torch.int8, generator=generator)
    qb = torch.randint(-127, 128, (30, width), dtype=torch.int8, generator=generator)
    qa[:4], qb[:4], qa[4:8] = 127, 127, -127  # every partial sum at its largest
    sa, sb = torch.rand(40, generator=generator), torch.rand(30, generator=generator)
    exact = (qa.double() @ qb.double().T) * sa.double()[:, None] * sb.double()[None, :]
    assert int8.int8_kernel() in ("int8", "float32")  # this machine's choice
    monkeypatch.setattr(int8, "int8_kernel", lambda: kernel)
    assert torch.equal(int_products(qa, sa, qb, sb), exact)


def test_the_float_products_are_chosen_only_when_clearly_faster() -> None:
    """A busy moment during the probe must not send a CPU with int8 instructions down the
    float32 path (3x slower there: a 1,000-concept read took 257 s instead of 85 s): float32
    is chosen only when its fastest probe call beats the int8 kernel's by FLOAT_MARGIN."""
    from auditkit.analyze.int8 import FLOAT_MARGIN, chosen_kernel

    vnni = {"int8": [0.13e-3, 0.13e-3], "float32": [0.44e-3, 0.45e-3]}  # measured, ms
    avx2 = {"int8": [36e-3, 35e-3], "float32": [0.40e-3, 0.41e-3]}
    assert chosen_kernel(vnni, same_bits=True) == "int8"
    assert chosen_kernel(avx2, same_bits=True) == "float32"
    assert chosen_kernel(avx2, same_bits=False) == "int8"  # never trade bits for speed
    # int8's calls slowed by a busy moment (its best 0.5 ms): float32 is faster, not clearly
    slowed = {"int8": [0.52e-3, 0.50e-3], "float32": [0.44e-3, 0.45e-3]}
    assert chosen_kernel(slowed, same_bits=True) == "int8"
    edge = {"int8": [FLOAT_MARGIN * 1e-3 * 1.01], "float32": [1e-3]}
    assert chosen_kernel(edge, same_bits=True) == "float32"
