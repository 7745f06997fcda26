"""Storage that scales: what a unit stores (``probe.store_dtype``, ``probe.per_step_h``,
``probe.unit_budget_mb``), resolved against the size of h before planning.

- at real size (SD 1.5, 512 px, 50 steps) the default stores at most 0.5 MiB per unit: the mean
  over the kept steps, accumulated on the device, and h at a few evenly spaced steps;
- small models (toyworld, the tiny pipelines) keep the full float32 layout, so their units, ids
  and tables are what they were;
- the stored mean is the mean of every kept step's h, and the step analyses still run;
- a store written before the mean existed (version 1) still reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_adapters import KL_VAE, SD15_UNET, config_folder

from auditkit.analyses.checks import check_spec
from auditkit.layout import resolve_storage, stored_layout
from auditkit.plan import extraction_fingerprint
from auditkit.spec import parse_spec

SPEC = """spec_version: 1
name: storage
model: {{id: "{model}", device: cpu, steps: {steps}, guidance_scale: 4.0, resolution: {res}}}
probe: {probe}
seeds: 3
batch_size: 8
axes:
  - name: gender
    templates: ["a photo of a {{term}}"]
    groups: {{man: [man, father], woman: [woman, mother]}}
concepts:
  - name: jobs
    templates: ["a photo of a {{term}}"]
    terms: [doctor, nurse, pilot]
analyses: [lean, lean_by_step]
centring: {{reference: set_mean}}
statistics: {{bootstrap_resamples: 50}}
"""


def _spec(probe: str = "{}", steps: int = 50, model: str = "sd15", res: int = 512):  # type: ignore[no-untyped-def]
    return check_spec(parse_spec(SPEC.format(model=model, steps=steps, res=res, probe=probe)))


SD15_H = (1280, 8, 8)


def test_real_size_defaults_store_at_most_half_a_mib_per_unit() -> None:
    spec = resolve_storage(_spec(), SD15_H)
    assert spec.probe.store_dtype == "float16"
    assert spec.probe.per_step_h == [0, 49]  # evenly spaced, first and last
    layout = stored_layout(spec, SD15_H)
    # 3 vectors (2 steps + the mean) x 81,920 values x 2 bytes = 491,520 <= 524,288
    assert layout.bytes_per_unit == 3 * 81_920 * 2 == 491_520
    assert layout.bytes_per_unit <= 0.5 * 2**20 and layout.with_mean
    # a larger budget keeps more steps; a budget for everything keeps the old layout
    roomy = resolve_storage(_spec("{unit_budget_mb: 1.0}"), SD15_H)
    assert roomy.probe.per_step_h == [0, 12, 24, 37, 49]  # 6 vectors of 160 KiB: 5 + the mean
    everything = resolve_storage(_spec("{unit_budget_mb: 20}"), SD15_H)
    assert (everything.probe.store_dtype, everything.probe.per_step_h) == ("float32", "all")
    # what the user sets stays; per_step aggregation needs every kept step
    chosen = resolve_storage(_spec("{store_dtype: float32, per_step_h: [10, 20]}"), SD15_H)
    assert (chosen.probe.store_dtype, chosen.probe.per_step_h) == ("float32", [10, 20])
    trajectory = resolve_storage(_spec("{aggregation: per_step}"), SD15_H)
    assert trajectory.probe.per_step_h == "all"
    # fewer stored steps make another unit; a small model's units keep their ids
    assert "per_step_h" in extraction_fingerprint(spec)
    small = _spec(steps=20)
    resolved = resolve_storage(small, (64, 4, 4))
    assert (resolved.probe.store_dtype, resolved.probe.per_step_h) == ("float32", "all")
    assert extraction_fingerprint(resolved) == extraction_fingerprint(small)


def test_storage_settings_that_cannot_work_are_located_errors() -> None:
    from auditkit.errors import SpecError

    for probe, message in (
        ("{aggregation: per_step, per_step_h: [0]}", "per_step_h must be 'all' or 'auto'"),
        ("{steps: [0, 10], per_step_h: [5]}", "steps [5] are not kept steps"),
        ("{per_step_h: [60]}", "steps [60] are not kept steps"),
        ("{unit_budget_mb: 0}", "unit_budget_mb"),
    ):
        with pytest.raises(SpecError) as caught:
            check_spec(parse_spec(SPEC.format(model="sd15", steps=50, res=512, probe=probe)))
        assert message in str(caught.value), str(caught.value)


def test_plan_prints_the_stored_bytes_per_unit_of_sd15(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from auditkit.cli import main

    folder = config_folder(tmp_path / "sd15", "StableDiffusionPipeline", unet=SD15_UNET, vae=KL_VAE)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(model=folder, steps=50, res=512, probe="{}"))
    result = CliRunner().invoke(main, ["plan", str(spec)])
    assert result.exit_code == 0, result.output
    lines = {line.strip().split("  ")[0]: line for line in result.output.splitlines()[1:]}
    assert "480.0 KiB (2 of 50 kept steps + their mean, float16)" in lines["stored per unit"]
    from auditkit.api import plan as plan_of

    units = len(plan_of(spec).units)
    total = units * 491_520 / 2**20
    assert f"{total:.1f} MiB" in lines["activation storage"], (units, lines)


def test_a_compact_store_holds_the_mean_of_every_kept_step(tmp_path: Path) -> None:
    """The same audit of the tiny SD pipeline stored two ways: every step (float32), and two
    steps plus the mean accumulated on the device. The mean is the mean of the steps, the lean
    table agrees, and the step analyses run on the two stored steps."""
    import pandas as pd

    from auditkit.extract.store import ActivationStore
    from auditkit.run import run_audit

    full = "{store_dtype: float32, per_step_h: all}"
    compact = "{store_dtype: float32, per_step_h: [0, 4]}"
    runs = {}
    for name, probe in (("full", full), ("compact", compact)):
        spec = check_spec(parse_spec(SPEC.format(model="builtin:tiny-sd", steps=5, res=64,
                                                 probe=probe)))  # fmt: skip
        runs[name] = run_audit(spec, tmp_path / name, show_progress=False, render=False).run_dir
    stores = {name: ActivationStore(run / "activations") for name, run in runs.items()}
    index = stores["compact"].index()
    assert set(index["mean_steps"]) == {json.dumps([0, 1, 2, 3, 4])}
    assert set(index["steps"]) == {json.dumps([0, 4])}
    assert set(stores["full"].index()["mean_steps"]) == {""}
    full_by_prompt = {
        (row.prompt_id, row.seed): row.unit_id for row in stores["full"].index().itertuples()
    }
    by_key = {row.unit_id: (row.prompt_id, row.seed) for row in index.itertuples()}
    wanted = {full_by_prompt[key]: uid for uid, key in by_key.items()}
    everything = dict(stores["full"].iter_units(wanted))
    checked = 0
    for uid, steps, mean in stores["compact"].iter_stored(by_key):
        whole = everything[full_by_prompt[by_key[uid]]]
        assert mean is not None and steps.shape[0] == 2
        torch.testing.assert_close(mean, whole.mean(dim=0), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(steps, whole[[0, 4]])
        checked += 1
    assert checked == len(index) > 0
    leans = {n: pd.read_parquet(r / "results" / "lean.parquet") for n, r in runs.items()}
    np.testing.assert_allclose(leans["compact"]["score"], leans["full"]["score"], atol=1e-5)
    by_step = pd.read_parquet(runs["compact"] / "results" / "lean_by_step.parquet")
    assert sorted(set(by_step["step"])) == [0, 4]
    assert (runs["compact"] / "results" / "step_agreement.parquet").is_file()


def test_a_version_1_store_still_reads(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from auditkit.extract.store import ActivationStore
    from auditkit.rundir import parquet_bytes

    root = tmp_path / "activations"
    root.mkdir()
    save_file({"u1": torch.arange(6.0).reshape(3, 2)}, str(root / "shard-u1.safetensors"))
    old = {"unit_id": "u1", "prompt_id": "p", "seed": 0, "shard": "shard-u1.safetensors"}
    old |= {"shape": "[3, 2]", "steps": "[0, 1, 2]", "timesteps": "[3, 2, 1]", "dtype": "float32"}
    import pandas as pd

    (root / "index.parquet").write_bytes(parquet_bytes(pd.DataFrame([old]), 1))
    store = ActivationStore(root)
    assert store.index()["mean_steps"].tolist() == [""]
    ((uid, steps, mean),) = list(store.iter_stored(["u1"]))
    assert uid == "u1" and mean is None and steps.shape == (3, 2)
