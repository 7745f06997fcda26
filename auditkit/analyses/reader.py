"""How the images were read: the captioner's calibration, and the shares corrected for it.

With ``captions.calibration``, the calibration pass (:mod:`auditkit.passes.calibration`) reads
a labelled set with the audit's captioner and writes this slice's tables
(``captions/reader_confusion.parquet``, ``captions/reader_accuracy.parquet``, declared in
``reader.tables.yaml`` beside this module). The outputs slice corrects the shares with them.
This slice turns them into the summary's ``reader`` block, one finding per attribute (the
captioner's accuracy per group: its own bias) and the report's "How the images were read"
section: the confusion, the accuracy per group, and raw against corrected shares.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from auditkit.analyses import base as api

if TYPE_CHECKING:
    import pandas as pd

    from auditkit.spec.audit import AuditSpec
    from auditkit.spec.gates import GateSpec

NAME = "reader"
TABLES = api.declared_tables(__name__)

LIMITS = (
    "The calibration set vouches for the captioner on images like its own: the corrected "
    "shares assume that the captioner errs on the audit's generated images as it erred on the "
    "calibration images (the same confusion for every concept). A calibration set of real "
    "photographs does not vouch for its reading of a model's artefacts, of styles, or of "
    "groups and attributes it does not label; and a confusion that differs by concept (a "
    "reader that misreads women more often in lab coats) is not corrected. Its labels are "
    "themselves perceived attributes, with the labellers' own errors."
)
"""What the calibration set can and cannot vouch for (the report's limitations say it)."""


class Reader(api.Analysis):
    name = NAME
    title = "How the images were read"
    after = "outputs"
    summary_key = NAME
    summary_optional = True
    tables = TABLES
    statistic = (
        "the captioner's confusion and accuracy per group on the labelled calibration set (95% "
        "Wilson intervals); corrected shares with a bootstrap over the images and the "
        "calibration set"
    )

    def applies(self, spec: AuditSpec) -> bool:
        return spec.captions is not None and spec.captions.calibration is not None

    def build(self, ctx: api.AnalysisContext) -> dict[str, pd.DataFrame]:
        """Nothing: the calibration pass writes this slice's tables; the corrected shares are
        columns of the outputs table."""
        return {}

    def summary(self, spec: AuditSpec, tables: api.Tables) -> list[dict[str, Any]] | None:
        return reader_records(tables)

    def findings(self, spec: AuditSpec, tables: api.Tables) -> list[str]:
        return [str(entry["statement"]) for entry in self.summary(spec, tables) or []]

    def section(self, ctx: api.SectionContext) -> dict[str, Any] | None:
        return reader_section(ctx)


def reader_records(tables: api.Tables) -> list[dict[str, Any]] | None:
    """Per calibrated attribute: the accuracy per group, the matrix's separation, whether the
    shares were corrected, and a sentence."""
    from auditkit.analyze.stats import summary_number

    accuracy = tables.get("reader_accuracy")
    if accuracy is None or accuracy.empty:
        return None
    outputs = tables.get("outputs")
    records = []
    for attribute, part in accuracy.groupby("attribute", sort=False):
        groups = [
            {
                "group": str(r["group"]),
                "n_images": int(r["n_images"]),
                "accuracy": summary_number(r["accuracy"]),
                "accuracy_ci": [
                    summary_number(r["accuracy_low"]),
                    summary_number(r["accuracy_high"]),
                ],
            }
            for r in part.to_dict("records")
        ]
        usable = bool(part["usable"].iloc[0])
        corrected = False
        if outputs is not None and "share_basis" in outputs.columns:
            mine = outputs[outputs["attribute"].astype(str) == str(attribute)]
            corrected = bool(len(mine)) and bool((mine["share_basis"] == "corrected").all())
        records.append(
            {
                "attribute": str(attribute),
                "groups": groups,
                "separation": summary_number(part["separation"].iloc[0]),
                "usable": usable,
                "corrected": corrected,
                "statement": _statement(str(attribute), part, usable, corrected),
            }
        )
    return records


def _statement(attribute: str, part: pd.DataFrame, usable: bool, corrected: bool) -> str:
    parts = [
        f"'{r['group']}' {float(r['accuracy']):.0%} (95% CI {float(r['accuracy_low']):.0%}-"
        f"{float(r['accuracy_high']):.0%}, {int(r['n_images'])} images)"
        for r in part.to_dict("records")
        if int(r["n_images"]) > 0
    ]
    accuracies = part["accuracy"].astype(float)
    text = f"The captioner read {attribute} correctly in: " + "; ".join(parts) + "."
    if len(accuracies.dropna()) >= 2:
        spread = float(accuracies.max() - accuracies.min())
        worst = str(part["group"].iloc[int(accuracies.to_numpy().argmin())])
        if spread >= 0.005:
            text += f" It is least accurate on '{worst}' ({spread:.0%} below its best group)."
        else:
            text += " It is as accurate on every group."
    if corrected:
        text += " The output shares of this attribute are corrected for its confusion."
    elif not usable:
        text += (
            f" Its confusion is too close to singular to correct the shares "
            f"({part['note'].iloc[0]}); they are reported raw."
        )
    else:
        text += " Some of its shares could not be corrected; they are reported raw."
    return text


def reader_section(ctx: api.SectionContext) -> dict[str, Any] | None:
    """The calibration's confusion and accuracy per attribute, and raw against corrected
    shares of the attribute's first group, per concept."""
    from auditkit import charts
    from auditkit.analyses.values import finite

    tables = ctx.tables
    records = reader_records(tables)
    confusion = tables.get("reader_confusion")
    if not records or confusion is None:
        return None
    outputs = tables.get("outputs")
    calibration = dict((ctx.manifest.get("stages") or {}).get("calibrate") or {})
    attributes = []
    for index, record in enumerate(records):
        attribute = record["attribute"]
        mine = confusion[confusion["attribute"].astype(str) == attribute]
        read_as = list(dict.fromkeys(mine["read_as"].astype(str)))
        matrix = []
        for true_group, rows in mine.groupby("true_group", sort=False):
            cells = {str(r["read_as"]): r for r in rows.to_dict("records")}
            matrix.append(
                {
                    "true_group": str(true_group),
                    "n_true": int(rows["n_true"].iloc[0]),
                    "cells": [
                        {
                            "rate": finite(cells[r]["rate"]) if r in cells else None,
                            "low": finite(cells[r]["rate_low"]) if r in cells else None,
                            "high": finite(cells[r]["rate_high"]) if r in cells else None,
                            "count": int(cells[r]["count"]) if r in cells else 0,
                            "diagonal": r == str(true_group),
                        }
                        for r in read_as
                    ],
                }
            )
        chart_id = None
        if outputs is not None and "corrected" in outputs.columns:
            rows = outputs[outputs["attribute"].astype(str) == attribute]
            if len(rows):
                first = str(rows["group"].iloc[0])
                rows = rows[rows["group"].astype(str) == first]
                chart_id = ctx.chart(f"reader-{index}", charts.corrected_share_chart(rows))
        attributes.append({**record, "read_as": read_as, "matrix": matrix, "chart_id": chart_id})
    return {
        "captioner": (dict(ctx.manifest.get("captioner") or {})).get("id"),
        "source": calibration.get("source"),
        "n_images": calibration.get("n_images"),
        "set_sha256": calibration.get("set_sha256"),
        "attributes": attributes,
        "limits": LIMITS,
    }


def _min_accuracy(gate: GateSpec, tables: api.Tables) -> tuple[float | None, str]:
    table = tables.get("reader_accuracy")
    if table is None or table.empty:
        return None, "the run has no calibration (add captions.calibration)"
    rows = table if gate.attribute is None else table[table["attribute"] == gate.attribute]
    rows = rows[rows["n_images"] > 0]
    if rows.empty:
        return None, f"no calibrated group of attribute '{gate.attribute}'"
    worst = rows.iloc[int(rows["accuracy"].to_numpy().argmin())]
    return float(worst["accuracy"]), (
        f"the captioner read '{worst['group']}' ({worst['attribute']}) correctly in "
        f"{float(worst['accuracy']):.1%} of {int(worst['n_images'])} calibration images"
    )


Reader.gate_metrics = (
    api.GateMetric(
        "min_reader_accuracy",
        "min",
        "the captioner's lowest accuracy on any group of the calibration set "
        "(reader_accuracy.parquet; optionally one attribute)",
        _min_accuracy,
        scope=("attribute",),
    ),
)

ANALYSIS = Reader()
