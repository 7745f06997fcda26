"""auditkit history: the run registry of a model line and its trend report.

Five toyworld runs make one model line: the session's two default audits (``runs``) as its first
and last checkpoints, and three cheap audits between them (a reduced spec: 4 seeds, the gender
and skin axes, one concept template, captions of 4 seeds, no guidance sweep, causal check or
discovery) of toyworld-balanced, toyworld-dit and toyworld-biased, the last without two
occupations. The report opens offline in Chromium with every chart drawn, names the first
checkpoint where each gate failed (checked against each run's own gates.json), and says which
axis and concepts were dropped and from which runs. Hostile names never run in the report, a
remote run is read through the run directory module, and bad inputs are located errors.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from browser import open_report
from click.testing import CliRunner, Result
from report_fixtures import HOSTILE_PAYLOADS, HOSTILE_TEXT, build_run_dir

from auditkit.cli import main

ROOT = Path(__file__).resolve().parents[1]
LINE = "toyworld-line"
DROPPED_TERMS = ("chef", "farmer")


def cheap_spec(
    model: str, drop: tuple[str, ...] = (), source: str = "toyworld.yaml"
) -> dict[str, Any]:
    """The default audit (or ``source``, another spec of the same audit), reduced to what a
    model line's trend needs (each run well under a minute on two cores)."""
    spec = yaml.safe_load((ROOT / "audits" / source).read_text())
    spec["model"]["id"] = model
    spec["probe"].pop("hook")  # each family's default: the DiT has no unet.mid_block
    spec["seeds"] = 4
    spec["axes"] = [a for a in spec["axes"] if a["name"] in ("gender", "skin")]
    spec.pop("crossings")
    concepts = spec["concepts"][0]
    if "library" in concepts:  # a library entry: its own templates, less the dropped terms
        concepts["templates"] = ["a photo of a {term}"]
        if drop:
            concepts["exclude"] = list(drop)
    else:
        concepts["templates"] = concepts["templates"][:1]
        concepts["terms"] = [t for t in concepts["terms"] if t not in drop]
    spec["analyses"] = ["lean"]
    spec["statistics"] = {"bootstrap_resamples": 200}
    spec["captions"] = {"captioner": {"kind": "toyworld"}, "seeds": 4, "exemplars": {"seeds": 0}}
    return spec


@pytest.fixture(scope="session")
def line(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The five runs of the model line, by step, and the seconds the three cheap ones took."""
    from auditkit.run import run_audit

    root = tmp_path_factory.mktemp("history-line")
    cheap = {
        200: ("balanced", cheap_spec("builtin:toyworld-balanced")),
        # written from prompt libraries alone (audits/toyworld-libraries.yaml)
        300: ("dit", cheap_spec("builtin:toyworld-dit", source="toyworld-libraries.yaml")),
        400: ("biased", cheap_spec("builtin:toyworld-biased", DROPPED_TERMS)),
    }
    made: dict[int, Path] = {100: runs["balanced"], 500: runs["biased"]}
    seconds: dict[str, float] = {}
    for step, (name, spec) in cheap.items():
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        start = time.perf_counter()
        made[step] = run_audit(path, root / name, show_progress=False, render=False).run_dir
        seconds[name] = time.perf_counter() - start
    return {"runs": dict(sorted(made.items())), "seconds": seconds, "root": root}


def history(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, ["history", *args], env=env)


@pytest.fixture(scope="session")
def registered(line: dict[str, Any]) -> dict[str, Any]:
    """The five runs added to one registry, and its trend report."""
    registry = line["root"] / "history.duckdb"
    for step, run in line["runs"].items():
        added = history("add", str(run), "--registry", str(registry), "--model-line", LINE,
                        "--step", str(step))  # fmt: skip
        assert added.exit_code == 0, added.output
    out = line["root"] / "report"
    report = history("report", "--out", str(out), "--registry", str(registry))
    assert report.exit_code == 0, report.output
    return {**line, "registry": registry, "report": out / "history.html", "output": report.output}


def expected_first_failures(runs: dict[int, Path]) -> dict[str, int | None]:
    """Per gate name, the first step whose own gates.json says it failed (None: never)."""
    first: dict[str, int | None] = {}
    for step, run in runs.items():
        for gate in json.loads((run / "results" / "gates.json").read_text())["gates"]:
            first.setdefault(gate["name"], None)
            if not gate["passed"] and first[gate["name"]] is None:
                first[gate["name"]] = step
    return first


def test_a_spec_written_from_libraries_runs_and_records_them(line: dict[str, Any]) -> None:
    """The step-300 run's spec names only libraries (toyworld's own): the run records each
    library's version and content hash in its resolved spec, its manifest and its report."""
    from auditkit.prompts import find_library

    run = line["runs"][300]
    expected = {
        f"{lib}@1": find_library(f"{lib}@1").sha256
        for lib in ("toyworld-occupations", "toyworld-gender", "toyworld-skin")
    }
    manifest = json.loads((run / "manifest.json").read_text())
    recorded = {f"{u['library']}@{u['version']}": u["sha256"] for u in manifest["libraries"]}
    assert recorded == expected  # age was left out of the reduced spec
    resolved = yaml.safe_load((run / "spec.yaml").read_text())
    assert [u["used_in"] for u in resolved["libraries"]] == ["concepts[0]", "axes[0]", "axes[1]"]
    assert resolved["concepts"][0]["terms"][:2] == ["nurse", "teacher"]
    report = CliRunner().invoke(main, ["report", str(run)])
    assert report.exit_code == 0, report.output
    html = (run / "report" / "report.html").read_text()
    assert "Prompt libraries used" in html
    for ref, sha in expected.items():
        assert ref in html and sha[:12] in html


def test_the_registry_holds_the_line_in_step_order(registered: dict[str, Any]) -> None:
    from auditkit.history import open_registry

    with open_registry(registered["registry"]) as registry:
        runs = registry.runs(LINE)
        gates = registry.gates(LINE)
    assert list(runs["step"]) == [100, 200, 300, 400, 500]
    assert list(runs["checkpoint"]) == [
        f"builtin:toyworld-{name}" for name in ("balanced", "balanced", "dit", "biased", "biased")
    ]
    assert runs["spec_hash"].nunique() == 5 and runs["weights_hash"].nunique() == 3
    assert set(runs["rule"]) == {"min_effect"} and runs["started_utc"].notna().all()
    assert len(gates) == 15 and set(gates["metric"]) == {
        "max_abs_lean",
        "significant_leans",
        "max_output_gap",
    }
    manifest = json.loads((registered["runs"][300] / "manifest.json").read_text())
    assert runs.loc[2, "run_id"] == manifest["run_id"]


def test_a_gate_passes_early_and_fails_later(registered: dict[str, Any]) -> None:
    first = expected_first_failures(registered["runs"])
    assert any(step is not None and step > 100 for step in first.values()), first


@pytest.mark.browser
def test_the_trend_report_opens_offline_with_every_chart_drawn(
    registered: dict[str, Any],
) -> None:
    with open_report(registered["report"]) as visit:
        text = visit.page.inner_text("body")
        first_failures = visit.page.inner_text(".first-failures")
        dropped = visit.page.eval_on_selector_all(
            "table.dropped tbody tr",
            "rows => rows.map(r => [...r.querySelectorAll('td, th')].map(c => c.innerText))",
        )
    assert visit.chart_states and all(
        state == "drawn" and has_svg for _, state, has_svg in visit.chart_states
    ), visit.chart_states
    charts = {name for name, _, _ in visit.chart_states}
    assert {"chart-gates", "chart-lean-0", "chart-lean-1", "chart-shares-0"} <= charts
    assert not visit.problems and visit.blocked == []
    names = {100: "toyworld-balanced", 200: "toyworld-balanced", 300: "toyworld-dit"}
    names |= {400: "toyworld-biased", 500: "toyworld-biased"}
    for gate, step in expected_first_failures(registered["runs"]).items():
        line = next(li for li in first_failures.splitlines() if li.startswith(gate))
        if step is None:
            assert "never failed" in line, line
        else:
            # two checkpoints share a model id, so the report numbers them
            point = f"builtin:{names[step]}"
            same = [s for s in names if names[s] == names[step]]
            point += f" ({step // 100})" if len(same) > 1 else ""
            assert f"first failed at {point}" in line, line
            assert f"gate {gate}: first failed at {point}" in registered["output"]
    assert "Leans that grew most" in text and "Gates over time" in text
    # the default audits' age axis and two occupations the last cheap run left out
    rows = {(r[0], r[1].split(" (")[0]): r[2] for r in dropped}
    assert set(rows) == {("axis", "age"), ("concept", "chef"), ("concept", "farmer")}
    assert rows["axis", "age"] == ", ".join(
        f"builtin:toyworld-{n}" for n in ("balanced (2)", "dit", "biased (4)")
    )
    assert rows["concept", "chef"] == rows["concept", "farmer"] == "builtin:toyworld-biased (4)"


def test_show_prints_the_line_in_order_with_gates(registered: dict[str, Any]) -> None:
    shown = history("show", "--registry", str(registered["registry"]))
    assert shown.exit_code == 0, shown.output
    run_ids = [
        json.loads((run / "manifest.json").read_text())["run_id"]
        for run in registered["runs"].values()
    ]
    rows = [next(line for line in shown.output.splitlines() if i in line) for i in run_ids]
    assert [row.split()[0] for row in rows] == ["1", "2", "3", "4", "5"]
    assert all(f" {step} " in row for step, row in zip(registered["runs"], rows, strict=True))
    assert "dropped axis age" in shown.output and "dropped concept chef" in shown.output
    for gate, step in expected_first_failures(registered["runs"]).items():
        assert f"{gate}: {'never failed' if step is None else 'first failed at'}" in shown.output


def test_adding_a_run_again_updates_it(registered: dict[str, Any], tmp_path: Path) -> None:
    from auditkit.history import open_registry

    registry = tmp_path / "copy.duckdb"
    registry.write_bytes(registered["registry"].read_bytes())
    run = registered["runs"][300]
    again = history("add", str(run), "--model-line", LINE, "--step", "350",
                    env={"AUDITKIT_HISTORY": str(registry)})  # fmt: skip
    assert again.exit_code == 0 and again.output.startswith("updated:"), again.output
    with open_registry(registry) as opened:
        runs = opened.runs(LINE)
        assert len(runs) == 5 and 350 in set(runs["step"])
        assert len(opened.gates(LINE)) == 15


# --- hostile names, remote runs and bad inputs: synthetic run directories (no model) ---------


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("history-hostile")
    runs = [build_run_dir(root / str(seed), hostile="all", seed=seed) for seed in (0, 1)]
    registry = root / "history.duckdb"
    for step, run in enumerate(runs):
        added = history("add", str(run), "--registry", str(registry), "--step", str(step),
                        "--model-line", HOSTILE_TEXT, "--checkpoint", HOSTILE_TEXT)  # fmt: skip
        assert added.exit_code == 0, added.output
    report = history("report", "--out", str(root / "out"), "--registry", str(registry))
    assert report.exit_code == 0, report.output
    return {"registry": registry, "report": root / "out" / "history.html"}


@pytest.mark.browser
def test_hostile_names_never_run_in_the_trend_report(hostile: dict[str, Path]) -> None:
    with open_report(hostile["report"]) as visit:
        page = visit.page
        assert visit.calls() == [] and visit.dialogs == []
        # the payloads reach the page only as text and inside the charts' JSON data block
        assert visit.injected() == {"elements": 0, "scripts": 0, "data": 1}
        text = page.evaluate("() => document.body.innerText")
        states = {state for _, state, _ in visit.chart_states}
    assert states == {"drawn"} and not visit.problems
    for key in ("script", "attribute", "jinja", "template-literal"):
        assert HOSTILE_PAYLOADS[key] in text, key


def test_a_remote_run_is_read_through_the_run_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsspec = pytest.importorskip("fsspec")
    from auditkit.history import line_history, open_registry
    from auditkit.rundir import RunDir, remote

    monkeypatch.setenv("AUDITKIT_RUN_CACHE", str(tmp_path / "cache"))
    local = build_run_dir(tmp_path / "local", seed=0)
    url = f"memory://auditkit-history/{tmp_path.name}/run"
    fs = fsspec.filesystem("memory")
    fs.put(str(local), url.split("://", 1)[1], recursive=True)
    other = build_run_dir(tmp_path / "other", seed=1)  # its tables were written before stamps:
    current = RunDir(other)  # stamped at this version, DuckDB reads it in place
    current.write_table("lean", current.table("lean", required=True))
    registry = tmp_path / "history.duckdb"
    try:
        for step, given in ((1, url), (2, str(other))):
            added = history("add", given, "--registry", str(registry), "--model-line", "m",
                            "--step", str(step))  # fmt: skip
            assert added.exit_code == 0, added.output
        with open_registry(registry) as opened:
            assert list(opened.runs("m")["location"]) == [url, str(other.resolve())]
            found = line_history(opened, "m")
        assert found.sources.arrow == {"lean": [url]}
        assert found.sources.files == {"lean": [str(other.resolve())]}
        assert set(found.leans["position"]) == {1, 2} and not found.dropped
    finally:
        remote.detach_all()
        fs.rm(url.split("://", 1)[1], recursive=True)


@pytest.fixture()
def bad(tmp_path: Path) -> Iterator[dict[str, Path]]:
    yield {
        "empty": tmp_path / "empty",
        "running": build_run_dir(tmp_path / "running", status="running"),
        "run": build_run_dir(tmp_path / "run"),
        "registry": tmp_path / "r.duckdb",
    }


def test_bad_inputs_are_located_errors(bad: dict[str, Path], tmp_path: Path) -> None:
    from auditkit import history as library
    from auditkit.cli import history as command

    assert command.REGISTRY_ENV == library.REGISTRY_ENV  # the CLI's copy (no import at --help)
    bad["empty"].mkdir()
    registry = str(bad["registry"])
    cases = {
        "not a run": (["add", str(bad["empty"]), "--registry", registry], str(bad["empty"])),
        "missing": (["add", str(tmp_path / "nowhere"), "--registry", registry], "nowhere"),
        "unfinished": (["add", str(bad["running"]), "--registry", registry], "not a complete run"),
        "one step, two runs": (
            ["add", str(bad["run"]), str(bad["running"]), "--step", "1", "--registry", registry],
            "--step",
        ),
        "no registry": (["show", "--registry", registry], registry),
    }
    for name, (args, where) in cases.items():
        result = history(*args)
        assert result.exit_code == 2, (name, result.output)
        assert where in result.output and "Traceback" not in result.output, (name, result.output)
    assert not bad["registry"].exists()  # nothing was added by a refused command

    not_duckdb = tmp_path / "not.duckdb"
    not_duckdb.write_text("a text file")
    result = history("show", "--registry", str(not_duckdb))
    assert result.exit_code == 2 and str(not_duckdb) in result.output, result.output

    assert history("add", str(bad["run"]), "--registry", registry).exit_code == 0
    unknown = history("report", "--out", str(tmp_path / "o"), "--registry", registry,
                      "--model-line", "nope")  # fmt: skip
    assert unknown.exit_code == 2 and "'nope'" in unknown.output, unknown.output


def test_an_axis_defined_with_other_groups_is_dropped() -> None:
    """Swapped groups flip a lean's sign: such an axis is not compared, and the report says
    where it differs."""
    import pandas as pd

    from auditkit.history.trends import shared_coverage

    rows = [
        ("a", "axis", "", "gender", "man,woman"),
        ("b", "axis", "", "gender", "woman,man"),
        ("a", "axis", "", "skin", "light,dark"),
        ("b", "axis", "", "skin", "light,dark"),
        ("a", "concept", "jobs", "nurse", ""),
        ("b", "concept", "jobs", "nurse", ""),
        ("b", "concept", "jobs", "pilot", ""),
    ]
    coverage = pd.DataFrame(rows, columns=["location", "kind", "set_name", "name", "detail"])
    axes, concepts, dropped = shared_coverage(coverage, ["a", "b"], {"a": "A", "b": "B"})
    assert axes == ["skin"] and concepts == [("jobs", "nurse")]
    assert [(d.kind, d.name, d.missing_from) for d in dropped] == [
        ("axis", "gender", ["B"]),
        ("concept", "pilot", ["A"]),
    ]
    assert dropped[0].why == "its groups differ between runs (man,woman in A; woman,man in B)"
    assert dropped[1].why == "not in the spec of that run"
