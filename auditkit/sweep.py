"""A layer sweep: one audit per hook point of the denoiser, from one sampling pass.

Which block of a denoiser carries an h-space fit for a bias audit is a question, not a given,
for transformer models above all. ``auditkit sweep-hooks SPEC --out DIR`` answers it for one
model: every sampled trajectory is read at every hook point at once (one extraction pass), each
hook gets its own run directory (``DIR/<hook>/``, a lean-only audit of the spec's vocabulary),
and ``DIR/sweep.csv`` sets the hooks side by side: per axis, how strongly the concepts lean and,
when the model folder ships ``planted_rates.json`` (the toyworld models), how well the leans
recover the planted rates (Spearman's rho across concepts). ``DIR/sweep.png`` draws both
against depth.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditkit.analyses.checks import check_spec
from auditkit.errors import UsageError
from auditkit.spec import AuditSpec

COLUMNS = (
    "depth", "hook", "axis", "width", "n_concepts", "mean_abs_score", "max_abs_score",
    "significant", "spearman_planted",
)  # fmt: skip
"""Columns of ``sweep.csv``: one row per (hook, two-group axis)."""


@dataclass
class SweepOutcome:
    """Where a sweep wrote its table and chart, and its rows."""

    out_dir: Path
    table: Path
    chart: Path | None
    rows: list[dict[str, Any]]
    seconds: float


def sweep_hooks(
    spec: AuditSpec,
    out_dir: Path,
    *,
    hooks: Sequence[str] | None = None,
    cache_dir: Path | None = None,
    show_progress: bool = True,
) -> SweepOutcome:
    """Audit ``spec``'s vocabulary at every hook of ``hooks`` (by default every block its model
    family sweeps, shallow to deep) and write the comparison into ``out_dir``."""
    from auditkit.extract.runner import extract_activations
    from auditkit.extract.store import ActivationStore
    from auditkit.layout import resolve_spec
    from auditkit.models.loading import load_pipeline, model_folder
    from auditkit.plan import plan_audit
    from auditkit.run import default_cache_dir, run_audit
    from auditkit.rundir import RunDir

    started = time.perf_counter()
    check_spec(spec)
    cache_dir = cache_dir or default_cache_dir()
    folder = model_folder(spec.model, cache_dir)
    loaded = load_pipeline(spec.model, cache_dir=cache_dir)
    chosen = list(hooks) if hooks else loaded.adapter.sweep_hooks(folder)
    if not chosen:
        raise UsageError("sweep-hooks: no hook point to sweep.", hint="pass --hooks a,b,c.")
    lean_only = spec.model_copy(update={"analyses": ["lean"], "captions": None, "gates": []})
    specs = {h: resolve_spec(_with_hook(lean_only, h), cache_dir) for h in chosen}
    plans = {h: plan_audit(s) for h, s in specs.items()}
    runs = {h: Path(out_dir) / _slug(h) for h in chosen}
    stores = {h: ActivationStore(RunDir(runs[h]).activations) for h in chosen}
    first, *rest = chosen
    extract_activations(
        loaded,
        specs[first],
        plans[first],
        stores[first],
        show_progress=show_progress,
        also=[(specs[h], plans[h], stores[h]) for h in rest],
    )
    planted = _planted_rates(folder)
    rows = []
    for depth, hook in enumerate(chosen):
        run_audit(specs[hook], runs[hook], cache_dir=cache_dir, show_progress=False,
                  render=False, loaded=loaded)  # fmt: skip
        rows += _rows(depth, hook, runs[hook], planted)
    table = Path(out_dir) / "sweep.csv"
    _write_csv(table, rows)
    chart = _chart(rows, Path(out_dir) / "sweep.png")
    return SweepOutcome(Path(out_dir), table, chart, rows, time.perf_counter() - started)


def _with_hook(spec: AuditSpec, hook: str) -> AuditSpec:
    return spec.model_copy(update={"probe": spec.probe.model_copy(update={"hook": hook})})


def _slug(hook: str) -> str:
    """A folder name for a hook point: ``unet.down_blocks.0`` -> ``unet.down_blocks.0``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", hook)


def _planted_rates(folder: Path | None) -> dict[str, dict[str, float]]:
    """The model card's planted rates (axis -> concept -> share of the first group), if any."""
    path = folder / "planted_rates.json" if folder is not None else None
    if path is None or not path.is_file():
        return {}
    rates = json.loads(path.read_text(encoding="utf-8")).get("rates") or {}
    return {str(a): {str(c): float(r) for c, r in v.items()} for a, v in rates.items()}


def _rows(
    depth: int, hook: str, run: Path, planted: dict[str, dict[str, float]]
) -> list[dict[str, Any]]:
    """One row per two-group axis of one hook's run."""
    import numpy as np

    from auditkit.analyze.stats import spearman
    from auditkit.rundir import RunDir

    directory = RunDir(run)
    lean = directory.table("lean")
    if lean is None:
        raise UsageError(f"sweep-hooks: the audit at {run} wrote no lean table.")
    from auditkit.extract.store import ActivationStore

    index = ActivationStore(directory.activations).index()
    h_shape = json.loads(str(index["shape"].iloc[0]))[1:] if len(index) else []
    width = int(np.prod(h_shape)) if h_shape else 0
    rows = []
    for axis, part in lean.groupby("axis", sort=False):
        rates = planted.get(str(axis), {})
        known = part[part["concept"].astype(str).isin(list(rates))]
        scores = [float(v) for v in known["score"]]
        truth = [rates[str(c)] for c in known["concept"]]
        rho = spearman(scores, truth) if len(known) >= 3 else None
        if rho is not None and not np.isfinite(rho):
            rho = None  # planted rates all equal (nothing planted): no order to recover
        rows.append(
            {
                "depth": depth,
                "hook": hook,
                "axis": str(axis),
                "width": width,
                "n_concepts": len(part),
                "mean_abs_score": float(part["score"].abs().mean()),
                "max_abs_score": float(part["score"].abs().max()),
                "significant": int(part["significant"].sum()) if "significant" in part else 0,
                "spearman_planted": None if rho is None else float(rho),
            }
        )
    return rows


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=list(COLUMNS)).to_csv(path, index=False, float_format="%.4f")


def _chart(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Spearman against the planted rates (when known) and mean |lean| per hook, by axis."""
    import altair as alt
    import pandas as pd

    frame = pd.DataFrame(rows)
    if frame.empty:
        return None
    order = list(dict.fromkeys(frame["hook"]))
    x = alt.X(
        "hook:N", sort=order, title="hook point (shallow to deep)", axis=alt.Axis(labelAngle=-30)
    )
    color = alt.Color("axis:N", title="axis")
    panels = [
        alt.Chart(frame)
        .mark_line(point=True)
        .encode(x=x, y=alt.Y("mean_abs_score:Q", title="mean |lean score|"), color=color)
        .properties(width=520, height=180)
    ]
    if frame["spearman_planted"].notna().any():
        panels.insert(
            0,
            alt.Chart(frame.dropna(subset=["spearman_planted"]))
            .mark_line(point=True)
            .encode(
                x=x,
                y=alt.Y(
                    "spearman_planted:Q",
                    title="Spearman vs planted",
                    scale=alt.Scale(domain=[-1, 1]),
                ),
                color=color,
            )
            .properties(width=520, height=180),
        )
    alt.vconcat(*panels).save(str(path), scale_factor=1.5)
    return path


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The sweep as a Markdown table (hooks as rows, axes as column groups), for the docs."""
    axes = list(dict.fromkeys(r["axis"] for r in rows))
    by_hook: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_hook.setdefault(r["hook"], {})[r["axis"]] = r
    head = "| hook | h per step | " + " | ".join(f"{a}: rho / mean abs lean" for a in axes) + " |"
    lines = [head, "|---|---|" + "---|" * len(axes)]
    for hook, per_axis in by_hook.items():
        width = next(iter(per_axis.values()))["width"]
        cells = []
        for a in axes:
            found = per_axis.get(a)
            if found is None:
                cells.append("–")
                continue
            rho = found["spearman_planted"]
            shown = "–" if rho is None else f"{rho:+.2f}"
            cells.append(f"{shown} / {found['mean_abs_score']:.2f}")
        lines.append(f"| `{hook}` | {width} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
