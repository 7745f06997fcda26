"""Your own reader (``kind: custom``): the spec, the adapter contract, identity, every refusal,
an entry point, and an audit on the tiny LCM pipeline read by it (captions, the guidance sweep,
the causal check and the calibration).

The reader is the complete example of docs/readers.md (a linear layer on the mean colour that
reads gender), taken from the doc itself so the doc stays true.
"""

from __future__ import annotations

import hashlib
import json
import re
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import save_file

from auditkit.caption.custom import CustomReader, load_custom_reader
from auditkit.caption.models import captioner_values, deferred_captioner, load_captioner
from auditkit.caption.stage import captioner_record, load_spec_captioner
from auditkit.errors import ModelLoadError, SpecError
from auditkit.spec import dump_spec, load_spec, parse_spec, spec_hash

DOC = Path(__file__).resolve().parents[1] / "docs" / "readers.md"
ADAPTER = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)[0]
WEIGHTS = {
    "head.weight": torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
    "head.bias": torch.zeros(2),
}

SPEC = """\
spec_version: 1
name: custom-reader
model: {{id: {model}, device: cpu, steps: 2, guidance_scale: 3.0, resolution: 32}}
seeds: 2
batch_size: 4
centring: {{reference: set_mean}}
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
  captioner: {captioner}
  guidance: [1.0]
  causal: {{alphas: [-1.0, 1.0], seeds: 1}}
"""
CAPTIONER = "{kind: custom, id: reader, adapter: 'reader.py:build'}"


def _reader(folder: Path, adapter: str = ADAPTER, weights: dict[str, Any] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "reader.py").write_text(adapter, encoding="utf-8")
    save_file(WEIGHTS if weights is None else weights, str(folder / "weights.safetensors"))
    return folder


def _colours() -> np.ndarray:
    """A red image and a blue one (read as man and woman by the example reader)."""
    images = np.zeros((2, 8, 8, 3), np.uint8)
    images[0, ..., 0] = 200
    images[1, ..., 2] = 200
    return images


def _load(folder: Path, adapter: str = "reader.py:build") -> CustomReader:
    return load_custom_reader(folder, adapter=adapter, device="cpu")


# --- the spec --------------------------------------------------------------------------------


def test_spec_names_a_local_folder_and_an_adapter(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.format(model="builtin:tiny-lcm", captioner=CAPTIONER))
    spec = load_spec(path)
    assert spec.captions is not None
    captioner = spec.captions.captioner
    # a custom reader's id is a folder even without './' (never a hub id)
    assert captioner.id == str((tmp_path / "reader").resolve())
    assert captioner.adapter == "reader.py:build"
    assert parse_spec(dump_spec(spec)) == spec
    # the new key at its default leaves every other spec's hash as it was (tests/test_spec.py
    # holds the golden hashes); a resolved spec hashes as the spec it came from
    assert spec_hash(parse_spec(dump_spec(spec))) == spec_hash(spec)


@pytest.mark.parametrize(
    ("captioner", "message"),
    [
        ("{kind: custom, id: r}", "needs 'adapter'"),
        ("{kind: custom, adapter: 'r.py:f'}", "needs 'id'"),
        ("{kind: custom, id: r, adapter: reader.py}", "'FILE.py:FUNCTION'"),
        ("{kind: custom, id: r, adapter: '../x.py:f'}", "'FILE.py:FUNCTION'"),
        ("{kind: custom, id: r, adapter: '/x.py:f'}", "'FILE.py:FUNCTION'"),
        ("{kind: custom, id: r, adapter: 'x.py:1f'}", "'FILE.py:FUNCTION'"),
        ("{kind: custom, id: r, adapter: 'r.py:f', dtype: float16}", "remove ['dtype']"),
        (
            "{kind: custom, id: r, adapter: 'r.py:f', attributes: {g: {a: [a]}}}",
            "remove ['attributes']",
        ),
        ("{kind: clip, id: r, adapter: 'r.py:f', attributes: {g: {a: [a], b: [b]}}}", "only"),
        ("{kind: toyworld, adapter: 'r.py:f'}", "takes no options"),
        ("{kind: custom, id: ../r, adapter: 'r.py:f'}", "outside the spec's folder"),
    ],
)
def test_bad_custom_reader_specs_are_located(captioner: str, message: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(SPEC.format(model="builtin:tiny-lcm", captioner=captioner), base_dir=Path("/x"))
    problems = err.value.problems
    assert any(p.startswith("captions.captioner") and message in p for p in problems), problems


def test_entry_point_syntax_is_accepted() -> None:
    text = SPEC.format(
        model="builtin:tiny-lcm", captioner="{kind: custom, id: r, adapter: 'entrypoint:acme-g'}"
    )
    assert parse_spec(text).captions.captioner.adapter == "entrypoint:acme-g"  # type: ignore[union-attr]


# --- loading, reading, identity --------------------------------------------------------------


def test_reader_loads_reads_and_names_itself(tmp_path: Path) -> None:
    folder = _reader(tmp_path / "gender")
    reader = load_captioner("custom", folder, adapter="reader.py:build", device="auto")
    assert isinstance(reader, CustomReader) and reader.id == "gender"
    assert reader.attributes == {"gender": ("man", "woman")}
    assert reader.read(_colours()) == [{"gender": "man"}, {"gender": "woman"}]
    assert reader.caption(_colours()) == ["man", "woman"]
    assert reader.read(_colours()[:0]) == []
    assert captioner_values(reader, 32) == {"gender": {"man", "woman"}}
    # the documented sha256: every file of the folder, as sha256sum lines sorted by path
    lines = "".join(
        f"{hashlib.sha256((folder / name).read_bytes()).hexdigest()}  {name}\n"
        for name in ("reader.py", "weights.safetensors")
    )
    assert reader.sha256 == hashlib.sha256(lines.encode()).hexdigest()
    # a custom reader is never deferred: only the built reader says what it reads
    deferred = deferred_captioner("custom", folder, adapter="reader.py:build", device="cpu")
    assert isinstance(deferred, CustomReader) and deferred.sha256 == reader.sha256


def test_a_caption_then_a_read_of_the_same_images_runs_the_reader_once(tmp_path: Path) -> None:
    reader = _load(_reader(tmp_path / "r"))
    calls = []
    inner = reader.reader.read
    reader.reader.read = lambda images: calls.append(len(images)) or inner(images)
    images = _colours()
    assert reader.caption(images) == ["man", "woman"]
    assert reader.read(images) == [{"gender": "man"}, {"gender": "woman"}]
    assert calls == [2]
    reader.read(images[::-1].copy())
    assert calls == [2, 2]


def test_sha256_follows_the_adapter_the_weights_and_every_file(tmp_path: Path) -> None:
    base = _load(_reader(tmp_path / "a")).sha256
    assert _load(_reader(tmp_path / "same")).sha256 == base  # content, not place
    changed_adapter = _load(_reader(tmp_path / "b", adapter=ADAPTER + "\n# v2\n")).sha256
    other = {**WEIGHTS, "head.bias": torch.tensor([0.0, 1e-3])}
    changed_weight = _load(_reader(tmp_path / "c", weights=other)).sha256
    folder = _reader(tmp_path / "d")
    (folder / "labels.json").write_text("{}")
    with_labels = _load(folder).sha256
    (folder / ".DS_Store").write_text("x")
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "reader.pyc").write_bytes(b"x")
    assert _load(folder).sha256 == with_labels  # hidden files and caches do not count
    assert len({base, changed_adapter, changed_weight, with_labels}) == 4
    (folder / "sub").mkdir()
    (folder / "sub" / ".hidden.py").write_text(ADAPTER)  # a hidden adapter still counts
    hidden = _load(folder, "sub/.hidden.py:build").sha256
    (folder / "sub" / ".hidden.py").write_text(ADAPTER + "\n# v2\n")
    assert len({hidden, _load(folder, "sub/.hidden.py:build").sha256, with_labels}) == 3


def test_the_captioner_key_holds_the_adapter_reference(tmp_path: Path) -> None:
    folder = _reader(tmp_path / "r")
    (folder / "reader.py").write_text(ADAPTER + "\nbuild_again = build\n", encoding="utf-8")
    records = []
    for adapter in ("reader.py:build", "reader.py:build_again"):
        text = SPEC.format(
            model="builtin:tiny-lcm",
            captioner=f"{{kind: custom, id: {folder}, adapter: '{adapter}', device: cpu}}",
        )
        spec = parse_spec(text).captions.captioner  # type: ignore[union-attr]
        records.append(captioner_record(spec, load_spec_captioner(spec, deferred=True)))
    first, second = records
    assert first["sha256"] == second["sha256"] and first["key"] != second["key"]
    assert first["options"] == {"adapter": "reader.py:build", "device": "cpu"}
    assert first["kind"] == "custom" and first["id"] == "r"


def test_an_installed_entry_point_is_a_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    (site / "acme_readers").mkdir(parents=True)
    (site / "acme_readers" / "__init__.py").write_text("")
    (site / "acme_readers" / "gender.py").write_text(ADAPTER)
    info = site / "acme_readers-1.2.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-readers\nVersion: 1.2.0\n")
    (info / "entry_points.txt").write_text(
        "[auditkit.readers]\nacme-gender = acme_readers.gender:build\n"
    )
    monkeypatch.syspath_prepend(str(site))
    folder = tmp_path / "weights"
    folder.mkdir()
    save_file(WEIGHTS, str(folder / "weights.safetensors"))
    reader = _load(folder, "entrypoint:acme-gender")
    assert reader.id == "acme-gender@1.2.0"
    assert reader.read(_colours()) == [{"gender": "man"}, {"gender": "woman"}]
    weights = hashlib.sha256((folder / "weights.safetensors").read_bytes()).hexdigest()
    source = hashlib.sha256(ADAPTER.encode()).hexdigest()
    lines = f"{weights}  weights.safetensors\n{source}  entrypoint:acme-gender@1.2.0\n"
    assert reader.sha256 == hashlib.sha256(lines.encode()).hexdigest()
    with pytest.raises(ModelLoadError, match="no installed package declares"):
        _load(folder, "entrypoint:acme-age")


# --- refusals -------------------------------------------------------------------------------


def _adapter(body: str) -> str:
    """An adapter whose build returns ``Reader()``, the class ``body`` defines."""
    return textwrap.dedent(body) + "\n\ndef build(folder, weights, device):\n    return Reader()\n"


READS = "    attributes = {'gender': ['man', 'woman']}\n    def read(self, images):\n"


@pytest.mark.parametrize(
    ("adapter", "message"),
    [
        ("import nothing_here\n", "importing the adapter 'reader.py' raised ModuleNotFoundError"),
        ("def other(folder, weights, device):\n    pass\n", "has no function 'build'"),
        ("def build(folder, weights, device):\n    raise KeyError('head')\n", "raised KeyError"),
        (_adapter("class Reader:\n    attributes = {'g': ['a']}\n"), "has no read() method"),
        (_adapter("class Reader:\n    def read(self, images): ...\n"), "no 'attributes'"),
        (
            _adapter(
                "class Reader:\n    attributes = {'g': ['a', 'unknown']}\n"
                "    def read(self, images): ...\n"
            ),
            "'unknown' is reserved",
        ),
        (
            _adapter(
                "class Reader:\n    attributes = {'g': 'ab'}\n    def read(self, images): ...\n"
            ),
            "list of strings",
        ),
        (
            _adapter(
                "class Reader:\n    attributes = {'g': []}\n    def read(self, images): ...\n"
            ),
            "g: no values",
        ),
    ],
)
def test_a_broken_adapter_is_refused_by_name(tmp_path: Path, adapter: str, message: str) -> None:
    folder = _reader(tmp_path / "broken", adapter=adapter)
    with pytest.raises(ModelLoadError) as err:
        _load(folder)
    assert message in str(err.value) and str(folder) in str(err.value), err.value


@pytest.mark.parametrize(
    ("read", "message"),
    [
        ("        return [{'gender': 'man'}]", "read() returned 1 items for 2 images"),
        ("        return {'gender': 'man'}", "read() returned a dict for 2 images"),
        ("        return [{'gender': 1}] * len(images)", "gender = 1 for image 0, not a string"),
        ("        return [{'gender': 'girl'}] * len(images)", "'girl' for image 0, not among"),
        ("        return [{}] * len(images)", "missing ['gender']"),
        ("        return [{'gender': 'man', 'age': 'old'}] * len(images)", "undeclared ['age']"),
        ("        raise RuntimeError('out of memory')", "read() raised RuntimeError"),
    ],
)
def test_a_reader_that_breaks_the_contract_is_stopped(
    tmp_path: Path, read: str, message: str
) -> None:
    folder = _reader(tmp_path / "r", adapter=_adapter("class Reader:\n" + READS + read))
    reader = _load(folder)
    with pytest.raises(ModelLoadError) as err:
        reader.read(_colours())
    assert message in str(err.value) and "reader.py:build" in str(err.value), err.value


def test_unknown_is_always_a_value_and_a_bad_caption_is_stopped(tmp_path: Path) -> None:
    body = "class Reader:\n" + READS + "        return [{'gender': 'unknown'}] * len(images)\n"
    reader = _load(_reader(tmp_path / "u", adapter=_adapter(body)))
    assert reader.read(_colours()) == [{"gender": "unknown"}] * 2
    body += "    def caption(self, images):\n        return ['x']\n"
    reader = _load(_reader(tmp_path / "c", adapter=_adapter(body)))
    with pytest.raises(ModelLoadError, match=r"caption\(\) returned 1 items for 2 images"):
        reader.caption(_colours())


def test_folders_without_safe_weights_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no such folder"):
        _load(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "reader.py").write_text(ADAPTER)
    with pytest.raises(ModelLoadError, match=r"no \*\.safetensors weight file"):
        _load(empty)
    pickled = _reader(tmp_path / "pickled")
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04.")
    with pytest.raises(ModelLoadError, match=r"pickled weights \(pytorch_model\.bin\)"):
        _load(pickled)
    corrupt = _reader(tmp_path / "corrupt")
    (corrupt / "weights.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="not a readable safetensors"):
        _load(corrupt)
    twice = _reader(tmp_path / "twice")
    save_file(WEIGHTS, str(twice / "more.safetensors"))
    with pytest.raises(ModelLoadError, match=r"'head\.bias' is in both"):
        _load(twice)
    no_file = _reader(tmp_path / "nofile")
    with pytest.raises(ModelLoadError, match=r"adapter file 'other\.py' is not in the folder"):
        _load(no_file, "other.py:build")


# --- an audit read by the reader -------------------------------------------------------------


def test_an_audit_read_by_a_custom_reader_records_it_and_survives_a_broken_adapter(
    tiny_pipeline_dirs: dict[str, Path], tmp_path: Path
) -> None:
    from auditkit.cli import main
    from auditkit.run import run_audit

    broken = ADAPTER.replace("return [{", "return [{'age': 'old', ")
    folder = _reader(tmp_path / "reader", adapter=broken)
    path = tmp_path / "spec.yaml"
    labelled = tmp_path / "labelled"  # a calibration set the reader reads perfectly
    labelled.mkdir()
    rows = ["file,gender"]
    for i in range(12):
        name, gender = f"{i}.png", ("man", "woman")[i % 2]
        Image.fromarray(np.full((32, 32, 3), _colours()[i % 2, 0, 0])).save(labelled / name)
        rows.append(f"{name},{gender}")
    (labelled / "labels.csv").write_text("\n".join(rows) + "\n")
    text = SPEC.format(model=tiny_pipeline_dirs["lcm"], captioner=CAPTIONER)
    path.write_text(text + "  calibration: {folder: labelled}\n")
    run_dir = tmp_path / "run"
    args = ["run", str(path), "--out", str(run_dir), "--no-progress", "--cache-dir", str(tmp_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "undeclared ['age']" in result.output and str(folder) in result.output
    failed = json.loads((run_dir / "manifest.json").read_text())
    assert failed["status"] == "failed" and failed["failed_stage"] == "calibrate"  # read first
    assert failed["stages"]["extract"]["units_run"] > 0
    # extraction met the broken reader first, as it decoded the captioned units: it stopped
    # reading, not extracting, and left the error to the reader's own stages
    assert failed["stages"]["extract"]["images_read"] == 0
    assert "undeclared ['age']" in failed["stages"]["extract"]["images_error"]

    (folder / "reader.py").write_text(ADAPTER, encoding="utf-8")  # fixed: extraction is kept
    out = run_audit(path, run_dir, cache_dir=tmp_path, show_progress=False, render=False)
    manifest = out.manifest
    assert manifest["status"] == "complete"
    assert manifest["stages"]["extract"]["units_run"] == 0
    captioner = manifest["captioner"]
    reader = _load(folder)
    assert captioner["kind"] == "custom" and captioner["id"] == "reader"
    assert captioner["sha256"] == reader.sha256
    assert captioner["options"] == {"adapter": "reader.py:build", "device": "auto"}
    assert manifest["stages"]["caption"]["units_run"] == 4
    # the guidance sweep and the causal check read with it too (the causal check steers the
    # gender axis: the reader's attributes say it reads man and woman)
    assert manifest["stages"]["guidance"]["scales"]
    assert [a["axis"] for a in manifest["stages"]["causal"]["axes"]] == ["gender"]
    # and the calibration: the reader's confusion on the labelled images
    accuracy = pd.read_parquet(run_dir / "captions" / "reader_accuracy.parquet")
    assert set(accuracy["group"]) == {"man", "woman"} and (accuracy["accuracy"] == 1.0).all()
    saved = json.loads((run_dir / "captions" / "captioner.json").read_text())
    assert saved["captioner"] == captioner
    captions = pd.read_parquet(run_dir / "captions" / "captions.parquet")
    readings = pd.read_parquet(run_dir / "captions" / "readings.parquet")
    assert len(captions) == 4 and set(captions["caption"]) <= {"man", "woman"}
    assert set(readings["attribute"]) == {"gender"}
    assert list(readings["value"]) == list(captions["caption"])
