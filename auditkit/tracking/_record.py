"""What a finished run sends to an experiment tracker, read from its run directory alone.

Every number comes from ``results/summary.json`` as the analysis wrote it (the gates block, each
axis's headline numbers, the output blocks): nothing is recomputed here. Provenance comes from
the sealed manifest, and every file logged is checked against the seal before it is named.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from auditkit.errors import UsageError
from auditkit.inert import markdown_text
from auditkit.rundir import RunDir

VALUE_LIMIT = 500
"""The longest parameter or tag value sent, longer ones cut with an ellipsis (MLflow refuses
parameter values over 6000 characters and cuts tag values at 8000)."""

_UNSAFE_KEY = re.compile(r"[^A-Za-z0-9_\-]+")


def key_part(text: str) -> str:
    """One segment of a metric or tag key made from spec text (a gate's name): letters, digits,
    ``_`` and ``-``, runs of other characters as one ``_`` (every tracker takes these, and none
    reads a ``.`` or ``/`` in them as nesting or a path)."""
    part = _UNSAFE_KEY.sub("_", text).strip("_")
    return part[:100] or "unnamed"


def seed_ranges(seeds: list[int]) -> str:
    """Seeds written compactly: ``[0, 1, 2, 3, 7]`` -> ``"0-3,7"``."""
    spans: list[list[int]] = []
    for seed in seeds:
        if spans and seed == spans[-1][1] + 1:
            spans[-1][1] = seed
        else:
            spans.append([seed, seed])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


@dataclass(frozen=True)
class TrackingRecord:
    """One audit run as an experiment tracker holds it.

    ``metrics``: numbers (gate values, per axis the largest |lean score| and the counts of
    significant and tested leans, per attribute the largest output-share gap, per axis the
    lean/output agreement); ``params``: the settings and provenance, as text; ``tags``: gate
    outcomes and the overall status, as text; ``artifacts``: (folder in the tracker, local file).
    """

    audit: str
    run_id: str
    model_id: str
    status: str
    """``pass`` (every gate passed), ``fail`` (one failed) or ``no gates``."""
    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]
    artifacts: list[tuple[str, Path]]
    description: str
    started_ms: int | None = None
    finished_ms: int | None = None
    gate_keys: dict[str, str] = field(default_factory=dict)
    """Gate name -> the key segment its metric and tag use."""
    gate_outcomes: dict[str, str] = field(default_factory=dict)
    """Gate key -> ``pass`` or ``fail``."""

    @property
    def default_name(self) -> str:
        """The tracker run's name when none is given: the audit and its run id."""
        return f"{self.audit}-{self.run_id}"


def _millis(stamp: Any) -> int | None:
    if not stamp:
        return None
    moment = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _number(value: Any) -> float | None:
    """A finite number of the summary (non-finite ones are written there as null)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _value_text(value: Any) -> str:
    text = str(value)
    return text if len(text) <= VALUE_LIMIT else text[: VALUE_LIMIT - 1] + "…"


def _gate_parts(
    gates: dict[str, Any] | None,
) -> tuple[dict[str, float], dict[str, str], dict[str, str], str]:
    """(metrics, gate key -> outcome, gate name -> key, overall status) of the summary's gates
    block."""
    metrics: dict[str, float] = {}
    outcomes: dict[str, str] = {}
    keys: dict[str, str] = {}
    if not gates:
        return metrics, outcomes, keys, "no gates"
    used: set[str] = set()
    for gate in gates["gates"]:
        base = key = key_part(str(gate["name"]))
        count = 1
        while key in used:  # two names that differ only in characters a key cannot hold
            count += 1
            key = f"{base}_{count}"
        used.add(key)
        keys[str(gate["name"])] = key
        value = _number(gate.get("value"))
        if value is not None:  # a gate whose results are absent has no value
            metrics[f"gate/{key}"] = value
        outcomes[key] = "pass" if gate["passed"] else "fail"
    metrics["gates/total"] = float(gates["total"])
    metrics["gates/failed"] = float(gates["failed"])
    return metrics, outcomes, keys, "pass" if gates["passed"] else "fail"


def _headline_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """Per axis its largest |lean score| and significance counts, per attribute the largest
    output-share gap, per axis the agreement of leans and shares: as the summary states them."""
    metrics: dict[str, float] = {}

    def put(key: str, value: Any) -> None:
        number = _number(value)
        if number is not None:
            metrics[key] = number

    for entry in summary.get("axes", []):
        axis = key_part(str(entry["axis"]))
        put(f"lean/{axis}/max_abs_score", entry.get("max_abs_score"))
        significance = entry.get("significance") or {}
        put(f"lean/{axis}/significant", significance.get("significant"))
        put(f"lean/{axis}/tested", significance.get("tested"))
    outputs = summary.get("outputs") or {}
    largest: dict[str, float] = {}
    for row in outputs.get("largest_gap", []):
        gap = _number(row.get("gap"))
        attribute = key_part(str(row["attribute"]))
        if gap is not None and gap > largest.get(attribute, -1.0):
            largest[attribute] = gap
    for attribute, gap in largest.items():
        metrics[f"output_gap/{attribute}"] = gap
    for row in outputs.get("agreement", []):
        put(f"agreement/{key_part(str(row['axis']))}/rho", row.get("rho"))
    return metrics


def _params(summary: dict[str, Any], manifest: dict[str, Any]) -> dict[str, str]:
    model = summary.get("model") or {}
    seeds = [int(s) for s in manifest.get("seeds") or []]
    raw: dict[str, Any] = {
        "audit": summary["audit"],
        "auditkit_run_id": summary["run_id"],
        "spec_hash": summary.get("spec_hash"),
        "plan_hash": summary.get("plan_hash"),
        "model_id": model.get("id"),
        "model_revision": model.get("revision"),
        "pipeline": model.get("pipeline"),
        "seeds": seed_ranges(seeds) if seeds else None,
        "auditkit_version": manifest.get("auditkit_version"),
        "device": manifest.get("device"),
        "dtype": manifest.get("dtype"),
    }
    for name, value in (summary.get("settings") or {}).items():
        raw["n_seeds" if name == "seeds" else name] = value
    return {k: _value_text(v) for k, v in raw.items() if v is not None}


def _description(summary: dict[str, Any], model_id: str, status: str) -> str:
    """The run's description in Markdown: the findings and gate messages, shown as text."""
    verdict = {"pass": "every gate passes", "fail": "gates fail", "no gates": "no gates"}[status]
    lines = [
        f"auditkit audit `{markdown_text(str(summary['audit']))}` of "
        f"`{markdown_text(model_id)}` (run `{markdown_text(str(summary['run_id']))}`): {verdict}.",
        "",
    ]
    lines += [f"- {markdown_text(str(finding))}" for finding in summary.get("findings", [])]
    gates = summary.get("gates")
    if gates:
        lines += ["", "Gates:", ""]
        lines += [
            f"- {'PASS' if g['passed'] else 'FAIL'}: {markdown_text(str(g['message']))}"
            for g in gates["gates"]
        ]
    return "\n".join(lines)


def tracking_record(run_dir: Path | RunDir) -> TrackingRecord:
    """The record of a finished, complete run (the caller has checked that it is one:
    ``require_results``). Every file named in ``artifacts`` has been read and checked against
    the run's seal; a file that differs raises :class:`~auditkit.rundir.integrity.CorruptFile`.
    """
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    summary = run.read_json("summary")
    manifest = run.read_json("manifest")
    model_id = str((summary.get("model") or {}).get("id") or "")
    gate_metrics, outcomes, gate_keys, status = _gate_parts(summary.get("gates"))
    metrics = {**gate_metrics, **_headline_metrics(summary)}
    git = manifest.get("git") or {}
    tags = {
        "auditkit.status": status,
        "auditkit.audit": str(summary["audit"]),
        "auditkit.run_id": str(summary["run_id"]),
        "auditkit.model": model_id,
        **{f"auditkit.gate.{key}": outcome for key, outcome in outcomes.items()},
    }
    if git.get("commit"):
        tags["auditkit.git_commit"] = str(git["commit"]) + ("-dirty" if git.get("dirty") else "")
    if not run.spec.is_file():
        raise UsageError(
            f"{run.spec} is missing: a complete run keeps the resolved spec it ran.",
            hint=f"rerun 'auditkit run SPEC --out {run.root}' to write it again.",
        )
    artifacts: list[tuple[str, Path]] = [("", run.manifest)]
    for folder, path in (
        ("", run.spec),
        ("results", run.summary),
        ("report", run.report_html),
        ("report", run.report_pdf),
    ):
        if path.is_file():
            run.read_checked(path)  # altered since the run was sealed: refused, naming it
            artifacts.append((folder, path))
    return TrackingRecord(
        audit=str(summary["audit"]),
        run_id=str(summary["run_id"]),
        model_id=model_id,
        status=status,
        metrics=metrics,
        params=_params(summary, manifest),
        tags={k: _value_text(v) for k, v in tags.items()},
        artifacts=artifacts,
        description=_description(summary, model_id, status),
        started_ms=_millis(manifest.get("started_utc")),
        finished_ms=_millis(manifest.get("finished_utc")),
        gate_keys=gate_keys,
        gate_outcomes=outcomes,
    )
