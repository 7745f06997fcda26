"""Exemplar thumbnails: kept by the captioning stage for the first seeds, reused across
captioners, remade when their settings change, and shown in the report within its budget.

Runs on the tiny random-weight LCM pipeline (2 steps, 32 px) with the shipped toyworld
captioner, as tests/test_caption_stage.py does.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from browser import open_report

from auditkit.analyses.base import SectionContext
from auditkit.analyses.exemplars_section import _fit, _ranked, encoded_size, exemplar_section
from auditkit.caption.stage import CaptionedPass, caption_images, captioner_record
from auditkit.caption.store import select_caption_units
from auditkit.caption.thumbnails import encode_thumbnail
from auditkit.errors import SpecError
from auditkit.models.loading import LoadedPipeline, load_pipeline
from auditkit.plan import plan_audit
from auditkit.report.inputs import read_run
from auditkit.rundir import RunDir
from auditkit.sampling import generate_images
from auditkit.spec import AuditSpec, dump_spec, parse_spec, spec_hash
from auditkit.spec.captions import ExemplarSpec

HOSTILE = "<img src=x onerror=alert(1)>"
BODY = """\
spec_version: 1
name: thumbs
model: {{id: {model}, device: cpu, steps: 2, guidance_scale: 3.0, resolution: 32}}
seeds: 3
batch_size: 4
axes:
  - name: gender
    templates: ["a photo of a {{term}}"]
    groups: {{man: [man], woman: [woman]}}
concepts:
  - name: jobs
    templates: ["a photo of a {{term}}", "a picture of a {{term}}"]
    terms: [doctor, nurse, "{hostile}"]
analyses: [lean]
statistics: {{bootstrap_resamples: 0}}
captions:
  captioner: {{kind: toyworld}}
  seeds: 2
{exemplars}"""


def _spec(model: Path | str, exemplars: str = "") -> AuditSpec:
    return parse_spec(BODY.format(model=model, hostile=HOSTILE, exemplars=exemplars))


class Counting:
    """A captioner wrapper that counts the images it reads."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.id, self.sha256, self.seen = inner, inner.id, inner.sha256, 0

    def caption(self, images: np.ndarray) -> list[str]:
        self.seen += len(images)
        return list(self.inner.caption(images))

    def read(self, images: np.ndarray) -> list[dict[str, str]]:
        return list(self.inner.read(images))


def _stage(spec: AuditSpec, root: Path, captioner: Any, pipeline: Any) -> Any:
    assert spec.captions is not None
    record = captioner_record(spec.captions.captioner, captioner)
    return caption_images(
        CaptionedPass(spec, plan_audit(spec), root, captioner, record, pipeline, False)
    )


@pytest.fixture(scope="module")
def tiny(tiny_pipeline_dirs: dict[str, Path]) -> tuple[Path, LoadedPipeline]:
    folder = tiny_pipeline_dirs["lcm"]
    return folder, load_pipeline(_spec(folder).model, cache_dir=folder.parent)


def test_exemplar_settings_default_leave_spec_hashes_unchanged_and_are_checked() -> None:
    spec = _spec("builtin:tiny-lcm")
    assert spec.captions is not None and spec.captions.exemplars == ExemplarSpec()
    # spec.yaml records the defaults; the hash leaves them out, as before they existed
    assert "\n  exemplars:\n" in dump_spec(spec) and "image_budget_mb: 4.0" in dump_spec(spec)
    at_default = _spec("builtin:tiny-lcm", "  exemplars: {seeds: 4, size: 96, quality: 80}\n")
    assert spec_hash(at_default) == spec_hash(spec)
    changed = _spec("builtin:tiny-lcm", "  exemplars: {seeds: 1, format: png}\n")
    assert spec_hash(changed) != spec_hash(spec) and "exemplars" in dump_spec(changed)
    assert parse_spec(dump_spec(changed)) == changed
    with pytest.raises(SpecError) as err:
        _spec("builtin:tiny-lcm", "  exemplars: {size: 4, format: gif}\n")
    problems = err.value.problems
    assert any(p.startswith("captions.exemplars.size (line 19)") for p in problems), problems
    assert any(p.startswith("captions.exemplars.format (line 19)") for p in problems), problems


def test_thumbnail_is_the_captioned_image_made_smaller() -> None:
    image = np.random.default_rng(0).integers(0, 256, size=(200, 100, 3), dtype=np.uint8)
    data, width, height = encode_thumbnail(image, ExemplarSpec(size=50, format="png"))
    from PIL import Image

    decoded = np.asarray(Image.open(io.BytesIO(data)))
    assert (width, height) == (25, 50) and decoded.shape == (50, 25, 3)
    small = np.zeros((20, 20, 3), dtype=np.uint8)
    data, width, height = encode_thumbnail(small, ExemplarSpec(size=96, format="webp"))
    assert (width, height) == (20, 20) and data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    data, _, _ = encode_thumbnail(small, ExemplarSpec(format="jpeg"))
    assert data[:2] == b"\xff\xd8"


def test_stage_keeps_thumbnails_of_the_first_seeds_and_remakes_them_without_recaptioning(
    tiny: tuple[Path, LoadedPipeline], tmp_path: Path
) -> None:
    from PIL import Image

    from auditkit.caption.models import load_captioner

    folder, loaded = tiny
    root = tmp_path / "captions"
    spec = _spec(folder, "  exemplars: {seeds: 1, format: png}\n")
    toyworld = Counting(load_captioner("toyworld"))
    stats = _stage(spec, root, toyworld, lambda: loaded)
    assert (stats.units_run, stats.thumbnails) == (12, 6)  # 3 concepts x 2 templates x 2 seeds
    table = pd.read_parquet(root / "exemplars.parquet")
    assert len(table) == 6 and set(table["seed"]) == {0} and set(table["role"]) == {"concept"}
    assert HOSTILE in set(table["term"])
    # each thumbnail is the image the captioner read (png: lossless), up to the last bit of
    # float rounding between batches of a different make-up
    units = [u for u in select_caption_units(spec, plan_audit(spec)) if u.seed == 0]
    images = generate_images(loaded, spec, units)
    for unit, image in zip(units, images, strict=True):
        row = table[table["unit_id"] == unit.unit_id].iloc[0]
        decoded = np.asarray(Image.open(io.BytesIO(row["image"])).convert("RGB"))
        difference = np.abs(decoded.astype(int) - image.astype(int))
        assert difference.max() <= 2 and difference.mean() < 0.05, difference.max()
        assert json.loads(row["readings"]).keys() == {"gender", "skin", "age", "occupation"}
    # more seeds and another format: the images are made again, the captions are not
    wider = _spec(folder, "  exemplars: {seeds: 2, format: webp}\n")
    again = _stage(wider, root, Counting(toyworld.inner), lambda: loaded)
    assert (again.units_run, again.thumbnails, again.units_skipped) == (0, 12, 12)
    table = pd.read_parquet(root / "exemplars.parquet")
    assert len(table) == 12 and set(table["mime"]) == {"image/webp"}
    assert len(list((root / "thumbnails").iterdir())) == 2  # png kept apart from webp

    def no_model() -> LoadedPipeline:
        raise AssertionError("the model was loaded although every thumbnail exists")

    done = _stage(wider, root, Counting(toyworld.inner), no_model)
    assert (done.units_run, done.thumbnails, done.model_loaded) == (0, 0, False)
    off = _spec(folder, "  exemplars: {seeds: 0}\n")
    _stage(off, root, Counting(toyworld.inner), no_model)
    assert not (root / "exemplars.parquet").exists()


def _frame(rows: int, per_row: int, cost: int) -> pd.DataFrame:
    """A ranked table of ``rows`` rows with ``per_row`` images of ``cost`` bytes each."""
    records = [
        {"row_rank": r, "rank": k, "cost": cost, "row_label": f"c{r}"}
        for r in range(rows)
        for k in range(per_row)
    ]
    return pd.DataFrame(records)


def test_marked_and_axis_prompts_get_a_row_per_group() -> None:
    from auditkit.analyses.exemplars_section import _row_label

    assert _row_label("concept", "", "doctor") == "doctor"
    assert _row_label("marked", "woman", "doctor") == "woman: doctor"
    assert _row_label("axis", "man", "man") == "man: man"
    assert _row_label("base", "", "") == "base prompt"


def test_budget_is_filled_breadth_first() -> None:
    ranked = _frame(rows=5, per_row=3, cost=100)
    chosen, used = _fit(ranked, budget=1000)
    picked = ranked.loc[sorted(chosen)]
    assert used == 1000 and len(chosen) == 10
    assert (picked.groupby("row_rank").size() >= 1).all()  # every row got its first image
    assert sorted(picked["rank"].value_counts().to_dict().items()) == [(0, 5), (1, 5)]
    chosen, used = _fit(ranked, budget=350)
    assert sorted(ranked.loc[sorted(chosen), "row_rank"]) == [0, 1, 2] and used == 300
    assert _fit(ranked, budget=10**9)[0] == set(range(15))
    assert encoded_size(b"x" * 3) == 4 and encoded_size(b"x" * 4) == 8


def test_report_shows_grids_guidance_and_summary_escaped_and_rerenders_identically(
    tiny_pipeline_dirs: dict[str, Path], tmp_path: Path
) -> None:
    from auditkit.run import run_audit

    path = tmp_path / "spec.yaml"
    path.write_text(
        BODY.format(
            model=tiny_pipeline_dirs["lcm"], hostile=HOSTILE, exemplars="  guidance: [1.0]\n"
        )
        + "report: {formats: [html, pdf]}\n"
    )
    run = run_audit(path, tmp_path / "run", cache_dir=tmp_path, show_progress=False).run_dir
    spec = parse_spec(path.read_text())
    read = read_run(run)
    section = exemplar_section(SectionContext(spec, read.tables, manifest=read.manifest))
    assert section is not None and section["shown"] == section["stored"] == 12
    assert section["captioner"] == "toyworld-captioner"
    stored = RunDir(run).table("exemplars")
    assert stored is not None and len(stored) == 12
    assert [r["label"] for r in section["grids"][0]["rows"]] == ["doctor", "nurse", HOSTILE]
    ranked = _ranked(pd.read_parquet(run / "captions" / "exemplars.parquet"), spec)
    first = ranked[ranked["rank"] == 0]
    assert list(first["seed"]) == [0, 0, 0]  # seeds before templates within a row
    assert list(ranked[ranked["row_label"] == "doctor"]["seed"]) == [0, 1, 0, 1]
    html = (run / "report" / "report.html").read_text(encoding="utf-8")
    assert html.count('src="data:image/webp;base64,') == 12
    assert HOSTILE not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    with open_report(run / "report" / "report.html") as visit:
        sizes = visit.page.eval_on_selector_all(
            "#exemplars img", "ns => ns.map(n => [n.naturalWidth, n.complete])"
        )
        assert len(sizes) == 12 and all(w == 32 and ok for w, ok in sizes), sizes
        assert visit.problems == [] and visit.dialogs == []
    from pypdf import PdfReader

    text = "".join(p.extract_text() for p in PdfReader(run / "report" / "report.pdf").pages)
    assert "Exemplar images" in text and "12 of 12 stored thumbnails shown" in text
    for heading in ("How much does guidance push the shares?", "Findings in detail"):
        assert heading in html and heading in text, heading
    assert "Guidance." in text and "95% CI" in text  # the executive summary's guidance line
    from click.testing import CliRunner

    from auditkit.cli import main

    first = (run / "report" / "report.html").read_bytes()
    assert CliRunner().invoke(main, ["report", str(run), "--format", "html"]).exit_code == 0
    assert (run / "report" / "report.html").read_bytes() == first  # identical re-render
    images = sum(len(p.images) for p in PdfReader(run / "report" / "report.pdf").pages)
    assert images >= 12
