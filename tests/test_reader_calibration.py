"""The captioner's calibration and the shares corrected for its errors (issue 17).

Unit tests of the pieces (labelled sets, the misread wrapper, the confusion tables, the
correction of the outputs table), and the acceptance test on toyworld-biased: a reader that
misreads 20% of women as men, calibrated on a toyworld draw, gives corrected shares within 0.05
of the shares the true reader read from the same images, where its raw shares are not.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from auditkit.analyze.confusion import UNREAD, calibration_tables, correct_output_shares
from auditkit.caption.misread import MisreadCaptioner
from auditkit.errors import SpecError, UsageError
from auditkit.labelled import load_labelled
from auditkit.spec import load_spec
from auditkit.spec.labelled import LabelledImagesSpec

ROOT = Path(__file__).resolve().parents[1]
GROUPS = {"gender": ["man", "woman"], "skin": ["light", "dark"]}


class _FixedReader:
    """Reads every image as the values it was given, in turn."""

    id = "fixed"
    sha256 = "0" * 64

    def __init__(self, values: list[dict[str, str]]) -> None:
        self.values = values
        self.at = 0

    def read(self, images: np.ndarray) -> list[dict[str, str]]:
        out = self.values[self.at : self.at + len(images)]
        self.at += len(images)
        return [dict(v) for v in out]

    def caption(self, images: np.ndarray) -> list[str]:
        return ["a photo"] * len(images)


def _write_images(folder: Path, rows: list[tuple[str, str, str]], size: int = 40) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, _, _ in rows:
        pixels = rng.integers(0, 255, size=(size, size + 8, 3), dtype=np.uint8)
        if name.endswith((".png", ".jpg")):
            Image.fromarray(pixels).save(folder / name)
    frame = pd.DataFrame(rows, columns=["file", "gender", "skin"])
    frame.to_csv(folder / "labels.csv", index=False)
    return folder


def _load(folder: Path, model_id: str = "builtin:tiny-sd") -> object:
    section = LabelledImagesSpec(folder=str(folder))
    return load_labelled(section, resolution=32, groups=GROUPS, model_id=model_id, where="x")


# --- labelled sets ----------------------------------------------------------------------------


def test_a_labelled_folder_loads_cropped_resized_and_digested(tmp_path: Path) -> None:
    rows = [("a.png", "man", "light"), ("b.png", "woman", ""), ("c.png", "", "dark")]
    folder = _write_images(tmp_path / "set", rows)
    found = _load(folder)
    assert found.images.shape == (3, 32, 32, 3) and found.images.dtype == np.uint8
    assert found.attributes == ["gender", "skin"]
    assert list(found.of("gender", "woman")) == [1] and list(found.of("skin", "dark")) == [2]
    assert found.digest == _load(folder).digest
    (folder / "labels.csv").write_text("file,gender,skin\na.png,woman,light\nb.png,woman,\n")
    assert _load(folder).digest != found.digest


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ("file,gender\na.png,nonbinary-typo\n", "line 2: gender is 'nonbinary-typo'"),
        ("file,gender\nmissing.png,man\n", "line 2: cannot read 'missing.png'"),
        ("file,gender\n../outside.png,man\n", "not a file inside the folder"),
        ("file,gender\nnotes.txt,man\n", "is not an image file"),
        ("name,gender\na.png,man\n", "has no 'file' column"),
        ("file,gender\n", "lists no image"),
    ],
)
def test_a_bad_labelled_folder_is_refused_with_its_line(
    tmp_path: Path, labels: str, expected: str
) -> None:
    folder = _write_images(tmp_path / "set", [("a.png", "man", "light")])
    (folder / "notes.txt").write_text("not an image")
    (folder / "labels.csv").write_text(labels)
    with pytest.raises(UsageError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        _load(folder)


def test_a_missing_folder_or_labels_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no folder"):
        _load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no labels file"):
        _load(tmp_path / "empty")


def test_a_toyworld_draw_is_labelled_and_only_for_toyworld_models() -> None:
    section = LabelledImagesSpec(toyworld=40, seed=3)
    found = load_labelled(
        section, resolution=32, groups=GROUPS, model_id="builtin:toyworld-biased", where="x"
    )
    assert found.images.shape == (40, 32, 32, 3)
    assert set(found.labels["gender"]) == {"man", "woman"}
    assert {"gender", "skin", "age", "occupation"} <= set(found.attributes)
    with pytest.raises(UsageError, match="needs a toyworld model"):
        load_labelled(section, resolution=32, groups=GROUPS, model_id="builtin:tiny-sd", where="x")


def test_the_spec_resolves_a_calibration_folder_and_refuses_bad_sections(tmp_path: Path) -> None:
    spec = yaml.safe_load((ROOT / "audits" / "tiny-demo.yaml").read_text())
    spec["captions"] = {"captioner": {"kind": "toyworld"}, "calibration": {"folder": "cal"}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    loaded = load_spec(path)
    assert loaded.captions is not None and loaded.captions.calibration is not None
    assert loaded.captions.calibration.folder == str((tmp_path / "cal").resolve())
    for section, message in (
        ({"folder": "../elsewhere"}, "leads outside the spec's folder"),
        ({"folder": "cal", "toyworld": 100}, "exactly one of"),
        ({}, "exactly one of"),
    ):
        spec["captions"]["calibration"] = section
        path.write_text(yaml.safe_dump(spec))
        with pytest.raises(SpecError, match=message):
            load_spec(path)
    spec["captions"]["calibration"] = {"toyworld": 100}
    spec["captions"]["captioner"]["misread"] = {
        "attribute": "gender",
        "group": "woman",
        "read_as": "woman",
        "share": 0.2,
    }
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(SpecError, match="nothing would be misread"):
        load_spec(path)


# --- the misread wrapper and the tables -------------------------------------------------------


def test_the_misread_wrapper_misreads_exactly_its_share_spread_evenly() -> None:
    values = [{"gender": "woman" if i % 3 else "man", "skin": "dark"} for i in range(300)]
    reader = MisreadCaptioner(
        _FixedReader(values), attribute="gender", group="woman", read_as="man", share=0.2
    )
    images = np.zeros((300, 4, 4, 3), np.uint8)
    reads = reader.read(images[:150]) + reader.read(images[150:])
    women = [i for i in range(300) if i % 3]
    flipped = [i for i in women if reads[i]["gender"] == "man"]
    assert len(flipped) == len(women) // 5  # exactly 20% of the 200 read as woman
    assert all(reads[i]["gender"] == "man" for i in range(0, 300, 3))  # men untouched
    assert all(r["skin"] == "dark" for r in reads)
    assert max(np.diff(flipped)) <= 8  # spread over the run, every fifth woman
    assert "misread(gender:woman->man@0.2)" in reader.id and reader.sha256 == "0" * 64


def test_calibration_tables_count_the_confusion_and_flag_a_useless_reader() -> None:
    labels = pd.DataFrame(
        {"file": [str(i) for i in range(8)], "gender": ["man"] * 4 + ["woman"] * 4}
    )
    reads = [{"gender": v} for v in ["man", "man", "man", "woman", "man", "woman", "woman", "x"]]
    confusion, accuracy = calibration_tables(labels, reads, {"gender": ["man", "woman"]})
    cell = confusion.set_index(["true_group", "read_as"])["count"]
    assert cell[("man", "man")] == 3 and cell[("man", "woman")] == 1
    assert cell[("woman", "man")] == 1 and cell[("woman", UNREAD)] == 1
    acc = accuracy.set_index("group")
    assert acc.loc["man", "accuracy"] == 0.75 and acc.loc["woman", "accuracy"] == 0.5
    assert acc.loc["woman", "n_unread"] == 1 and bool(acc["usable"].all())
    coin = [{"gender": "man"}] * 8  # reads everyone as a man: it cannot separate them
    _, useless = calibration_tables(labels, coin, {"gender": ["man", "woman"]})
    assert not useless["usable"].any() and "singular" in useless["note"].iloc[0]


def _outputs(counts: dict[str, tuple[int, int]]) -> pd.DataFrame:
    rows = []
    for concept, (men, women) in counts.items():
        n = men + women
        for group, k in (("man", men), ("woman", women)):
            rows.append(
                {
                    **{"concept_set": "jobs", "concept": concept, "attribute": "gender"},
                    **{"group": group, "count": k, "n_images": n, "share": k / n},
                    **{"reference": 0.5},
                }
            )
    return pd.DataFrame(rows)


def _confusion(rows: dict[str, dict[str, int]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"attribute": "gender", "true_group": t, "read_as": r, "count": k}
            for t, cells in rows.items()
            for r, k in cells.items()
        ]
    )


def test_correcting_the_outputs_table_inverts_the_confusion_or_says_why_not() -> None:
    outputs = _outputs({"nurse": (30, 70), "pilot": (90, 10)})
    good = _confusion({"man": {"man": 200, "woman": 0}, "woman": {"man": 50, "woman": 200}})
    fixed = correct_output_shares(outputs, good, resamples=200)
    nurse = fixed[(fixed["concept"] == "nurse") & (fixed["group"] == "woman")].iloc[0]
    assert nurse["share_basis"] == "corrected"
    assert nurse["corrected"] == pytest.approx(0.7 / 0.8)  # 70% read of a reader at 80%
    assert nurse["corrected_low"] <= nurse["corrected"] <= nurse["corrected_high"]
    assert nurse["max_abs_gap_corrected"] == pytest.approx(0.7 / 0.8 - 0.5)
    blind = _confusion({"man": {"man": 100, "woman": 100}, "woman": {"man": 100, "woman": 100}})
    refused = correct_output_shares(outputs, blind, resamples=200)
    assert set(refused["share_basis"]) == {"raw"} and refused["corrected"].isna().all()
    assert refused["correction"].str.startswith("refused: ").all()
    none = correct_output_shares(outputs, None)
    assert set(none["correction"]) == {"no calibration"}


# --- acceptance on toyworld-biased -------------------------------------------------------------


def test_a_reader_that_misreads_20_percent_of_women_is_corrected_to_the_true_readers_shares(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    """The default audit's run (read by the true toyworld captioner) is rerun with a reader
    that reads 20% of the women it sees as men, calibrated on 400 toyworld images: the same
    images (same seeds and trajectories), read again. Its corrected gender shares land within
    0.05 of the true reader's for every occupation; its raw shares do not."""
    from auditkit.run import run_audit

    spec = yaml.safe_load((ROOT / "audits" / "toyworld.yaml").read_text())
    spec["captions"] = {
        "captioner": {
            "kind": "toyworld",
            "misread": {"attribute": "gender", "group": "woman", "read_as": "man", "share": 0.2},
        },
        "calibration": {"toyworld": 400},
    }
    spec["gates"] = []
    spec["analyses"] = ["lean"]  # what the agreement table needs; the rest would take a minute
    spec["report"]["formats"] = ["html"]
    path = tmp_path / "misread.yaml"
    path.write_text(yaml.safe_dump(spec))
    shutil.copytree(runs["biased"], tmp_path / "run")
    outcome = run_audit(path, tmp_path / "run", show_progress=False)
    true = pd.read_parquet(runs["biased"] / "results" / "outputs.parquet")
    misread = pd.read_parquet(outcome.run_dir / "results" / "outputs.parquet")
    keys = ["concept", "group"]
    true = true[(true["attribute"] == "gender") & (true["group"] == "woman")].set_index(keys)
    misread = misread[(misread["attribute"] == "gender") & (misread["group"] == "woman")]
    misread = misread.set_index(keys)
    assert (misread["share_basis"] == "corrected").all()
    raw_error = (misread["share"] - true["share"]).abs()
    corrected_error = (misread["corrected"] - true["share"]).abs()
    print(
        pd.DataFrame(
            {"true": true["share"], "raw": misread["share"], "corrected": misread["corrected"]}
        )
    )
    assert corrected_error.max() <= 0.05, corrected_error
    assert raw_error.max() > 0.05 and (raw_error > 0.05).sum() >= 3, raw_error
    covered = (misread["corrected_low"] <= true["share"]) & (
        true["share"] <= misread["corrected_high"]
    )
    assert covered.all()
    accuracy = pd.read_parquet(outcome.run_dir / "captions" / "reader_accuracy.parquet")
    women = accuracy[(accuracy["attribute"] == "gender") & (accuracy["group"] == "woman")]
    assert float(women["accuracy"].iloc[0]) == pytest.approx(0.8, abs=0.01)
    agreement = pd.read_parquet(outcome.run_dir / "results" / "agreement.parquet")
    assert set(agreement["share_basis"]) == {"corrected"}
    html = (outcome.run_dir / "report" / "report.html").read_text()
    assert 'id="reader"' in html and "How the images were read" in html
    assert "corrected for the captioner&#39;s measured errors" in html or (
        "corrected for the captioner's measured errors" in html
    )
