"""The causal check: the steering hook, the dose-response on toyworld, resume, and the spec.

The hook and resume tests run on tiny random-weight pipelines (32 px, 2 steps); the
dose-response test on the shipped toyworld-biased checkpoint with the toyworld captioner, whose
gender axis must move the share of images read as "man" with alpha. Nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from auditkit.analyze.causal import (
    AXIS_COLUMNS,
    CAUSAL_COLUMNS,
    CURVE_COLUMNS,
    read_causal,
    steering_directions,
)
from auditkit.caption import Captioner
from auditkit.caption.stage import CaptionedPass, captioner_record
from auditkit.caption.store import CaptionStore
from auditkit.errors import SpecError, UsageError
from auditkit.extract.hooks import capture_h, steer_h
from auditkit.extract.runner import extract_activations, pipeline_inputs
from auditkit.extract.store import ActivationStore
from auditkit.models.loading import LoadedPipeline, load_pipeline
from auditkit.passes.causal import (
    causal_seeds,
    causal_units,
    plan_jobs,
    run_causal_check,
    select_axes,
)
from auditkit.plan import AuditPlan, plan_audit
from auditkit.spec import AuditSpec, dump_spec, parse_spec

BODY = """\
spec_version: 1
name: causal
model: {{id: "{model}", device: cpu, steps: {steps}, guidance_scale: {guidance}, resolution: 32}}
seeds: {seeds}
batch_size: 64
centring: {{reference: set_mean}}
axes:
  - name: gender
    templates: ["a photo of a {{term}}"]
    groups: {{man: [man], woman: [woman]}}
  - name: age
    templates: ["a photo of a {{term}}"]
    groups: {{young: [young person], old: [old person], middle: [person]}}
concepts:
  - name: jobs
    templates: ["a photo of a {{term}}"]
    terms: [{terms}]
analyses: [lean]
statistics: {{bootstrap_resamples: 0}}
captions:
  captioner: {{kind: toyworld}}
  seeds: 1
  batch_size: {batch}
  causal: {causal}
"""


def _text(
    model: Path | str = "builtin:tiny-lcm",
    *,
    causal: str = "{alphas: [-1.0, 1.0], seeds: 2}",
    steps: int = 2,
    guidance: float = 3.0,
    seeds: int = 3,
    terms: str = "doctor, nurse, pilot",
    batch: int = 2,
) -> str:
    return BODY.format(
        model=model,
        causal=causal,
        steps=steps,
        guidance=guidance,
        seeds=seeds,
        terms=terms,
        batch=batch,
    )


class Recording:
    """A captioner wrapper that counts the images it reads and can interrupt on a call."""

    def __init__(self, inner: Captioner, fail_on_call: int | None = None) -> None:
        self.inner = inner
        self.id = inner.id
        self.sha256 = inner.sha256
        self.images = 0
        self.calls = 0
        self.fail_on_call = fail_on_call

    def caption(self, images: np.ndarray) -> list[str]:
        self.calls += 1
        if self.fail_on_call == self.calls:
            raise KeyboardInterrupt
        self.images += len(images)
        return self.inner.caption(images)

    def read(self, images: np.ndarray) -> list[dict[str, str]]:
        return self.inner.read(images)


def _no_model() -> LoadedPipeline:
    raise AssertionError("the diffusion model was loaded although every job was done")


# --- the steering hook -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_sd(tiny_pipeline_dirs: dict[str, Path]) -> tuple[AuditSpec, LoadedPipeline]:
    spec = parse_spec(_text(tiny_pipeline_dirs["sd"], steps=3))
    loaded = load_pipeline(spec.model, cache_dir=tiny_pipeline_dirs["sd"].parent)
    assert loaded.uses_cfg
    return spec, loaded


def _hook_counts(loaded: LoadedPipeline) -> tuple[int, int]:
    unet = loaded.pipe.unet
    return len(unet._forward_pre_hooks), len(unet.mid_block._forward_hooks)


def test_steer_adds_exactly_alpha_g_to_the_hook_output_in_both_halves(
    tiny_sd: tuple[AuditSpec, LoadedPipeline],
) -> None:
    spec, loaded = tiny_sd
    plan = plan_audit(spec)
    units = list(plan.units[:2])
    components = loaded.pipe.components
    before = _hook_counts(loaded)

    def run(alphas: list[float] | None) -> tuple[dict[Any, torch.Tensor], Any, np.ndarray]:
        with torch.inference_mode():
            if alphas is None:
                with capture_h(
                    components, "unet.mid_block", expected_batch=2, halves=("cond", "uncond")
                ) as h:
                    out = loaded.pipe(**pipeline_inputs(loaded, spec, units), output_type="np")
                steer = None
            else:
                # capture_h opened inside steer_h sees the steered output
                with (
                    steer_h(
                        components, "unet.mid_block", g, torch.tensor(alphas), expected_batch=2
                    ) as steer,
                    capture_h(
                        components, "unet.mid_block", expected_batch=2, halves=("cond", "uncond")
                    ) as h,
                ):
                    out = loaded.pipe(**pipeline_inputs(loaded, spec, units), output_type="np")
        first = {c.half: c.tensor for c in h.captures if c.step == 0}
        return first, steer, np.asarray(out.images)

    with (
        torch.inference_mode(),
        capture_h(components, "unet.mid_block", expected_batch=1) as probe,
    ):
        loaded.pipe(**pipeline_inputs(loaded, spec, units[:1]), output_type="latent")
    shape = tuple(probe.captures[0].tensor.shape[1:])
    assert len(shape) == 3  # [C, H, W]
    g = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    plain, _, plain_images = run(None)
    steered, session, steered_images = run([0.5, -1.0])
    expected = torch.stack([0.5 * g, -1.0 * g])
    for half in ("cond", "uncond"):  # step 0: same inputs, so the difference is the shift
        torch.testing.assert_close(steered[half] - plain[half], expected, atol=1e-5, rtol=0)
    assert session.steered_calls == session.denoiser_calls == spec.model.steps
    assert not np.array_equal(steered_images, plain_images)
    _, _, zero_images = run([0.0, 0.0])
    assert np.array_equal(zero_images, plain_images)  # alpha = 0 is exactly unsteered
    assert _hook_counts(loaded) == before  # removed afterwards
    # ... also when the block raises
    with (
        pytest.raises(RuntimeError, match="per sample has shape"),
        steer_h(components, "unet.mid_block", g[:1], 1.0),
        torch.inference_mode(),
    ):
        loaded.pipe(**pipeline_inputs(loaded, spec, units[:1]), output_type="latent")
    assert _hook_counts(loaded) == before
    with (
        pytest.raises(SpecError, match=r"did you mean 'unet\.mid_block'"),
        steer_h(components, "unet.mid_blok", g, 1.0),
    ):
        pass
    with (
        pytest.raises(ValueError, match="one per sample"),
        steer_h(components, "unet.mid_block", g, torch.tensor([1.0, 2.0]), expected_batch=3),
    ):
        pass


def test_direction_is_the_analysis_axis_reshaped(
    tiny_sd: tuple[AuditSpec, LoadedPipeline], tmp_path: Path
) -> None:
    from auditkit.analyze.latents import load_latents
    from auditkit.analyze.measures import axis_direction, build_layout

    spec, loaded = tiny_sd
    plan = plan_audit(spec)
    store = ActivationStore(tmp_path / "activations")
    extract_activations(loaded, spec, plan, store, show_progress=False)
    directions = steering_directions(spec, plan, store, [spec.axes[0]])
    g = directions["gender"]
    latents = load_latents(store, plan, "mean")
    layout = build_layout(spec, latents.row_map())
    analysed = axis_direction(latents.means().astype(np.float64), layout.axes[0])
    stored_shape = json.loads(str(store.index()["shape"].iloc[0]))
    assert list(g.vector.shape) == stored_shape[1:] and g.groups == ("man", "woman")
    np.testing.assert_array_equal(g.vector.ravel(), analysed.astype(np.float32))


# --- the dose-response on toyworld ---------------------------------------------------------------


def test_toyworld_gender_steering_moves_the_share_read_as_man(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from auditkit.run import run_audit

    text = _text(
        "builtin:toyworld-biased",
        causal="{alphas: [-1.0, 0.0, 1.0], seeds: 16}",
        steps=10,
        guidance=4.0,
        seeds=16,
        batch=64,
    )
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    out = run_audit(path, tmp_path / "run", cache_dir=tmp_path, show_progress=False, render=False)
    stage = out.manifest["stages"]["causal"]
    assert (stage["units_total"], stage["units_run"], stage["model_loaded"]) == (144, 144, True)
    tables = read_causal(tmp_path / "run" / "captions")
    causal, curve, axes = tables["causal"], tables["causal_curve"], tables["causal_axes"]
    assert list(causal.columns) == CAUSAL_COLUMNS and list(curve.columns) == CURVE_COLUMNS
    assert list(axes.columns) == AXIS_COLUMNS
    assert set(causal["axis"]) == {"gender"}  # the 3-group age axis has no direction
    assert len(causal) == 3 * 3 and (causal["n_images"] + causal["n_unread"] == 16).all()
    shares = curve.set_index("alpha")["share"]
    print("toyworld gender dose-response (share read as man):", shares.to_dict())
    print(causal.pivot(index="concept", columns="alpha", values="share"))
    row = axes.iloc[0]
    assert row["positive_group"] == "man" and bool(row["monotone"])
    assert list(shares.index) == [-1.0, 0.0, 1.0] and shares.is_monotonic_increasing
    assert shares[1.0] - shares[-1.0] >= 0.3
    assert row["effect"] == pytest.approx(shares[1.0] - shares[-1.0])
    assert row["rho"] > 0.3 and row["slope"] > 0.15
    assert stage["axes"][0]["axis"] == "gender" and stage["axes"][0]["monotone"] is True
    # a rerun does nothing and never loads the model
    before = (tmp_path / "run" / "captions" / "causal.parquet").read_bytes()

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("a finished run loaded the model")

    monkeypatch.setattr("auditkit.models.loading.load_pipeline", refuse)
    again = run_audit(path, tmp_path / "run", cache_dir=tmp_path, show_progress=False, render=False)
    rerun = again.manifest["stages"]["causal"]
    assert (rerun["units_run"], rerun["units_skipped"], rerun["model_loaded"]) == (0, 144, False)
    assert (tmp_path / "run" / "captions" / "causal.parquet").read_bytes() == before


# --- resume and content addressing --------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(
    tiny_pipeline_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[AuditSpec, AuditPlan, LoadedPipeline, ActivationStore]:
    spec = parse_spec(_text(tiny_pipeline_dirs["lcm"]))
    loaded = load_pipeline(spec.model, cache_dir=tiny_pipeline_dirs["lcm"].parent)
    plan = plan_audit(spec)
    store = ActivationStore(tmp_path_factory.mktemp("causal") / "activations")
    extract_activations(loaded, spec, plan, store, show_progress=False)
    return spec, plan, loaded, store


def _check(spec: AuditSpec, plan: AuditPlan, root: Path, store: Any, cap: Any, pipe: Any) -> Any:
    assert spec.captions is not None
    record = captioner_record(spec.captions.captioner, cap)
    return run_causal_check(CaptionedPass(spec, plan, root, cap, record, pipe, False), store)


def test_interrupted_check_resumes_and_reuses_what_it_can(
    tiny_run: tuple[AuditSpec, AuditPlan, LoadedPipeline, ActivationStore], tmp_path: Path
) -> None:
    from auditkit.caption.models import load_captioner

    spec, plan, loaded, store = tiny_run
    root = tmp_path / "captions"
    toyworld = load_captioner("toyworld")
    assert causal_seeds(spec) == [0, 1] and len(causal_units(spec, plan)) == 6
    with pytest.raises(KeyboardInterrupt):  # after the first chunk of 2 jobs
        _check(spec, plan, root, store, Recording(toyworld, fail_on_call=2), lambda: loaded)
    assert not (root / "causal.parquet").exists()  # tables only from a finished pass
    recording = Recording(toyworld)
    stats = _check(spec, plan, root, store, recording, lambda: loaded)
    assert (stats.units_total, stats.units_skipped, stats.units_run) == (12, 2, 10)
    assert recording.images == 10
    tables = read_causal(root)
    assert sorted(tables["causal_curve"]["alpha"]) == [-1.0, 1.0]
    assert (tables["causal"]["n_images"] + tables["causal"]["n_unread"] == 2).all()
    rerun = _check(spec, plan, root, store, Recording(toyworld, fail_on_call=1), _no_model)
    assert (rerun.units_run, rerun.units_skipped, rerun.model_loaded) == (0, 12, False)
    # another alpha adds only its own jobs; the others are found by content
    wider = parse_spec(_text(spec.model.id, causal="{alphas: [-1.0, 0.0, 1.0], seeds: 2}"))
    more = _check(wider, plan_audit(wider), root, store, Recording(toyworld), lambda: loaded)
    assert (more.units_run, more.units_skipped) == (6, 12)
    # the job ids depend on the direction: other activations never reuse old readings
    assert spec.captions is not None
    record = captioner_record(spec.captions.captioner, toyworld)
    directions = steering_directions(spec, plan, store, [spec.axes[0]])
    jobs = plan_jobs(spec, plan, directions, str(record["key"]))
    assert {j.job_id for j in jobs} <= CaptionStore(root / "causal", record).completed()
    shifted = {
        "gender": type(directions["gender"])(
            "gender", ("man", "woman"), directions["gender"].vector * 2, "0" * 64
        )
    }
    assert not {j.job_id for j in plan_jobs(spec, plan, shifted, str(record["key"]))} & {
        j.job_id for j in jobs
    }


def test_alpha_zero_reads_the_captioning_stage_image(
    tiny_run: tuple[AuditSpec, AuditPlan, LoadedPipeline, ActivationStore], tmp_path: Path
) -> None:
    from auditkit.caption.models import load_captioner
    from auditkit.sampling import generate_images

    spec, plan, loaded, store = tiny_run
    spec = parse_spec(_text(spec.model.id, causal="{alphas: [0.0, 1.0], seeds: 2}"))
    plan = plan_audit(spec)
    toyworld = load_captioner("toyworld")
    _check(spec, plan, tmp_path, store, toyworld, lambda: loaded)
    assert spec.captions is not None
    record = captioner_record(spec.captions.captioner, toyworld)
    directions = steering_directions(spec, plan, store, [spec.axes[0]])
    jobs = [j for j in plan_jobs(spec, plan, directions, str(record["key"])) if j.alpha == 0.0]
    stored = CaptionStore(tmp_path / "causal", record).rows().set_index("unit_id")
    plain = toyworld.caption(generate_images(loaded, spec, [j.unit for j in jobs]))
    assert [stored.loc[j.job_id, "caption"] for j in jobs] == plain


def test_axis_selection_follows_the_captioner() -> None:
    spec = parse_spec(_text())
    toyworld_values = {"gender": {"man", "woman"}, "age": {"young", "old"}, "skin": None}
    assert [a.name for a in select_axes(spec, toyworld_values)] == ["gender"]
    with pytest.raises(UsageError, match="no axis to steer"):
        select_axes(spec, {"skin": None})
    with pytest.raises(UsageError, match="can never be read"):
        select_axes(spec, {"gender": {"male", "female"}})
    named = parse_spec(_text(causal="{axes: [gender]}"))
    with pytest.raises(UsageError, match="does not read an attribute named 'gender'"):
        select_axes(named, {"age": None})


# --- the spec ------------------------------------------------------------------------------------


def test_causal_section_defaults() -> None:
    spec = parse_spec(_text(causal="{}", seeds=20))
    assert spec.captions is not None and spec.captions.causal is not None
    causal = spec.captions.causal
    assert causal.alphas == [-1.0, -0.5, 0.0, 0.5, 1.0] and causal.axes is None
    assert causal.seeds is None and causal.concepts is None
    assert causal_seeds(spec) == list(range(16))
    assert causal_seeds(parse_spec(_text(causal="{}", seeds=5))) == list(range(5))
    assert parse_spec(dump_spec(spec)) == spec
    off = parse_spec(_text().replace("  causal: {alphas: [-1.0, 1.0], seeds: 2}\n", ""))
    assert off.captions is not None and off.captions.causal is None


@pytest.mark.parametrize(
    ("causal", "located", "message"),
    [
        ("{axes: [colour]}", "captions.causal.axes[0] (line 24)", "unknown axis 'colour'"),
        ("{axes: [gender, age]}", "captions.causal.axes[1] (line 24)", "has 3 groups"),
        ("{axes: [gender, gender]}", "captions.causal.axes (line 24)", "twice"),
        ("{alphas: [1.0, 1.0]}", "captions.causal.alphas (line 24)", "alphas repeat"),
        ("{alphas: [0.5]}", "captions.causal.alphas (line 24)", "at least 2 items"),
        ("{alphas: [0.0, .nan]}", "captions.causal.alphas[1] (line 24)", "finite"),
        ("{concepts: [doctor, chef]}", "captions.causal.concepts[1] (line 24)", "'chef'"),
        ("{seeds: 4}", "captions.causal.seeds (line 24)", "asks for 4 seeds but the audit has 3"),
        ("{strength: 2}", "captions.causal.strength (line 24)", "unknown key"),
    ],
)
def test_bad_causal_section_is_located(causal: str, located: str, message: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(_text(causal=causal))
    assert any(p.startswith(located) and message in p for p in err.value.problems), err.value


def test_causal_needs_whole_step_mean_h_and_lists_every_problem() -> None:
    text = _text(causal="{axes: [colour], concepts: [chef]}")
    text = text.replace("batch_size: 64\n", "batch_size: 64\nprobe: {spatial_pool: mean}\n")
    with pytest.raises(SpecError) as err:
        parse_spec(text)
    problems = err.value.problems
    assert len(problems) == 3, problems
    assert problems[0].startswith("captions.causal (line 25)") and "spatial_pool" in problems[0]
    per_step = _text().replace(
        "batch_size: 64\n", "batch_size: 64\nprobe: {aggregation: per_step}\n"
    )
    with pytest.raises(SpecError, match=r"needs probe\.aggregation 'mean'"):
        parse_spec(per_step)


def test_crossings_cannot_be_steered() -> None:
    text = _text(causal="{axes: [gxg]}").replace(
        "concepts:\n", "crossings:\n  - {name: gxg, axes: [gender, age]}\nconcepts:\n"
    )
    with pytest.raises(SpecError) as err:
        parse_spec(text)
    assert any("is a crossing" in p for p in err.value.problems), err.value


def test_causal_tables_are_versioned(
    tiny_run: tuple[AuditSpec, AuditPlan, LoadedPipeline, ActivationStore], tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    from auditkit.caption.models import load_captioner
    from auditkit.errors import SchemaVersionError

    spec, plan, loaded, store = tiny_run
    root = tmp_path / "captions"
    _check(spec, plan, root, store, load_captioner("toyworld"), lambda: loaded)
    path = root / "causal_axes.parquet"
    table = pq.read_table(path)
    meta = dict(table.schema.metadata or {})
    assert meta[b"auditkit_schema_version"] == b"1"
    meta[b"auditkit_schema_version"] = b"99"
    pq.write_table(table.replace_schema_metadata(meta), path)
    with pytest.raises(SchemaVersionError, match="schema_version 99"):
        read_causal(root)
    assert isinstance(pd.read_parquet(root / "causal.parquet"), pd.DataFrame)
