"""The report's "Exemplar images" section (the ``exemplars`` slice's): stored thumbnails, chosen
to fit the image budget.

Reads ``captions/exemplars.parquet`` (written by the captioning stage). Images are grouped by
prompt role and set (a concept set, or an axis) and shown one row per concept or group term.
The budget (``report.image_budget_mb``) counts the bytes the images add to the HTML file (their
base64 data URIs); it is filled breadth-first: every row gets its first image before any row
gets a second, so a large audit shows fewer images per concept rather than dropping concepts,
and only when even one image per row does not fit are later rows left without images. The
section says how many images it shows out of how many are stored.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from auditkit.analyses.base import SectionContext

if TYPE_CHECKING:
    import pandas as pd

    from auditkit.spec.audit import AuditSpec

MIN_DISPLAY_PX = 64
"""Thumbnails smaller than this are shown enlarged to it, with pixelated scaling."""

_ROLE_TITLES = {"concept": "Concepts", "marked": "Marked prompts", "axis": "Axis", "base": "Base"}


def encoded_size(data: bytes) -> int:
    """Bytes a thumbnail adds to the HTML as a base64 data URI (payload only)."""
    return 4 * ((len(data) + 2) // 3)


def exemplar_section(ctx: SectionContext) -> dict[str, Any] | None:
    """The exemplar grids of a run, or None when it stored no thumbnails."""
    spec = ctx.spec
    if spec.captions is None:
        return None
    table = ctx.tables.get("exemplars")
    if table is None or table.empty:
        return None
    budget = int(spec.report.image_budget_mb * 1_000_000)
    ranked = _ranked(table, spec)
    chosen, used = _fit(ranked, budget)
    order = [axis.name for axis in spec.axes]
    grids: list[dict[str, Any]] = []
    for (role, set_name), block in ranked.groupby(["role", "set_name"], sort=False):
        rows = []
        for label, items in block.groupby("row_label", sort=False):
            images = [_image(item, order) for item in items.itertuples() if item.Index in chosen]
            rows.append({"label": str(label), "images": images, "stored": len(items)})
        title = f"{_ROLE_TITLES.get(str(role), str(role))}: {set_name}"
        grids.append({"title": title, "role": str(role), "set_name": str(set_name), "rows": rows})
    seeds = sorted(set(table["seed"].astype(int)), key=_seed_order(spec))
    return {
        "grids": grids,
        "shown": len(chosen),
        "stored": len(ranked),
        "bytes": used,
        "budget_bytes": budget,
        "budget_mb": spec.report.image_budget_mb,
        "seeds": seeds,
        "rows_without_image": sum(1 for g in grids for r in g["rows"] if not r["images"]),
        "captioner": dict(ctx.manifest.get("captioner") or {}).get("id"),
    }


def _seed_order(spec: AuditSpec) -> Any:
    position = {seed: i for i, seed in enumerate(spec.seed_list)}
    return lambda seed: position.get(seed, len(position))


def _ranked(table: pd.DataFrame, spec: AuditSpec) -> pd.DataFrame:
    """One row per stored image, ordered by group, row and rank within the row.

    Within a row (a concept, or an axis group term) seeds come before templates (seed 1 /
    template 1, seed 2 / template 1, ..., then the second template): the seeds are the
    different draws, while the templates of one seed start from the same noise and often give
    nearly the same picture.
    """
    frame = table.copy()
    frame["row_label"] = [
        _row_label(*row) for row in zip(frame["role"], frame["group"], frame["term"], strict=True)
    ]
    seed_rank = _seed_order(spec)
    frame["seed_rank"] = [seed_rank(int(s)) for s in frame["seed"]]
    order: dict[str, int] = {}
    for name in frame["template"]:
        order.setdefault(str(name), len(order))
    frame["template_rank"] = [order[str(t)] for t in frame["template"]]
    frame["set_rank"] = frame.groupby(["role", "set_name"], sort=False).ngroup()
    frame["row_rank"] = frame.groupby(["set_rank", "row_label"], sort=False).ngroup()
    frame = frame.sort_values(["set_rank", "row_rank", "template_rank", "seed_rank"], kind="stable")
    frame["rank"] = frame.groupby("row_rank").cumcount()
    frame["cost"] = [encoded_size(bytes(data)) for data in frame["image"]]
    return frame.reset_index(drop=True)


def _row_label(role: str, group: str, term: str) -> str:
    """A grid row: the concept; for marked and axis prompts the group too ("woman: doctor")."""
    if role == "base":
        return "base prompt"
    return f"{group}: {term}" if role in ("axis", "marked") and group else str(term)


def _fit(ranked: pd.DataFrame, budget: int) -> tuple[set[int], int]:
    """Indices of the images shown: breadth-first by rank, each row in order, within budget."""
    chosen: set[int] = set()
    used = 0
    for _, layer in ranked.sort_values(["rank", "row_rank"], kind="stable").groupby(
        "rank", sort=True
    ):
        for index, cost in zip(layer.index, layer["cost"], strict=True):
            if used + int(cost) > budget:
                return chosen, used
            chosen.add(int(index))
            used += int(cost)
    return chosen, used


def _image(item: Any, order: list[str]) -> dict[str, Any]:
    """One shown thumbnail; its label lists the values read, attributes named like an axis
    first (in the spec's order), then the others."""
    readings = json.loads(str(item.readings) or "{}")
    names = [n for n in order if n in readings] + [n for n in readings if n not in order]
    label = " · ".join(str(readings[name]) for name in names)
    width, height = int(item.width), int(item.height)
    scale = max(1.0, MIN_DISPLAY_PX / max(width, height))
    return {
        "src": data_uri(str(item.mime), bytes(item.image)),
        "alt": f"{item.prompt} (seed {int(item.seed)}), read as: {label or 'nothing'}",
        "caption": str(item.caption),
        "label": label,
        "seed": int(item.seed),
        "template": str(item.template),
        "width": round(width * scale),
        "height": round(height * scale),
        "pixelated": scale > 1.0,
    }


def data_uri(mime: str, data: bytes) -> str:
    """An image as a ``data:`` URI for a self-contained HTML file."""
    import base64

    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


__all__ = ["MIN_DISPLAY_PX", "data_uri", "encoded_size", "exemplar_section"]
