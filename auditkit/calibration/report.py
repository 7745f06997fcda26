"""Run the calibration suite and write its tables: the rates per method x scenario x seeds
(``calibration.md`` / ``rates.parquet``), every call (``calls.parquet``) and the lean-to-share
mapping (``mapping.json``; the copy that reports show beside the band ships as
``auditkit/analyze/mapping.json``, read by :func:`auditkit.analyze.significance.read_mapping`)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from auditkit.calibration.suite import (
    LARGE,
    METHODS,
    NULL_SIZED,
    lean_share_mapping,
    load_stored_scenario,
    rates,
    replicate_calls,
    stored_scenarios,
    synthetic_calls,
)

SYNTHETIC = ("synthetic", "synthetic-nuisance")
"""The lean-to-share mapping shipped with auditkit (written by ``auditkit calibrate run``
over the stored scenarios; reports read it)."""


def run_suite(
    work: Path,
    *,
    scenarios: Sequence[str] | None = None,
    seed_counts: Sequence[int] = (16, 32, 64, 128),
    replicates: int = 8,
    quick: bool = False,
    methods: Sequence[str] = tuple(METHODS),
    echo: Callable[[str], None] = print,
) -> list[Path]:
    """Score every method on every scenario; write the results under ``work``."""
    from auditkit.errors import UsageError

    known = [*stored_scenarios(), *SYNTHETIC]
    chosen = list(scenarios or (SYNTHETIC if quick else known))
    unknown = [s for s in chosen if s not in known]
    if unknown:
        raise UsageError(
            f"unknown calibration scenario(s): {', '.join(unknown)}.",
            hint=f"choose among: {', '.join(known)}.",
        )
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    frames = []
    for name in chosen:
        if name in SYNTHETIC:
            frames.append(
                synthetic_calls(
                    name,
                    seed_counts,
                    replicates=min(replicates, 4) if quick else replicates,
                    methods=methods,
                    resamples=300 if quick else 1000,
                    progress=echo,
                )
            )
        else:
            scenario = load_stored_scenario(name, work / "stores")
            frames.append(
                replicate_calls(
                    scenario,
                    seed_counts,
                    max_replicates=replicates,
                    methods=methods,
                    progress=echo,
                )
            )
    calls = pd.concat(frames, ignore_index=True)
    seconds = time.perf_counter() - started
    return write_results(work, calls, seed_counts, replicates, f"{seconds / 60:.0f} min")


def write_results(
    work: Path, calls: pd.DataFrame, seed_counts: Sequence[int], replicates: int, took: str
) -> list[Path]:
    """The suite's results from its calls, under ``work``: calls.parquet, rates.parquet,
    calibration.md (``took`` says how they were made) and, where a model scenario was judged,
    mapping.json."""
    work.mkdir(parents=True, exist_ok=True)
    table = rates(calls)
    mapping, positions = share_mappings(calls)
    scenarios = list(dict.fromkeys(calls["scenario"]))
    out = [work / "calls.parquet", work / "rates.parquet", work / "calibration.md"]
    calls.to_parquet(out[0], index=False)
    table.to_parquet(out[1], index=False)
    out[2].write_text(
        markdown(table, mapping, scenarios, seed_counts, replicates, took, positions),
        encoding="utf-8",
    )
    if not mapping.empty:
        path = work / "mapping.json"
        path.write_text(json.dumps(mapping_document(mapping, positions), indent=2) + "\n")
        out.append(path)
    return out


CALL_COLUMNS = ("scenario", "method", "seeds", "replicate", "axis", "concept", "share")
"""What a calls file must hold for its rates and mapping to be computed again."""


def merge_calls(paths: Sequence[Path], work: Path) -> list[Path]:
    """The suite's results from the calls of several ``calibrate run``s (each its
    calls.parquet), written under ``work`` as :func:`run_suite` writes them: a suite judged in
    parts (one scenario per machine, or one scenario again after its store grew) still has one
    table. A scenario judged in two of the files is refused: which to keep is the user's
    choice."""
    from auditkit.errors import UsageError

    frames: list[pd.DataFrame] = []
    owner: dict[str, str] = {}
    for path in paths:
        where = f"calls file {str(path)!r}"
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            raise UsageError(
                f"{where} cannot be read ({type(exc).__name__}: {exc}).",
                hint="give the calls.parquet an 'auditkit calibrate run' wrote.",
            ) from exc
        missing = [c for c in CALL_COLUMNS if c not in frame.columns]
        if missing:
            raise UsageError(
                f"{where} lacks the columns {', '.join(missing)}.",
                hint="give the calls.parquet an 'auditkit calibrate run' wrote.",
            )
        for scenario in dict.fromkeys(frame["scenario"]):
            if scenario in owner:
                raise UsageError(
                    f"{where} judges scenario {scenario!r} again (also in {owner[scenario]!r}).",
                    hint="leave out one of the two files, or judge the scenario once.",
                )
            owner[scenario] = str(path)
        frames.append(frame)
    if not frames:
        raise UsageError("no calls files given.", hint="give one calls.parquet or more.")
    calls = pd.concat(frames, ignore_index=True)
    seeds = sorted(int(n) for n in calls["seeds"].unique())
    replicates = int(calls.groupby(["scenario", "seeds"])["replicate"].nunique().max())
    return write_results(Path(work), calls, seeds, replicates, f"merged from {len(frames)} runs")


def share_mappings(calls: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The lean-to-share mapping of the score, and the position's, over the stored
    (model) scenarios' calls."""
    stored = calls[~calls["scenario"].isin(SYNTHETIC)]
    mapping = lean_share_mapping(stored)
    positions = lean_share_mapping(
        stored, method="min_effect, marked position", column="marked_position"
    )
    return mapping, positions


def mapping_document(
    mapping: pd.DataFrame, positions: pd.DataFrame | None = None
) -> dict[str, Any]:
    """The lean-to-share mapping as the JSON that reports read: ``bins`` of the lean score
    and, where measured, ``marked_position_bins`` of the position between marked variants."""

    def bins(frame: pd.DataFrame) -> list[dict[str, Any]]:
        return [
            {
                str(k): (None if isinstance(v, float) and v == float("inf") else v)
                for k, v in r.items()
            }
            for r in frame.to_dict("records")
        ]

    document: dict[str, Any] = {
        "schema_version": 1,
        "kind": "auditkit.calibration.mapping",
        "meaning": "per |lean score| bin (and per |position| bin): the skew of the true image "
        "share towards the lean's group (share - 0.5), over the calibration models' (axis, "
        "concept) pairs",
        "bins": bins(mapping),
    }
    if positions is not None and not positions.empty:
        document["marked_position_bins"] = bins(positions)
    return document


def _pct(value: float) -> str:
    return "–" if pd.isna(value) else f"{100 * value:.0f}%"


def markdown(
    table: pd.DataFrame,
    mapping: pd.DataFrame,
    scenarios: Sequence[str],
    seed_counts: Sequence[int],
    replicates: int,
    took: str,
    positions: pd.DataFrame | None = None,
) -> str:
    """The rates and the mapping as Markdown tables (docs/method.md embeds them); ``took``
    says how long they took (or how they were made)."""
    counts = list(seed_counts)
    lines = [
        f"Null-sized: true share within ±{NULL_SIZED} of parity; large: at least {LARGE} "
        f"from parity. Each cell: null-sized pairs called findings / large pairs found, over "
        f"up to {replicates} disjoint seed replicates (simulated audits for the synthetic "
        f"scenarios). {len(scenarios)} scenarios, {took}.",
        "",
        "| scenario | method | pairs (null / large) | "
        + " | ".join(f"{n} seeds" for n in counts)
        + " |",
        "|---|---|---|" + "---|" * len(counts),
    ]
    for (scenario, method), group in table.groupby(["scenario", "method"], sort=False):
        null = dict(zip(group["seeds"], group["null_called"], strict=True))
        large = dict(zip(group["seeds"], group["large_found"], strict=True))
        cells = [
            f"{_pct(float(null[n]))} / {_pct(float(large[n]))}" if n in null else "–"
            for n in counts
        ]
        first = group.iloc[0]
        lines.append(
            f"| {scenario} | {method} | {int(first['null_pairs'])} / {int(first['large_pairs'])} "
            f"| " + " | ".join(cells) + " |"
        )
    for name, frame in (("lean score", mapping), ("position", positions)):
        if frame is None or frame.empty:
            continue
        lines += [
            "",
            f"| {name} | pairs | skew of the drawn share towards the lean (median, 10th–90th "
            "percentile) |",
            "|---|---|---|",
        ]
        for r in frame.itertuples():
            high = "∞" if r.score_high == float("inf") else f"{r.score_high:.2f}"
            lines.append(
                f"| {r.score_low:.2f}–{high} | {r.pairs} | {r.median_skew:+.2f} "
                f"({r.skew_p10:+.2f} to {r.skew_p90:+.2f}) |"
            )
    return "\n".join(lines) + "\n"
