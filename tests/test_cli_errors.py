"""Every bad input: exit code 2 (or 3), one located paragraph, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from auditkit.cli import main

GOOD = """\
spec_version: 1
name: ok
model:
  id: builtin:tiny-sd
  device: cpu
seeds: 2
axes:
  - name: gender
    templates: ["a photo of a {term}"]
    groups:
      man: [man]
      woman: [woman]
concepts:
  - name: jobs
    templates: ["a photo of a {term}"]
    terms: [doctor, nurse]
"""


def _invoke(tmp_path: Path, text: str, *args: str) -> tuple[int, str]:
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    result = CliRunner().invoke(main, [*(args or ("validate",)), str(spec)])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result.exit_code, result.output


def test_good_spec_validates(tmp_path: Path) -> None:
    code, out = _invoke(tmp_path, GOOD)
    assert code == 0, out
    assert "valid" in out


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("invalid yaml", GOOD.replace("seeds: 2", "seeds: [1, 2"), "invalid YAML at line"),
        (
            "unknown key",
            GOOD.replace("  device: cpu", "  device: cpu\n  stepz: 3"),
            "model.stepz (line 6): unknown key 'stepz'; did you mean 'steps'?",
        ),
        ("wrong type", GOOD.replace("seeds: 2", "seeds: many"), "seeds (line 6)"),
        (
            "empty prompt set",
            GOOD.replace("terms: [doctor, nurse]", "terms: []"),
            "concepts[0].terms (line 16)",
        ),
        ("zero seeds", GOOD.replace("seeds: 2", "seeds: 0"), "seeds (line 6): zero seeds"),
        (
            "one group",
            GOOD.replace("      woman: [woman]\n", ""),
            "axes[0].groups (line 10): an axis needs at least two groups, got 1",
        ),
        (
            "template slot",
            GOOD.replace('"a photo of a {term}"]\n    groups', '"a photo of a"]\n    groups'),
            "must contain '{term}' exactly once",
        ),
    ],
)
def test_bad_spec_exits_2_with_location(
    tmp_path: Path, name: str, text: str, expected: str
) -> None:
    code, out = _invoke(tmp_path, text)
    assert code == 2, (name, out)
    assert expected in out, (name, out)
    assert out.startswith("auditkit: error:")


def test_all_problems_listed_at_once(tmp_path: Path) -> None:
    text = GOOD.replace("seeds: 2", "seeds: 0").replace("terms: [doctor, nurse]", "terms: []")
    code, out = _invoke(tmp_path, text)
    assert code == 2
    assert "2 problems found" in out and "seeds (line 6)" in out and "terms (line 16)" in out


def test_missing_spec_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_missing_model_folder(tmp_path: Path) -> None:
    text = GOOD.replace("builtin:tiny-sd", "./no-such-model")
    code, out = _invoke(tmp_path, text, "run", "--out", str(tmp_path / "run"))
    assert code == 2, out
    assert "does not exist" in out and "no-such-model" in out


def test_folder_that_is_not_a_pipeline(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "config.json").write_text("{}")
    text = GOOD.replace("builtin:tiny-sd", "./weights")
    code, out = _invoke(tmp_path, text, "run", "--out", str(tmp_path / "run"))
    assert code == 2, out
    assert "not a diffusers pipeline" in out and "model_index.json" in out


def test_missing_hook_point_suggests_matches(
    tiny_pipeline_dirs: dict[str, Path], tmp_path: Path
) -> None:
    text = GOOD.replace("builtin:tiny-sd", str(tiny_pipeline_dirs["sd"])).replace(
        "seeds: 2", "probe: {hook: unet.mid_blocks}\nseeds: 2"
    )
    code, out = _invoke(tmp_path, text, "run", "--out", str(tmp_path / "run"))
    assert code == 2, out
    assert "unet.mid_blocks" in out and "did you mean 'unet.mid_block'" in out
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "failed"


def test_missing_device_exits_3(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the missing-device path cannot be shown")
    text = GOOD.replace("device: cpu", "device: cuda")
    code, out = _invoke(tmp_path, text, "run", "--out", str(tmp_path / "run"))
    assert code == 3, out
    assert "no CUDA device" in out and "How to fix" in out


def test_missing_optional_dependency_exits_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from report_fixtures import build_run_dir

    run_dir = build_run_dir(tmp_path / "run")
    monkeypatch.setitem(sys.modules, "weasyprint", None)  # import fails as if not installed
    result = CliRunner().invoke(main, ["report", str(run_dir), "--format", "pdf"])
    assert result.exit_code == 3, result.output
    assert "weasyprint" in result.output.lower() and "pip install" in result.output


def test_report_on_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert "not an auditkit run directory" in result.output


def test_schema_prints_json_schema() -> None:
    result = CliRunner().invoke(main, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert "spec_version" in schema["required"]
    assert "hook" in json.dumps(schema)


def test_help_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys, auditkit.cli;"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'pandas') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
