"""Hooks and extraction on tiny SD, LCM and SDXL pipelines built from configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from auditkit.errors import SpecError
from auditkit.extract.hooks import capture_h, resolve_hook_point
from auditkit.models.loading import load_pipeline
from auditkit.spec import ModelSpec

PROMPTS = ["a photo of a doctor", "a photo of a nurse", "a photo of a pilot"]
KIND_NAMES = {"sd": "stable-diffusion", "lcm": "lcm", "sdxl": "sdxl"}


@pytest.fixture(scope="module")
def pipes(tiny_pipeline_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Any:
    cache = tmp_path_factory.mktemp("cache")
    return {
        kind: load_pipeline(ModelSpec(id=str(path), device="cpu", steps=3), cache_dir=cache)
        for kind, path in tiny_pipeline_dirs.items()
    }


@pytest.mark.parametrize("kind", ["sd", "lcm", "sdxl"])
@pytest.mark.parametrize("guidance", [1.0, 5.0])
def test_hook_shapes_per_step_and_half(pipes: Any, kind: str, guidance: float) -> None:
    loaded = pipes[kind]
    pipe = loaded.pipe
    assert loaded.kind == KIND_NAMES[kind]
    steps = 3
    with (
        torch.inference_mode(),
        capture_h(
            pipe.components,
            "unet.mid_block",
            expected_batch=len(PROMPTS),
            halves=("cond", "uncond"),
        ) as session,
    ):
        pipe(
            prompt=PROMPTS,
            num_inference_steps=steps,
            guidance_scale=guidance,
            height=32,
            width=32,
            output_type="latent",
            generator=torch.Generator("cpu").manual_seed(0),
        )
    doubled = kind != "lcm" and guidance > 1.0
    assert session.denoiser_calls == steps
    assert session.denoiser_samples == steps * len(PROMPTS) * (2 if doubled else 1)
    halves = sorted({c.half for c in session.captures})
    assert halves == (["cond", "uncond"] if doubled else ["single"])
    assert len(session.captures) == steps * (2 if doubled else 1)
    for capture in session.captures:
        assert tuple(capture.tensor.shape) == (len(PROMPTS), 64, 8, 8)
        assert not capture.tensor.requires_grad
    assert [c.step for c in session.by_step("cond")] == list(range(steps))
    timesteps = [c.timestep for c in session.by_step("cond")]
    assert timesteps == sorted(timesteps, reverse=True) and len(set(timesteps)) == steps
    # hooks are gone afterwards
    assert not pipe.unet.mid_block._forward_hooks
    assert not pipe.unet._forward_pre_hooks


def test_cfg_halves_are_split_correctly(pipes: Any) -> None:
    """The conditional half is the prompt's h: it differs per prompt; uncond does not."""
    pipe = pipes["sd"].pipe
    with (
        torch.inference_mode(),
        capture_h(
            pipe.components, "unet.mid_block", expected_batch=2, halves=("cond", "uncond")
        ) as session,
    ):
        latents = torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(1))
        pipe(
            prompt=["a photo of a doctor", "a photo of a nurse"],
            latents=latents.repeat(2, 1, 1, 1),
            num_inference_steps=1,
            guidance_scale=5.0,
            height=32,
            width=32,
            output_type="latent",
        )
    uncond = next(c.tensor for c in session.captures if c.half == "uncond")
    cond = next(c.tensor for c in session.captures if c.half == "cond")
    assert torch.allclose(uncond[0], uncond[1], atol=1e-6)  # same noise, same empty prompt
    assert not torch.allclose(cond[0], cond[1], atol=1e-4)


def test_spatial_pool_and_kept_steps(pipes: Any) -> None:
    pipe = pipes["lcm"].pipe
    with (
        torch.inference_mode(),
        capture_h(
            pipe.components,
            "unet.mid_block",
            expected_batch=1,
            keep_steps={1},
            spatial_pool="mean",
            store_dtype=torch.float16,
        ) as session,
    ):
        pipe(
            prompt=["a photo of a doctor"],
            num_inference_steps=3,
            guidance_scale=4.0,
            height=32,
            width=32,
            output_type="latent",
        )
    assert [c.step for c in session.captures] == [1]
    assert session.captures[0].tensor.shape == (1, 64)
    assert session.captures[0].tensor.dtype == torch.float16


def test_bad_hook_point_suggests_close_matches(pipes: Any) -> None:
    with pytest.raises(SpecError) as err:
        resolve_hook_point(pipes["sd"].pipe.components, "unet.mid_blok")
    assert "did you mean 'unet.mid_block'" in str(err.value)
    assert err.value.exit_code == 2


def test_hook_point_validated_before_any_forward(pipes: Any) -> None:
    pipe = pipes["sd"].pipe
    calls = []
    handle = pipe.unet.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(SpecError), capture_h(pipe.components, "unet.nope", expected_batch=1):
            pipe(prompt=["x"], num_inference_steps=1, height=32, width=32, output_type="latent")
    finally:
        handle.remove()
    assert calls == []


def _tiny_spec(model_dir: Path, tmp: Path, **extra: Any) -> Path:
    text = f"""
spec_version: 1
name: e2e
model: {{id: {model_dir}, device: cpu, steps: 2, guidance_scale: 3.0, resolution: 32}}
probe: {{aggregation: {extra.get("aggregation", "mean")}}}
seeds: 2
batch_size: {extra.get("batch_size", 8)}
axes:
  - name: gender
    templates: ["a photo of a {{term}}"]
    groups: {{man: [man], woman: [woman]}}
concepts:
  - name: jobs
    templates: ["a photo of a {{term}}"]
    terms: [doctor, nurse, pilot]
report: {{formats: [html]}}
"""
    path = tmp / f"spec-{extra.get('batch_size', 8)}-{extra.get('aggregation', 'mean')}.yaml"
    path.write_text(text)
    return path


def test_run_resume_and_reproducibility(
    tiny_pipeline_dirs: dict[str, Path], tmp_path: Path
) -> None:
    from auditkit.run import run_audit

    spec = _tiny_spec(tiny_pipeline_dirs["sd"], tmp_path)
    first = run_audit(spec, tmp_path / "a", cache_dir=tmp_path, show_progress=False, render=False)
    stage = first.manifest["stages"]["extract"]
    # 12 prompts (base, 2 axis, 3 concepts, 6 marked) x 2 seeds; 2 steps, CFG doubles
    assert stage["units_run"] == 24 and stage["denoiser_evaluations"] == 24 * 2 * 2
    # A rerun performs zero U-Net evaluations and does not even load the model.
    again = run_audit(spec, tmp_path / "a", cache_dir=tmp_path, show_progress=False, render=False)
    stage = again.manifest["stages"]["extract"]
    assert stage["denoiser_evaluations"] == 0 and stage["units_run"] == 0
    assert stage["model_loaded"] is False
    assert again.manifest["model"]["files"], "provenance of the weights is kept on resume"
    # A second run from scratch gives identical result tables.
    other = run_audit(spec, tmp_path / "b", cache_dir=tmp_path, show_progress=False, render=False)
    for name in ("lean", "axes", "defaults", "descriptors", "similarity", "prompts"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(first.run_dir / "results" / f"{name}.parquet"),
            pd.read_parquet(other.run_dir / "results" / f"{name}.parquet"),
            check_exact=True,
        )
    assert other.manifest["status"] == "complete"


def test_interrupted_run_resumes_where_it_stopped(
    tiny_pipeline_dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from auditkit.extract import store as store_mod
    from auditkit.run import run_audit

    spec = _tiny_spec(tiny_pipeline_dirs["sd"], tmp_path, batch_size=4)
    real = store_mod.ActivationStore.write_batch
    calls = {"n": 0}

    def failing(self: Any, tensors: Any, rows: Any, means: Any = None) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        real(self, tensors, rows, means)

    monkeypatch.setattr(store_mod.ActivationStore, "write_batch", failing)
    with pytest.raises(KeyboardInterrupt):
        run_audit(spec, tmp_path / "r", cache_dir=tmp_path, show_progress=False, render=False)
    import json

    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    monkeypatch.setattr(store_mod.ActivationStore, "write_batch", real)
    resumed = run_audit(spec, tmp_path / "r", cache_dir=tmp_path, show_progress=False, render=False)
    assert resumed.manifest["stages"]["extract"]["units_run"] == 24 - 8
    assert resumed.manifest["stages"]["extract"]["units_skipped"] == 8


def test_a_rerun_of_a_finished_audit_reuses_its_analysis(
    tiny_pipeline_dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing new to read: the analysis is not run again and the results stay byte for byte.
    A result file gone, or another spec, and it runs."""
    from auditkit.analyses import stage
    from auditkit.run import run_audit

    spec = _tiny_spec(tiny_pipeline_dirs["sd"], tmp_path, batch_size=8)
    out = tmp_path / "r"
    first = run_audit(spec, out, cache_dir=tmp_path, show_progress=False, render=False)
    assert first.manifest["stages"]["analyze"]["reused"] is False
    lean = (out / "results" / "lean.parquet").read_bytes()
    calls = {"n": 0}
    real = stage.analyze_run

    def counted(*args: Any) -> None:
        calls["n"] += 1
        real(*args)

    monkeypatch.setattr("auditkit.stages.analysis.analyze_run", counted)
    again = run_audit(spec, out, cache_dir=tmp_path, show_progress=False, render=False)
    assert calls["n"] == 0 and again.manifest["stages"]["analyze"]["reused"] is True
    assert (
        again.manifest["stages"]["analyze"]["inputs"]
        == first.manifest["stages"]["analyze"]["inputs"]
    )
    assert (out / "results" / "lean.parquet").read_bytes() == lean
    (out / "results" / "summary.json").unlink()
    run_audit(spec, out, cache_dir=tmp_path, show_progress=False, render=False)
    assert calls["n"] == 1 and (out / "results" / "summary.json").is_file()
    from auditkit.spec import load_spec

    loaded = load_spec(spec)
    resamples = {"bootstrap_resamples": loaded.statistics.bootstrap_resamples + 10}
    other = loaded.model_copy(update={"statistics": loaded.statistics.model_copy(update=resamples)})
    changed = run_audit(other, out, cache_dir=tmp_path, show_progress=False, render=False)
    assert calls["n"] == 2 and changed.manifest["stages"]["analyze"]["reused"] is False


def test_unit_result_does_not_depend_on_batch(
    tiny_pipeline_dirs: dict[str, Path], tmp_path: Path
) -> None:
    from auditkit.extract.store import ActivationStore
    from auditkit.run import run_audit

    small = _tiny_spec(tiny_pipeline_dirs["sd"], tmp_path, batch_size=1, aggregation="per_step")
    big = _tiny_spec(tiny_pipeline_dirs["sd"], tmp_path, batch_size=7, aggregation="per_step")
    a = run_audit(small, tmp_path / "s", cache_dir=tmp_path, show_progress=False, render=False)
    b = run_audit(big, tmp_path / "g", cache_dir=tmp_path, show_progress=False, render=False)
    store_a = ActivationStore(a.run_dir / "activations")
    store_b = ActivationStore(b.run_dir / "activations")
    ids = sorted(store_a.completed())
    assert ids == sorted(store_b.completed())  # batch size is not part of a unit's identity
    tensors_b = dict(store_b.iter_units(ids))
    for uid, tensor in store_a.iter_units(ids):
        assert tensor.shape == (2, 64, 8, 8)
        torch.testing.assert_close(tensor, tensors_b[uid], atol=1e-4, rtol=1e-4)
    steps = pd.read_parquet(a.run_dir / "results" / "steps.parquet")
    assert sorted(steps["step"].unique()) == [0, 1]


def test_store_index_parts_are_merged_and_survive_an_interrupted_merge(tmp_path: Path) -> None:
    from auditkit.extract.store import ActivationStore

    def batch(start: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        ids = [f"{start + i:016d}" for i in range(3)]
        rows = [
            {"unit_id": u, "prompt_id": "p", "seed": start + i, "shape": "[1, 2]"}
            | {"steps": "[0]", "timesteps": "[999.0]", "dtype": "float32"}
            for i, u in enumerate(ids)
        ]
        return {u: torch.full((1, 2), float(start + i)) for i, u in enumerate(ids)}, rows

    store = ActivationStore(tmp_path)
    for start in (0, 10, 20):
        store.write_batch(*batch(start))
    assert len(list((tmp_path / "index-parts").glob("*.parquet"))) == 3
    assert not (tmp_path / "index.parquet").exists()
    assert len(ActivationStore(tmp_path).completed()) == 9  # visible before any merge
    parts = {p.name: p.read_bytes() for p in (tmp_path / "index-parts").glob("*.parquet")}
    store.compact()
    assert not (tmp_path / "index-parts").exists() and (tmp_path / "index.parquet").is_file()
    # a merge interrupted after writing index.parquet leaves parts that repeat its rows
    (tmp_path / "index-parts").mkdir()
    for name, data in parts.items():
        (tmp_path / "index-parts" / name).write_bytes(data)
    again = ActivationStore(tmp_path)
    assert len(again.index()) == 9 and again.timesteps() == [999.0]
    again.write_batch(*batch(30))
    assert len(again.completed()) == 12
    values = dict(ActivationStore(tmp_path).iter_units(sorted(again.completed())))
    assert float(values[f"{31:016d}"][0, 0]) == 31.0


def test_a_merge_from_memory_writes_the_index_the_parts_give(tmp_path: Path) -> None:
    """``compact`` merges the parts its own store object wrote from memory: the bytes of
    ``index.parquet`` are those of the parts read back and merged (a unit written twice keeps
    its last row), and the same store object reads the merged index as a fresh one does."""
    from auditkit.extract.store import ActivationStore, _parquet_bytes

    def batch(ids: list[str], value: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        rows = [
            {"unit_id": u, "prompt_id": f"p{u[-1]}", "seed": int(u), "shape": "[1, 2]"}
            | {"steps": "[0]", "timesteps": "[999.0]", "dtype": "float32", "mean_steps": ""}
            for u in ids
        ]
        return {u: torch.full((1, 2), value) for u in ids}, rows

    store = ActivationStore(tmp_path / "a")
    assert store.completed() == set()
    batches = [["0001", "0002"], ["0003", "0002"], ["0004"]]  # 0002 written again
    for i, ids in enumerate(batches):
        store.write_batch(*batch(ids, float(i)))
    parts = [ActivationStore._read(p) for p in sorted((tmp_path / "a" / "index-parts").glob("*"))]
    expected = pd.concat(parts, ignore_index=True).drop_duplicates("unit_id", keep="last")
    store.compact()
    written = (tmp_path / "a" / "index.parquet").read_bytes()
    assert written == _parquet_bytes(expected.reset_index(drop=True))
    fresh = ActivationStore(tmp_path / "a").index()
    pd.testing.assert_frame_equal(store.index(), fresh)
    assert list(fresh["unit_id"]) == ["0001", "0003", "0002", "0004"]
    assert float(dict(store.iter_units(["0002"]))["0002"][0, 0]) == 1.0
    store.write_batch(*batch(["0005"], 5.0))  # the merged rows stay the base of later parts
    assert store.completed() == {"0001", "0002", "0003", "0004", "0005"}
    store.compact()
    assert ActivationStore(tmp_path / "a").completed() == store.completed()


def test_a_first_read_views_the_checked_bytes_as_the_library_reads_them(tmp_path: Path) -> None:
    """A shard read for the first time is parsed from the bytes just hashed, without the
    safetensors loader: the same tensors, means and dtypes as the library's reader gives, with
    or without the stored means and in float32 or as stored; a shard whose header is damaged
    (one without a checksum, as old stores wrote) is a located error."""
    from safetensors.torch import load

    from auditkit.extract.store import ActivationStore
    from auditkit.rundir import integrity

    g = torch.Generator().manual_seed(0)
    ids = [f"{i:016d}" for i in range(5)]
    steps = {u: torch.randn((2, 3, 2, 2), generator=g).half() for u in ids}
    means = {u: torch.randn((3, 2, 2), generator=g).half() for u in ids[:3]}  # two without
    rows = [
        {"unit_id": u, "prompt_id": "p", "seed": i, "shape": "[2, 3, 2, 2]"}
        | {"steps": "[0, 1]", "timesteps": "[999.0, 500.0]", "dtype": "float16"}
        | {"mean_steps": "[0, 1, 2]" if u in means else ""}
        for i, u in enumerate(ids)
    ]
    ActivationStore(tmp_path / "s").write_batch(steps, rows, means)
    shard = next((tmp_path / "s").glob("*.safetensors"))
    library = load(shard.read_bytes())

    def read(**options: Any) -> dict[str, tuple[Any, Any]]:
        # a fresh object: its first read parses the checked bytes, the second opens the file
        first = ActivationStore(tmp_path / "s")
        got = {u: (a, m) for u, a, m in first.iter_stored(ids, **options)}
        again = {u: (a, m) for u, a, m in first.iter_stored(ids, **options)}
        for u in ids:
            for x, y in zip(got[u], again[u], strict=True):
                assert (x is None) == (y is None) and (x is None or torch.equal(x, y))
        return got

    for as_stored in (False, True):
        dtype = torch.float16 if as_stored else torch.float32
        got = read(as_stored=as_stored)
        for u in ids:
            at_steps, mean = got[u]
            assert at_steps.dtype == dtype and torch.equal(at_steps.float(), library[u].float())
            if u in means:
                assert torch.equal(mean.float(), library[u + "#mean"].float())
            else:
                assert mean is None
        no_mean = read(need_mean=False, as_stored=as_stored)
        assert all(m is None and a is not None for a, m in no_mean.values())
        only_mean = read(stored_mean_only=True, as_stored=as_stored)
        assert [u for u in ids if only_mean[u][0] is None] == ids[:3]  # steps where no mean
        assert all(only_mean[u][1] is not None for u in ids[:3])

    # damaged bytes (a shard without a checksum, as old stores wrote, is parsed unchecked):
    # a located error, not a crash or a tensor read from the wrong place
    from auditkit.extract.shard_bytes import shard_tensors

    good = bytearray(shard.read_bytes())
    assert set(shard_tensors(good, shard)) == set(library)
    size = int.from_bytes(good[:8], "little")
    for damaged in (good[:5], good[:8] + b"{]" + good[10:], good[: 8 + size + 10]):
        with pytest.raises(integrity.CorruptFile, match="not a readable shard") as caught:
            shard_tensors(bytearray(damaged), shard)
        assert str(shard) in str(caught.value)


def test_a_compiled_denoiser_captures_the_same_h(
    tiny_pipeline_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """``execution.compile`` (``auditkit run --compile``) compiles the denoiser in place: the
    hooks still find their point and capture the same h as the uncompiled module, also when the
    compiled denoiser ran without hooks before (a warm-up, the guidance sweep's passes), and
    between two captures; the causal check's steering steers it as it steers the uncompiled
    one."""
    import contextlib
    import json

    from auditkit.extract.hooks import steer_h
    from auditkit.extract.runner import capture_batch, pipeline_inputs
    from auditkit.models.loading import compile_denoiser
    from auditkit.plan import plan_audit
    from auditkit.spec import parse_spec

    spec = parse_spec(
        json.dumps(
            {
                "spec_version": 1,
                "name": "compiled",
                "model": {
                    "id": str(tiny_pipeline_dirs["sd"]),
                    "device": "cpu",
                    "steps": 2,
                    "resolution": 32,
                },
                "seeds": 2,
                "axes": [
                    {
                        "name": "gender",
                        "templates": ["a photo of a {term}"],
                        "groups": {"man": ["man"], "woman": ["woman"]},
                    }
                ],
                "concepts": [
                    {"name": "jobs", "templates": ["a photo of a {term}"], "terms": ["doctor"]}
                ],
                "execution": {"compile": True},
            }
        )
    )
    assert spec.execution.compile is True
    units = list(plan_audit(spec).units[:4])
    loaded = load_pipeline(spec.model, cache_dir=tmp_path)
    plain = capture_batch(loaded, [spec], units)
    direction = 3.0 * torch.randn(plain.h[0].shape[2:], generator=torch.Generator().manual_seed(0))

    def latents(steered: bool) -> torch.Tensor:
        """The call's final latents, with the causal check's steering of h when ``steered``."""
        steer = (
            steer_h(loaded.pipe.components, spec.probe.hook, direction, 1.0, adapter=loaded.adapter)
            if steered
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), steer:
            inputs = pipeline_inputs(loaded, spec, units)
            return loaded.pipe(**inputs, output_type="latent").images.float()

    plain_steered = latents(steered=True)
    assert (plain_steered - latents(steered=False)).abs().max() > 0.1
    compile_denoiser(loaded)
    assert getattr(loaded.pipe, loaded.adapter.denoiser)._compiled_call_impl is not None

    latents(steered=False)  # traced without hooks: the capture after it must still be called
    compiled = capture_batch(loaded, [spec], units)
    latents(steered=False)
    again = capture_batch(loaded, [spec], units)
    for captured in (compiled, again):
        assert captured.denoiser_calls == plain.denoiser_calls
        for got, want in zip(captured.h, plain.h, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    # the causal check's steering after hookless and capturing passes: steered as uncompiled
    torch.testing.assert_close(latents(steered=True), plain_steered, rtol=1e-3, atol=1e-3)

    # The hooks run outside the compiled graph: twice the steps compile nothing new (traced
    # into it, the capture list's length made every step compile the denoiser again)
    from torch._dynamo.utils import counters

    frames = counters["frames"]["total"]
    longer = spec.model_copy(update={"model": spec.model.model_copy(update={"steps": 4})})
    four = capture_batch(loaded, [longer], units)
    assert four.denoiser_calls == 2 * plain.denoiser_calls
    assert counters["frames"]["total"] == frames


def _capture_spec(model: Path, probe: dict[str, Any]) -> Any:
    import json

    from auditkit.spec import parse_spec

    return parse_spec(
        json.dumps(
            {
                "spec_version": 1,
                "name": "early-stop",
                "model": {"id": str(model), "device": "cpu", "steps": 4, "resolution": 32},
                "probe": probe,
                "seeds": 2,
                "axes": [
                    {
                        "name": "gender",
                        "templates": ["a photo of a {term}"],
                        "groups": {"man": ["man"], "woman": ["woman"]},
                    }
                ],
                "concepts": [
                    {"name": "jobs", "templates": ["a photo of a {term}"], "terms": ["doctor"]}
                ],
            }
        )
    )


def test_a_call_that_decodes_nothing_ends_once_its_last_kept_step_is_read(
    tiny_pipeline_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """Without images to decode, extraction's pipeline call ends at the hook point of the last
    step it keeps: the blocks after it in that step and every later step never run, and h is
    the same, bit for bit, as that of the call run to the end (which decodes). A sampler that
    calls the denoiser twice per step runs to its end."""
    from diffusers import HeunDiscreteScheduler

    from auditkit.extract.runner import capture_batch
    from auditkit.plan import plan_audit

    every = _capture_spec(tiny_pipeline_dirs["sd"], {"hook": "unet.mid_block"})
    early = _capture_spec(tiny_pipeline_dirs["sd"], {"hook": "unet.mid_block", "steps": [0, 1]})
    units = list(plan_audit(every).units[:3])
    loaded = load_pipeline(every.model, cache_dir=tmp_path)
    outputs = []  # one entry per U-Net call that reached its last layer
    loaded.pipe.unet.conv_out.register_forward_hook(lambda *_: outputs.append(1))

    def run(spec: Any, decode: bool) -> tuple[Any, int]:
        outputs.clear()
        captured = capture_batch(loaded, [spec], units, decode=decode)
        return captured, len(outputs)

    for spec, steps in ((every, [0, 1, 2, 3]), (early, [0, 1])):
        whole, whole_outputs = run(spec, decode=True)
        cut, cut_outputs = run(spec, decode=False)
        assert whole.denoiser_calls == 4 and whole_outputs == 4
        assert cut.denoiser_calls == steps[-1] + 1 and cut_outputs == steps[-1]
        assert cut.steps == whole.steps == [steps]
        for got, want in zip(cut.h, whole.h, strict=True):
            assert torch.equal(got, want)
        for got_mean, want_mean in zip(cut.means, whole.means, strict=True):
            assert (got_mean is None and want_mean is None) or torch.equal(got_mean, want_mean)
        assert whole.images is not None and cut.images is None

    loaded.pipe.scheduler = HeunDiscreteScheduler.from_config(loaded.pipe.scheduler.config)
    whole, whole_outputs = run(every, decode=True)
    cut, cut_outputs = run(every, decode=False)
    assert whole.denoiser_calls == cut.denoiser_calls == whole_outputs == cut_outputs == 7
    assert cut.steps == whole.steps == [list(range(7))]
    for got, want in zip(cut.h, whole.h, strict=True):
        assert torch.equal(got, want)


def test_a_shard_is_written_as_the_safetensors_library_writes_it() -> None:
    from safetensors.torch import save

    from auditkit.extract.shard_bytes import shard_payload, shard_tensors

    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float16, torch.float32, torch.bfloat16):
        tensors = {
            "u-b": torch.randn(2, 5, 3, generator=gen).to(dtype),
            "u-a": torch.randn(7, generator=gen).to(dtype),
            "u-a.mean": torch.randn(1, 1, generator=gen).to(dtype),
            "u-empty": torch.empty(0, 4, dtype=dtype),
        }
        meta = {"schema_version": "1"}
        data = shard_payload(tensors, meta)
        assert data == save(tensors, metadata=meta), dtype
        back = shard_tensors(bytearray(data), Path("shard.safetensors"))
        assert all(torch.equal(back[k], v) for k, v in tensors.items())
    mixed = {"a": torch.ones(2, dtype=torch.float16), "b": torch.ones(2, dtype=torch.float32)}
    assert shard_payload(mixed, {}) == save(mixed, metadata={})
