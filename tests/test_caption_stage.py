"""The captioning stage: unit selection, images of the extracted trajectories, chunked resume,
captioner-keyed storage, the run and its manifest, and the spec's located errors.

Runs on the tiny random-weight LCM pipeline (2 steps, 32 px) with the shipped toyworld
captioner, so nothing is downloaded and each test takes seconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from auditkit.caption import Captioner
from auditkit.caption import stage as stage_mod
from auditkit.caption.stage import (
    CaptionedPass,
    caption_images,
    captioner_record,
    load_spec_captioner,
)
from auditkit.caption.store import CaptionStore, read_captions, select_caption_units
from auditkit.errors import SpecError
from auditkit.models.loading import LoadedPipeline, load_pipeline
from auditkit.plan import AuditPlan, plan_audit
from auditkit.sampling import generate_images
from auditkit.spec import AuditSpec, dump_spec, parse_spec, spec_hash

BODY = """\
spec_version: 1
name: captions
model: {{id: {model}, device: cpu, steps: 2, guidance_scale: 3.0, resolution: 32}}
probe: {{aggregation: per_step}}
seeds: 3
batch_size: 4
centring: {{reference: set_mean}}
axes:
  - name: gender
    templates: ["a photo of a {{term}}"]
    groups: {{man: [man], woman: [woman]}}
concepts:
  - name: jobs
    templates: ["a photo of a {{term}}"]
    terms: [doctor, nurse, pilot]
analyses: [{analyses}]
statistics: {{bootstrap_resamples: 0}}
"""
CAPTIONS = """\
captions:
  captioner: {captioner}
  seeds: 2
  batch_size: {batch}
"""


def _spec_text(model: Path | str, *, captioner: str = "{kind: toyworld}", batch: int = 2) -> str:
    return BODY.format(model=model, analyses="lean") + CAPTIONS.format(
        captioner=captioner, batch=batch
    )


class Recording:
    """A captioner wrapper that keeps every image batch it is shown, and can fail on a call."""

    def __init__(self, inner: Captioner, fail_on_call: int | None = None) -> None:
        self.inner = inner
        self.id = inner.id
        self.sha256 = inner.sha256
        self.batches: list[np.ndarray] = []
        self.fail_on_call = fail_on_call

    def caption(self, images: np.ndarray) -> list[str]:
        if self.fail_on_call == len(self.batches) + 1:
            raise KeyboardInterrupt
        self.batches.append(np.array(images, copy=True))
        return self.inner.caption(images)

    def read(self, images: np.ndarray) -> list[dict[str, str]]:
        return self.inner.read(images)


def _no_model() -> LoadedPipeline:
    raise AssertionError("the diffusion model was loaded although every unit was captioned")


@pytest.fixture(scope="module")
def setup(tiny_pipeline_dirs: dict[str, Path]) -> tuple[AuditSpec, AuditPlan, LoadedPipeline]:
    spec = parse_spec(_spec_text(tiny_pipeline_dirs["lcm"]))
    loaded = load_pipeline(spec.model, cache_dir=tiny_pipeline_dirs["lcm"].parent)
    return spec, plan_audit(spec), loaded


def _caption(
    spec: AuditSpec, plan: AuditPlan, root: Path, captioner: Captioner, pipeline: Any
) -> Any:
    assert spec.captions is not None
    record = captioner_record(spec.captions.captioner, captioner)
    return caption_images(CaptionedPass(spec, plan, root, captioner, record, pipeline, False))


# --- the spec --------------------------------------------------------------------------------


def test_captions_section_defaults_and_leaves_older_specs_unchanged() -> None:
    plain = parse_spec(BODY.format(model="builtin:tiny-lcm", analyses="lean"))
    assert plain.captions is None
    assert "\ncaptions: null\n" in dump_spec(plain)  # recorded as off; the hash leaves it out
    assert spec_hash(parse_spec(dump_spec(plain))) == spec_hash(plain)
    spec = parse_spec(_spec_text("builtin:tiny-lcm"))
    assert spec.captions is not None and spec.captions.roles == ["concept"]
    assert spec.captions.seeds == 2 and spec.captions.captioner.kind == "toyworld"
    assert parse_spec(dump_spec(spec)) == spec


@pytest.mark.parametrize(
    ("captioner", "located", "message"),
    [
        ("{kind: blip}", "captions.captioner.kind (line 19)", "'toyworld'"),
        ("{kind: toyworld, prompt: x}", "captions.captioner (line 19)", "takes no options"),
        ("{kind: clip, id: ./m}", "captions.captioner (line 19)", "needs 'attributes'"),
        (
            "{kind: clip, id: ./m, attributes: {gender: {man: [a man]}}}",
            "captions.captioner (line 19)",
            "at least two values",
        ),
        ("{kind: image-to-text}", "captions.captioner (line 19)", "needs 'id'"),
        ("{kind: toyworld, colour: red}", "captions.captioner.colour (line 19)", "unknown key"),
    ],
)
def test_bad_captioner_is_located(captioner: str, located: str, message: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(_spec_text("builtin:tiny-lcm", captioner=captioner))
    assert any(p.startswith(located) and message in p for p in err.value.problems), err.value


def test_bad_captions_values_are_located() -> None:
    text = _spec_text("builtin:tiny-lcm").replace("seeds: 2", "seeds: 5")
    text = text.replace("batch_size: 2", "batch_size: 2\n  roles: [concept, concept]")
    with pytest.raises(SpecError) as err:
        parse_spec(text)
    problems = err.value.problems
    assert any(p.startswith("captions.roles (line 22)") and "twice" in p for p in problems)
    text = _spec_text("builtin:tiny-lcm").replace("seeds: 2", "seeds: 5")
    with pytest.raises(SpecError) as err:
        parse_spec(text)
    assert err.value.problems == ["captions.seeds (line 20): asks for 5 seeds but the audit has 3"]


def test_cli_refuses_a_bad_captions_section_with_exit_code_2(tmp_path: Path) -> None:
    from auditkit.cli import main

    path = tmp_path / "spec.yaml"
    path.write_text(_spec_text("builtin:tiny-lcm", captioner="{kind: clip, id: ./m}"))
    result = CliRunner().invoke(main, ["run", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert "captions.captioner (line 19)" in result.output
    assert not (tmp_path / "run").exists()


def test_relative_captioner_folder_is_resolved_against_the_spec(tmp_path: Path) -> None:
    from auditkit.spec import load_spec

    path = tmp_path / "spec.yaml"
    path.write_text(_spec_text("builtin:tiny-lcm", captioner="{kind: toyworld, id: ./cap}"))
    spec = load_spec(path)
    assert spec.captions is not None
    assert spec.captions.captioner.id == str((tmp_path / "cap").resolve())


# --- which units -------------------------------------------------------------------------------


def test_selects_the_requested_roles_and_first_seeds() -> None:
    text = BODY.format(model="builtin:tiny-lcm", analyses="lean, defaults")
    plan_of = {}
    for roles in ("[concept]", "[concept, marked]", "[axis]"):
        spec = parse_spec(
            text + CAPTIONS.format(captioner="{kind: toyworld}", batch=2) + f"  roles: {roles}\n"
        )
        plan = plan_audit(spec)
        units = select_caption_units(spec, plan)
        wanted = {p.prompt_id for p in plan.prompts if p.role in roles}
        assert {u.prompt_id for u in units} == wanted
        assert {u.seed for u in units} == {0, 1}
        assert len(units) == 2 * len(wanted)
        plan_of[roles] = len(units)
    assert plan_of == {"[concept]": 6, "[concept, marked]": 18, "[axis]": 4}


# --- the images are those of the extracted trajectories ---------------------------------------


def test_captioned_images_are_the_extracted_trajectories(
    setup: tuple[AuditSpec, AuditPlan, LoadedPipeline], tmp_path: Path
) -> None:
    from auditkit.caption.models import load_captioner
    from auditkit.extract.hooks import capture_h
    from auditkit.extract.runner import extract_activations
    from auditkit.extract.store import ActivationStore

    spec, plan, loaded = setup
    units = select_caption_units(spec, plan)
    recording = Recording(load_captioner("toyworld"))
    torch.manual_seed(1)  # LCM draws noise between steps: it must come from the unit's seed
    _caption(spec, plan, tmp_path / "captions", recording, lambda: loaded)
    shown = np.concatenate(recording.batches)
    assert shown.shape == (len(units), 32, 32, 3) and shown.dtype == np.uint8
    # The image the stage captioned is the pipeline's image for that unit's seed, alone.
    torch.manual_seed(2)
    alone = np.concatenate([generate_images(loaded, spec, [u]) for u in units])
    assert np.abs(shown.astype(int) - alone).max() <= 1  # batched vs single conv, CPU rounding
    assert np.array_equal(generate_images(loaded, spec, units[:2]), recording.batches[0])
    captions, _, _ = read_captions(tmp_path / "captions")
    assert list(captions["caption"]) == recording.inner.caption(shown)
    # ... and it comes from the very trajectory whose h extraction stored (other batching).
    store = ActivationStore(tmp_path / "activations")
    extract_activations(loaded, spec, plan, store, show_progress=False)
    stored = dict(store.iter_units([u.unit_id for u in units]))
    with capture_h(loaded.pipe.components, "unet.mid_block", expected_batch=len(units)) as h:
        generate_images(loaded, spec, units)
    again = torch.stack([c.tensor for c in h.by_step("cond")], dim=1)
    for i, unit in enumerate(units):
        torch.testing.assert_close(again[i].float(), stored[unit.unit_id], atol=1e-4, rtol=1e-4)


def test_extraction_hands_the_stage_the_images_of_the_trajectories_it_stores(
    setup: tuple[AuditSpec, AuditPlan, LoadedPipeline], tmp_path: Path
) -> None:
    from auditkit.caption.models import load_captioner
    from auditkit.caption.stage import CaptionReader
    from auditkit.extract.runner import extract_activations
    from auditkit.extract.store import ActivationStore

    spec, plan, loaded = setup
    assert spec.captions is not None
    units = select_caption_units(spec, plan)
    recording = Recording(load_captioner("toyworld"))
    record = captioner_record(spec.captions.captioner, recording)
    root = tmp_path / "captions"
    reader = CaptionReader(CaptionedPass(spec, plan, root, recording, record, _no_model, False))
    assert reader.wanted == {u.unit_id for u in units}
    store = ActivationStore(tmp_path / "activations")
    stats = extract_activations(loaded, spec, plan, store, show_progress=False, images=reader)
    assert stats.units_run == len(plan.units) and reader.read == len(units) and not reader.wanted
    shown = np.concatenate(recording.batches)
    # the images read are the pipeline's images of those units' seeds, sampled alone
    alone = np.concatenate([generate_images(loaded, spec, [u]) for u in units])
    assert np.abs(shown.astype(int) - alone).max() <= 1  # batched vs single conv, CPU rounding
    # ... so the stage samples nothing (the model is never asked for) and writes the tables
    again = _caption(spec, plan, root, recording, _no_model)
    assert (again.units_run, again.units_skipped, again.model_loaded) == (0, len(units), False)
    captions, _, _ = read_captions(root)
    assert list(captions["caption"]) == recording.inner.caption(shown)


# --- resume, rerun, another captioner -----------------------------------------------------------


def test_interrupted_stage_resumes_and_a_rerun_does_nothing(
    setup: tuple[AuditSpec, AuditPlan, LoadedPipeline], tmp_path: Path
) -> None:
    from auditkit.caption.models import load_captioner

    spec, plan, loaded = setup
    root = tmp_path / "captions"
    toyworld = load_captioner("toyworld")
    with pytest.raises(KeyboardInterrupt):
        _caption(spec, plan, root, Recording(toyworld, fail_on_call=2), lambda: loaded)
    assert not (root / "captions.parquet").exists()  # tables only from a finished stage
    recording = Recording(toyworld)
    stats = _caption(spec, plan, root, recording, lambda: loaded)
    assert (stats.units_total, stats.units_skipped, stats.units_run) == (6, 2, 4)
    assert sum(len(b) for b in recording.batches) == 4  # only the missing units were read
    captions, readings, record = read_captions(root)
    units = select_caption_units(spec, plan)
    assert sorted(captions["unit_id"]) == sorted(u.unit_id for u in units)
    assert set(captions["role"]) == {"concept"} and set(captions["seed"]) == {0, 1}
    assert set(readings["attribute"]) == {"gender", "skin", "age", "occupation"}
    assert len(readings) == 4 * len(units)
    assert list(readings.columns[:8]) == [
        "unit_id",
        "prompt_id",
        "role",
        "concept_set",
        "concept",
        "group",
        "template",
        "seed",
    ]
    assert record["sha256"] == toyworld.sha256 and record["id"] == "toyworld-captioner"
    before = (root / "readings.parquet").read_bytes()
    rerun = _caption(spec, plan, root, Recording(toyworld, fail_on_call=1), _no_model)
    assert (rerun.units_run, rerun.units_skipped, rerun.model_loaded) == (0, 6, False)
    assert (root / "readings.parquet").read_bytes() == before


def test_another_captioner_gets_captions_of_its_own(
    setup: tuple[AuditSpec, AuditPlan, LoadedPipeline], tmp_path: Path
) -> None:
    from auditkit.caption.models import load_captioner
    from auditkit.toyworld.captioner import ToyworldCaptioner, save_captioner

    spec, plan, loaded = setup
    root = tmp_path / "captions"
    first = load_captioner("toyworld")
    _caption(spec, plan, root, first, lambda: loaded)
    net = load_captioner("toyworld").net  # type: ignore[attr-defined]
    with torch.no_grad():
        next(net.parameters()).mul_(0.5)
    folder = save_captioner(ToyworldCaptioner(net), tmp_path / "other")
    text = _spec_text(spec.model.id, captioner=f"{{kind: toyworld, id: {folder}}}")
    other_spec = parse_spec(text)
    assert other_spec.captions is not None
    second = load_spec_captioner(other_spec.captions.captioner)
    assert second.sha256 != first.sha256
    stats = _caption(other_spec, plan, root, second, lambda: loaded)
    assert stats.units_run == 6  # nothing reused from the other captioner
    _, _, record = read_captions(root)
    assert record["sha256"] == second.sha256
    assert len(list((root / "units").iterdir())) == 2  # both kept, never mixed
    back = _caption(spec, plan, root, first, _no_model)
    assert back.units_run == 0 and read_captions(root)[2]["sha256"] == first.sha256
    assert spec.captions is not None
    first_rows = CaptionStore(root, captioner_record(spec.captions.captioner, first)).rows()
    assert set(first_rows["unit_id"]) == {u.unit_id for u in select_caption_units(spec, plan)}


# --- the run -------------------------------------------------------------------------------------


def test_run_records_the_captioner_and_resumes_without_the_model(
    tiny_pipeline_dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from auditkit.run import run_audit

    path = tmp_path / "spec.yaml"
    path.write_text(_spec_text(tiny_pipeline_dirs["lcm"], batch=4))
    out = run_audit(path, tmp_path / "run", cache_dir=tmp_path, show_progress=False, render=False)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    captioner = manifest["captioner"]
    assert captioner["kind"] == "toyworld" and captioner["id"] == "toyworld-captioner"
    assert len(captioner["sha256"]) == 64 and len(captioner["key"]) == 64
    # extraction decoded and read the 6 selected units in the pipeline calls that captured
    # their h; the stage had nothing left to sample
    assert manifest["stages"]["extract"]["images_read"] == 6
    caption_stage = manifest["stages"]["caption"]
    assert caption_stage["units_run"] == 0 and caption_stage["model_loaded"] is False
    assert caption_stage["units_skipped"] == 6
    captions = pd.read_parquet(out.run_dir / "captions" / "captions.parquet")
    assert len(captions) == 6 and set(captions["term"]) == {"doctor", "nurse", "pilot"}
    saved = json.loads((out.run_dir / "captions" / "captioner.json").read_text())
    assert saved["schema_version"] == 1 and saved["captioner"]["sha256"] == captioner["sha256"]

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("a finished run loaded the model")

    monkeypatch.setattr("auditkit.models.loading.load_pipeline", refuse)
    again = run_audit(path, tmp_path / "run", cache_dir=tmp_path, show_progress=False, render=False)
    stages = again.manifest["stages"]
    assert stages["extract"]["model_loaded"] is False and stages["caption"]["model_loaded"] is False
    assert stages["caption"]["units_run"] == 0 and again.manifest["captioner"] == captioner


def test_stage_module_only_decodes_when_the_spec_asks(
    tiny_pipeline_dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from auditkit.run import run_audit

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("images were decoded without a captions section")

    monkeypatch.setattr(stage_mod, "caption_images", refuse)
    path = tmp_path / "spec.yaml"
    text = BODY.format(model=tiny_pipeline_dirs["lcm"], analyses="lean")
    path.write_text(text.replace("seeds: 3", "seeds: 1"))
    out = run_audit(path, tmp_path / "run", cache_dir=tmp_path, show_progress=False, render=False)
    assert out.manifest["captioner"] is None and "caption" not in out.manifest["stages"]
    assert not (tmp_path / "run" / "captions").exists()
