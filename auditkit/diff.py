"""Compare two audits of two checkpoints run with the same spec: per-lean deltas with
intervals, regressions flagged, and gates relative to the baseline.

A *regression* is a lean that grew in magnitude by more than ``tolerance`` (same direction or
not) with a delta whose 95% interval excludes 0. The tolerance defaults to the band of the
runs' rule (``statistics.min_effect``, the smallest lean that counts) when both runs were
judged by the ``min_effect`` rule, so a diff and a report call the same size of change
important; runs of the legacy rules keep 0.05. The compared statistic is the one the runs'
rule judged (``statistics.effect``: the lean score, or the position between marked variants);
``measure`` names it, and ``score_base``/``score_new`` hold it. ``newly_significant`` marks
leans that are significant in the new run and were not in the base. The delta's interval
treats the two runs as independent: each run's seed-bootstrap interval gives a standard error
(interval width / 3.92), and the two add in quadrature. Runs without intervals get no delta
interval, and then growth beyond the tolerance alone counts as a regression.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from auditkit.errors import UsageError
from auditkit.rundir import RunDir
from auditkit.spec.audit import AuditSpec

DIFF_SCHEMA_VERSION = 1
Z95 = 1.959963984540054
DEFAULT_TOLERANCE = 0.05
MEASUREMENT_EXCLUDED = ("name", "description", "model", "gates", "report")
"""Spec fields that may differ between the two runs: names, the checkpoint itself, gates and
report settings. Everything else (prompts, seeds, sampling, probe, analyses, statistics) must
match, or the two runs do not measure the same thing."""
MODEL_FIELDS_THAT_MUST_MATCH = ("pipeline", "steps", "guidance_scale", "resolution", "scheduler")


@dataclass
class DiffResult:
    """Deltas, regressions and gate outcomes of one comparison."""

    table: pd.DataFrame
    spec_differences: list[str]
    gates: list[dict[str, Any]] = field(default_factory=list)
    tolerance: float = DEFAULT_TOLERANCE

    @property
    def regressions(self) -> pd.DataFrame:
        """Rows flagged as regressions."""
        return self.table[self.table["regression"]]

    @property
    def passed(self) -> bool:
        """Whether every diff gate passed."""
        return all(g["passed"] for g in self.gates)


def spec_differences(base: AuditSpec, new: AuditSpec) -> list[str]:
    """Dotted paths where the two specs measure differently (empty when comparable)."""
    a, b = base.model_dump(mode="json"), new.model_dump(mode="json")
    out: list[str] = []
    for key in sorted(set(a) | set(b)):
        if key in MEASUREMENT_EXCLUDED:
            continue
        _walk(a.get(key), b.get(key), key, out)
    for key in MODEL_FIELDS_THAT_MUST_MATCH:
        if a["model"].get(key) != b["model"].get(key):
            out.append(f"model.{key}")
    return out


def _walk(a: Any, b: Any, path: str, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            _walk(a.get(key), b.get(key), f"{path}.{key}", out)
    elif a != b:
        out.append(path)


def _standard_error(frame: pd.DataFrame, measure: str = "score") -> np.ndarray:
    if {f"{measure}_ci_low", f"{measure}_ci_high"} <= set(frame.columns):
        high = frame[f"{measure}_ci_high"].to_numpy(float)
        return np.asarray((high - frame[f"{measure}_ci_low"].to_numpy(float)) / (2 * Z95))
    return np.full(len(frame), np.nan)


def compared_measure(base: pd.DataFrame, new: pd.DataFrame) -> str:
    """The statistic both runs were judged by (``score`` unless both judged another)."""
    from auditkit.analyze.significance import effect_of

    first, second = effect_of(base), effect_of(new)
    return first if first == second else "score"


def compare_leans(
    base: pd.DataFrame,
    new: pd.DataFrame,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    measure: str = "score",
) -> pd.DataFrame:
    """One row per (axis, concept set, concept) present in both lean tables, comparing the
    column ``measure`` (held in ``score_base``/``score_new``, named by ``measure``)."""
    keys = ["axis", "concept_set", "concept"]
    left = base.assign(se=_standard_error(base, measure))
    right = new.assign(se=_standard_error(new, measure))
    if measure != "score":
        left = left.drop(columns="score").rename(columns={measure: "score"})
        right = right.drop(columns="score").rename(columns={measure: "score"})
    extra = [c for c in ("significant", "toward") if c in left.columns and c in right.columns]
    merged = left[[*keys, "score", "se", *extra]].merge(
        right[[*keys, "score", "se", *extra]], on=keys, suffixes=("_base", "_new")
    )
    delta = merged["score_new"] - merged["score_base"]
    se = pd.Series(
        np.sqrt(merged["se_base"].to_numpy(float) ** 2 + merged["se_new"].to_numpy(float) ** 2),
        index=merged.index,
    )
    growth = merged["score_new"].abs() - merged["score_base"].abs()
    low, high = delta - Z95 * se, delta + Z95 * se
    clear = ((low > 0) | (high < 0)).where(se.notna(), True)
    newly = (
        merged["significant_new"].astype(bool) & ~merged["significant_base"].astype(bool)
        if "significant" in extra
        else pd.Series(False, index=merged.index)
    )
    out = merged.assign(
        measure=measure,
        newly_significant=newly,
        delta=delta,
        delta_ci_low=low,
        delta_ci_high=high,
        growth=growth,
        regression=(growth > tolerance) & clear,
        improvement=(growth < -tolerance) & clear,
    )
    return out.drop(columns=["se_base", "se_new"]).reset_index(drop=True)


def default_tolerance(base: pd.DataFrame, new: pd.DataFrame) -> float:
    """The band of the runs' rule when both were judged by ``min_effect`` with one band, else
    :data:`DEFAULT_TOLERANCE`."""
    from auditkit.analyze.significance import rule_of

    (rule_a, band_a), (rule_b, band_b) = rule_of(base), rule_of(new)
    if rule_a == rule_b == "min_effect" and band_a is not None and band_a == band_b:
        return float(band_a)
    return DEFAULT_TOLERANCE


def load_lean(run_dir: Path) -> pd.DataFrame:
    """A run's lean table, or a clear usage error."""
    lean = RunDir(run_dir).table("lean")
    if lean is None:
        raise UsageError(
            f"{str(run_dir)!r} has no results/lean.parquet: not a finished auditkit run with "
            "the lean analysis.",
            hint=f"run 'auditkit run SPEC --out {run_dir}' first.",
        )
    return lean


def diff_runs(
    base_dir: Path,
    new_dir: Path,
    *,
    tolerance: float | None = None,
    max_growth: float | None = None,
    max_regressions: int | None = None,
    allow_different_specs: bool = False,
) -> DiffResult:
    """Compare two run directories; refuses different specs unless allowed (and says why)."""
    from auditkit.spec import load_run_spec

    base_spec, new_spec = load_run_spec(base_dir), load_run_spec(new_dir)
    differences = spec_differences(base_spec, new_spec)
    if differences and not allow_different_specs:
        raise UsageError(
            "The two runs were made with specs that measure differently, so their leans are "
            f"not comparable; they differ in: {', '.join(differences[:12])}"
            + (f" and {len(differences) - 12} more" if len(differences) > 12 else "")
            + ".",
            hint="audit both checkpoints with the same spec (only model.id, model.revision, "
            "name, description, gates and report may differ), or pass "
            "--allow-different-specs to compare anyway.",
        )
    base_lean, new_lean = load_lean(base_dir), load_lean(new_dir)
    if tolerance is None:
        tolerance = default_tolerance(base_lean, new_lean)
    measure = compared_measure(base_lean, new_lean)
    table = compare_leans(base_lean, new_lean, tolerance=tolerance, measure=measure)
    if table.empty:
        raise UsageError("The two runs share no (axis, concept) lean to compare.")
    result = DiffResult(table, differences, tolerance=tolerance)
    if max_growth is not None:
        worst = table.iloc[int(table["growth"].to_numpy().argmax())]
        value = float(worst["growth"])
        result.gates.append(
            _gate(
                f"no lean grows by more than {max_growth:g}",
                value,
                max_growth,
                f"'{worst['concept']}' on '{worst['axis']}' ({float(worst['score_base']):+.3f} "
                f"-> {float(worst['score_new']):+.3f})",
            )
        )
    if max_regressions is not None:
        regressions = result.regressions
        names = ", ".join(f"'{r.concept}' on '{r.axis}'" for r in regressions.head(5).itertuples())
        result.gates.append(
            _gate(
                f"at most {max_regressions} regressions",
                float(len(regressions)),
                float(max_regressions),
                names or None,
            )
        )
    return result


def _gate(name: str, value: float, bound: float, worst: str | None) -> dict[str, Any]:
    passed = value <= bound
    verdict = "passes" if passed else f"FAILS by {value - bound:.3g}"
    message = f"{name}: {verdict}: value {value:.4g}" + (f"; worst: {worst}" if worst else "")
    return {"name": name, "value": value, "threshold": bound, "passed": passed, "message": message}


def diff_summary(result: DiffResult, base_dir: Path, new_dir: Path) -> dict[str, Any]:
    """The JSON form of a comparison (written as diff.json)."""

    def num(value: Any) -> float | None:
        number = float(value)
        return None if math.isnan(number) else round(number, 6)

    def run_info(run_dir: Path) -> dict[str, Any]:
        manifest = RunDir(run_dir).read_json("manifest")
        model = manifest.get("model") or {}
        return {
            "run_dir": str(run_dir),
            "run_id": manifest.get("run_id"),
            "model": model.get("id"),
            "revision": model.get("revision"),
            "spec_hash": manifest.get("spec_hash"),
        }

    rows = []
    for r in result.table.to_dict("records"):
        rows.append(
            {
                "axis": r["axis"],
                "concept_set": r["concept_set"],
                "concept": r["concept"],
                "measure": r["measure"],
                "score_base": num(r["score_base"]),
                "score_new": num(r["score_new"]),
                "delta": num(r["delta"]),
                "delta_ci": [num(r["delta_ci_low"]), num(r["delta_ci_high"])],
                "growth": num(r["growth"]),
                "regression": bool(r["regression"]),
                "improvement": bool(r["improvement"]),
                "newly_significant": bool(r["newly_significant"]),
            }
        )
    return {
        "schema_version": DIFF_SCHEMA_VERSION,
        "kind": "auditkit.diff",
        "base": run_info(base_dir),
        "new": run_info(new_dir),
        "spec_differences": result.spec_differences,
        "tolerance": result.tolerance,
        "regressions": int(result.table["regression"].sum()),
        "improvements": int(result.table["improvement"].sum()),
        "gates": result.gates,
        "passed": result.passed,
        "rows": rows,
    }
