"""The bootstrap statistics of the tables that share the audit's one pass
(:func:`auditkit.analyze.uncertainty.add_bootstrap_intervals`): each recomputes its table's
measures on one chunk of resamples from their inner products (:class:`Resamples`), the rows'
basis indices worked out once per pass (:meth:`Resamples.indices`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from auditkit.analyze.gram import (
    CosineRows,
    LeanRows,
    cosine_from_rows,
    lean_from_rows,
    position_from_gram,
    template_key,
)
from auditkit.analyze.measures import marked_pair
from auditkit.analyze.uncertainty import Resamples


def lean_samples(frame: pd.DataFrame, draw: Resamples) -> np.ndarray:
    """[resamples, rows, 3]: the lean table's score, cosine and position between the marked
    variants, recomputed from every resample."""
    basis, Q = draw.basis, draw.Q

    def rows() -> LeanRows:
        index = [
            (
                basis[("concept", str(row.concept_set), str(row.concept))],
                basis[("ref", str(row.concept_set))],
                basis[("group", str(row.axis), str(row.positive_group))],
                basis[("group", str(row.axis), str(row.negative_group))],
            )
            for row in frame.itertuples()
        ]
        return LeanRows.of(*(
            np.asarray(column, dtype=np.int64).reshape(-1) for column in zip(*index, strict=True)
        ))  # fmt: skip

    out = np.empty((Q.shape[0], len(frame), 3))
    if frame.empty:
        return out
    cosine, _, score = lean_from_rows(Q, draw.indices(f"lean:{id(frame)}", rows))
    out[:, :, 0] = score
    out[:, :, 1] = cosine
    out[:, :, 2] = position_samples(frame, draw)
    return out


def position_samples(frame: pd.DataFrame, draw: Resamples) -> np.ndarray:
    """[resamples, rows]: each lean row's position between its concept's two marked variants
    (NaN where the axis has none), the templates weighted as the resample draws them."""
    layout, basis, Q = draw.layout, draw.basis, draw.Q
    sets = {c.name: c for c in layout.concepts}

    def rows() -> list[tuple[np.ndarray, str, np.ndarray, np.ndarray, np.ndarray]]:
        """Per concept set: (table rows, template key, basis rows [rows, templates] of the
        unmarked prompt and of its two marked variants)."""
        found: dict[str, tuple[list[int], list[list[int]], list[list[int]], list[list[int]]]] = {}
        for i, row in enumerate(frame.itertuples()):
            cset = sets[str(row.concept_set)]
            groups = (str(row.positive_group), str(row.negative_group))
            pair = marked_pair(layout, str(row.axis), cset.name, groups, str(row.concept))
            if pair is None:
                continue
            at, unmarked, first, second = found.setdefault(cset.name, ([], [], [], []))
            at.append(i)
            for into, part in zip(
                (unmarked, first, second), (cset.terms[str(row.concept)], *pair), strict=True
            ):
                into.append([basis[("row", str(r))] for r in part])
        return [
            (
                np.asarray(at, dtype=np.int64),
                template_key(sets[name].templates) if sets[name].templates else "",
                np.asarray(unmarked, dtype=np.int64),
                np.asarray(first, dtype=np.int64),
                np.asarray(second, dtype=np.int64),
            )
            for name, (at, unmarked, first, second) in found.items()
        ]

    out = np.full((Q.shape[0], len(frame)), np.nan)
    for at, tkey, unmarked, first, second in draw.indices(f"position:{id(frame)}", rows):
        per_template = position_from_gram(Q, unmarked, first, second)  # [B, rows, templates]
        out[:, at] = template_mean(per_template, draw.wording, tkey)
    return out


def template_mean(
    per_template: np.ndarray, wording: dict[str, np.ndarray] | None, key: str
) -> np.ndarray:
    """The mean over a list's templates (last axis) of a resampled measure [resamples, ...,
    templates], each template weighted as the resample drew it (``wording[key]`` [resamples,
    templates]) where the templates are resampled, else plainly."""
    if wording is None or key not in wording:
        return per_template.mean(axis=-1)
    weights = wording[key].reshape(wording[key].shape[0], *([1] * (per_template.ndim - 2)), -1)
    return np.sum(per_template * weights, axis=-1)


def cosine_samples(
    draw: Resamples, frame: pd.DataFrame, first: tuple[str, str, str], second: tuple[str, str, str]
) -> np.ndarray:
    """[resamples, rows, 1]: per row of ``frame`` the resampled cosine of two basis vectors, both
    centred on the reference of the row's concept set. ``first`` and ``second`` name each vector
    as (kind, column of its set or axis, column of its name), e.g. ("group", "axis", "group")."""
    basis, Q = draw.basis, draw.Q

    def rows() -> CosineRows:
        def column(kind: str, where: str, name: str) -> np.ndarray:
            # each distinct (set or axis, name) looked up once: a similarity table has a
            # million rows and about a thousand distinct names
            w_codes, w_names = pd.factorize(frame[where].astype(str))
            n_codes, n_names = pd.factorize(frame[name].astype(str))
            pairs, at = np.unique(w_codes * len(n_names) + n_codes, return_inverse=True)
            found = [
                basis[(kind, str(w_names[p // len(n_names)]), str(n_names[p % len(n_names)]))]
                for p in pairs.tolist()
            ]
            return np.asarray(found, dtype=np.int64)[at.reshape(-1)]

        set_codes, sets = pd.factorize(frame["concept_set"].astype(str))
        refs = np.asarray([basis[("ref", str(s))] for s in sets], dtype=np.int64)[set_codes]
        return CosineRows.of(column(*first), column(*second), refs)

    out = np.empty((Q.shape[0], len(frame), 1))
    if frame.empty:
        return out
    out[:, :, 0] = cosine_from_rows(Q, draw.indices(f"cosine:{id(frame)}:{first}:{second}", rows))
    return out
