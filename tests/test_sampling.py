"""The sampling service: batches in order that never mix a guidance scale or a steering
direction, the pipeline loaded once and only when there is something to sample, and a draw at
another scale that is exactly the pipeline at that scale (tiny SD pipeline, CPU)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from auditkit.models.loading import LoadedPipeline, load_pipeline
from auditkit.plan import WorkUnit, plan_audit
from auditkit.sampling import Draw, Sampler, Steering, generate_images, service
from auditkit.spec import AuditSpec, parse_spec

SPEC = """\
spec_version: 1
name: sampling
model: {{id: {model}, device: cpu, steps: 2, guidance_scale: 3.0, resolution: 32}}
seeds: 2
batch_size: 8
axes:
  - name: gender
    templates: ["a photo of a {{term}}"]
    groups: {{man: [man], woman: [woman]}}
concepts:
  - name: jobs
    templates: ["a photo of a {{term}}"]
    terms: [doctor, nurse]
analyses: [lean]
statistics: {{bootstrap_resamples: 0}}
captions:
  captioner: {{kind: toyworld}}
  batch_size: 3
"""


def _spec(model: Path | str = "builtin:tiny-sd") -> AuditSpec:
    return parse_spec(SPEC.format(model=model))


def test_batches_keep_order_cap_size_and_never_mix_keys() -> None:
    items = ["a1", "a2", "a3", "a4", "b1", "a5", "c1", "c2"]
    batches = list(service.batched(items, 3, lambda item: item[0]))
    assert batches == [["a1", "a2", "a3"], ["a4"], ["b1"], ["a5"], ["c1", "c2"]]
    assert list(service.batched([], 3, lambda item: item)) == []


def test_sampler_loads_once_only_with_work_and_groups_scales_and_directions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = _spec()
    units = list(plan_audit(spec).units[:4])
    calls: list[str] = []
    sampled: list[list[tuple[float | None, str | None, float | None]]] = []

    def pipeline() -> LoadedPipeline:
        calls.append("load")
        return LoadedPipeline(None, "sd", "none", "cpu", "float32", None, True)

    def fake(loaded: LoadedPipeline, spec: AuditSpec, draws: Sequence[Draw]) -> np.ndarray:
        assert len({d.batch_key for d in draws}) == 1
        sampled.append([(*d.batch_key, d.steering.alpha if d.steering else None) for d in draws])
        return np.zeros((len(draws), 2, 2, 3), dtype=np.uint8)

    monkeypatch.setattr(service, "sample_draws", fake)
    idle = Sampler(spec, pipeline, show_progress=False)
    assert list(idle.sample([], Draw, "nothing")) == [] and not idle.model_loaded
    assert calls == []
    g = np.ones((4, 2, 2), dtype=np.float32)
    draws = [Draw(u) for u in units]
    draws += [Draw(u, guidance_scale=1.0) for u in units[:2]]
    draws += [
        Draw(u, steering=Steering("gender", g, a))
        for u, a in zip(units, [-1.0, 0.0, 1.0, 2.0], strict=True)
    ]
    sampler = Sampler(spec, pipeline, show_progress=False)
    out = list(sampler.sample(draws, lambda d: d, "test"))
    assert calls == ["load"] and sampler.model_loaded and sampler.batch_size == 3
    assert [len(batch) for batch, _ in out] == [3, 1, 2, 3, 1]
    assert [d for batch, _ in out for d in batch] == draws
    assert sampled[2] == [(1.0, None, None)] * 2
    assert sampled[3] == [(None, "gender", -1), (None, "gender", 0), (None, "gender", 1)]


def test_a_draw_at_another_scale_is_the_pipeline_at_that_scale(
    tiny_pipeline_dirs: dict[str, Path],
) -> None:
    spec = _spec(tiny_pipeline_dirs["sd"])
    loaded = load_pipeline(spec.model, cache_dir=tiny_pipeline_dirs["sd"].parent)
    units: list[WorkUnit] = list(plan_audit(spec).units[:2])
    at_one = spec.model_copy(
        update={"model": spec.model.model_copy(update={"guidance_scale": 1.0})}
    )
    expected = generate_images(loaded, at_one, units)
    sampler = Sampler(spec, lambda: loaded, show_progress=False)
    ((batch, images),) = sampler.sample(units, lambda u: Draw(u, guidance_scale=1.0), "scale")
    assert batch == units and np.array_equal(images, expected)
    assert not np.array_equal(images, generate_images(loaded, spec, units))
