"""Export an audit for a model card: a Markdown section plus the ``model-index`` metadata
(evaluation results) that ``huggingface_hub.ModelCard`` parses, linking the report by hash.

The numbers come only from the run directory: the summary (findings, gates) and the lean
table (largest |lean| and significant leans per axis). The report is named by the sha256 of
its HTML file and the results by a hash of their tables, so a reader of the card can check
that the report they were given is the one the card describes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from auditkit.errors import UsageError
from auditkit.inert import markdown_text
from auditkit.provenance import sha256_file
from auditkit.rundir import RunDir, write_bytes_atomic

TASK_TYPE = "text-to-image"
DATASET_TYPE = "auditkit-audit"


def _axis_metrics(lean: pd.DataFrame | None) -> list[dict[str, Any]]:
    if lean is None or lean.empty:
        return []
    out = []
    for axis, rows in lean.groupby("axis", sort=False):
        out.append(
            {
                "type": f"max_abs_lean_{axis}",
                "name": f"Largest |lean score| along {axis}",
                "value": round(float(rows["score"].abs().max()), 4),
            }
        )
        if "significant" in rows.columns:
            out.append(
                {
                    "type": f"significant_leans_{axis}",
                    "name": f"Significant leans along {axis} (of {len(rows)})",
                    "value": int(rows["significant"].sum()),
                }
            )
    return out


def model_card_parts(run_dir: Path) -> tuple[dict[str, Any], str]:
    """(metadata for the card's YAML header, the Markdown section) of one run directory."""
    from huggingface_hub import EvalResult, ModelCardData

    run = RunDir(run_dir)
    if not run.is_finished():
        raise UsageError(
            f"{str(run_dir)!r} has no results/summary.json: not a finished auditkit run.",
            hint=f"run 'auditkit run SPEC --out {run_dir}' first.",
        )
    summary = run.read_json("summary")
    manifest = run.read_json("manifest") if run.manifest.is_file() else {}
    lean = run.table("lean")
    report = run.report_html
    report_hash = sha256_file(report) if report.is_file() else None
    model_id = str((manifest.get("model") or {}).get("id") or summary["model"]["id"])
    audit = str(summary["audit"])
    version = str(manifest.get("auditkit_version", ""))
    evals = [
        EvalResult(
            task_type=TASK_TYPE,
            task_name="Text-to-image bias audit (h-space)",
            dataset_type=DATASET_TYPE,
            dataset_name=f"auditkit audit '{audit}'",
            dataset_config=str(summary.get("spec_hash", ""))[:16],
            metric_type=m["type"],
            metric_name=m["name"],
            metric_value=m["value"],
            verified=False,
            dataset_revision=str(summary.get("run_id")),
        )
        for m in _axis_metrics(lean)
    ]
    card_data = ModelCardData(model_name=model_id, eval_results=evals or None)
    metadata = card_data.to_dict()
    gates = summary.get("gates")
    finished = markdown_text(str(manifest.get("finished_utc", ""))[:10])
    lines = [
        "## Bias audit (auditkit)",
        "",
        f"Audited with auditkit {markdown_text(version)} on {finished}: "
        f"audit `{audit}`, run `{summary.get('run_id')}`, spec sha256 "
        f"`{summary.get('spec_hash')}`.",
        "",
    ]
    if report_hash:
        lines += [
            f"Full report: `report/report.html`, sha256 `{report_hash}` "
            "(check it with `sha256sum report.html`).",
            "",
        ]
    lines += [f"Results hash: `{run.results_hash()}`.", ""]
    summary_lines = _executive_lines(run_dir, summary, model_id)
    if summary_lines:
        lines += ["### Summary", "", *summary_lines]
    lines += ["### Findings", ""]
    lines += [f"- {markdown_text(finding)}" for finding in summary.get("findings", [])]
    if gates:
        verdict = "all pass" if gates["passed"] else f"{gates['failed']} of {gates['total']} fail"
        lines += ["", f"### Gates ({verdict})", ""]
        lines += [
            f"- {'PASS' if g['passed'] else 'FAIL'}: {markdown_text(g['message'])}"
            for g in gates["gates"]
        ]
    lines += [
        "",
        "### Limitations",
        "",
        "Attributes are read from generated images (perceived, not self-identified); binary "
        "axes simplify; prompt wording and captioners carry biases of their own; results on "
        "different hardware are close but not bit-identical. Association in h-space is not "
        "causation.",
        "",
    ]
    return metadata, "\n".join(lines)


def _executive_lines(run_dir: Path, summary: dict[str, Any], model_id: str) -> list[str]:
    """The report's executive summary as Markdown paragraphs (none without a readable spec)."""
    from auditkit.analyses import slices
    from auditkit.analyze.summary import read_extra_tables
    from auditkit.report.executive import executive_summary
    from auditkit.spec import parse_spec

    run = RunDir(run_dir)
    if not run.spec.is_file():
        return []
    spec = parse_spec(run.spec.read_text(encoding="utf-8"), source=str(run.spec))
    slices()  # the causal check's and discovery's slices declare the tables read here
    tables = {name: run.table(name) for name in ("lean", "outputs", "agreement", "amplification")}
    paragraphs = executive_summary(
        spec, tables, read_extra_tables(run_dir), summary.get("gates"), model_id
    )
    return [
        line
        for p in paragraphs
        for line in (f"**{markdown_text(p['topic'])}.** {markdown_text(p['text'])}", "")
    ]


def write_model_card(run_dir: Path, out: Path) -> Path:
    """Write a model card file (YAML header + section) that huggingface_hub can load."""
    metadata, section = model_card_parts(run_dir)
    header = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out, f"---\n{header}---\n\n{section}".encode())
    return out
