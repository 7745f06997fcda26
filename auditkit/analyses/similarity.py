"""Concept similarity: which concepts of a set the model represents alike.

For every concept set, the cosine between the centred latents of every pair of its concepts
(``similarity``), and the set's structure (``structure``): a hierarchical clustering on cosine
distance and a 2-D map of the concepts (:mod:`auditkit.analyze.structure`). The report draws the
matrix in the clustering's leaf order beside the map.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from auditkit.analyses import base as api
from auditkit.analyze.resampled import Resampled

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from auditkit.analyze.uncertainty import Resamples
    from auditkit.spec.audit import AuditSpec

NAME = "similarity"
TABLE, STRUCTURE = api.declared_tables(__name__)


def similarity_table(ctx: api.AnalysisContext) -> pd.DataFrame:
    """One row per (concept set, concept, concept): both orders and the diagonal."""
    import pandas as pd

    from auditkit.analyze.measures import concept_latents, cosine, reference

    layout, H = ctx.layout, ctx.H
    frames = []
    for cset in layout.concepts:
        if len(cset.terms) > PAIR_LOOP_LIMIT:
            frames.append(_similarity_matrix(cset.name, list(cset.terms), _centred_gram(ctx, cset)))
            continue
        ref = reference(H, layout, cset)
        vecs = concept_latents(H, cset)
        records = []
        for a, va in vecs.items():
            for b, vb in vecs.items():
                records.append(
                    {
                        "concept_set": cset.name,
                        "concept_a": a,
                        "concept_b": b,
                        "cosine": cosine(va - ref, vb - ref),
                    }
                )
        frames.append(pd.DataFrame(records, columns=TABLE.required))
    if not frames:
        return pd.DataFrame(columns=TABLE.required)
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


CLOSEST_PAIRS = 5
"""How many of a set's closest pairs the report names; :data:`CLOSEST_PAIRS_LARGE` for a set
drawn as an overview, and only the :data:`LISTED_CLUSTERS` largest clusters are listed."""
CLOSEST_PAIRS_LARGE = 12
LISTED_CLUSTERS = 12
PAIR_LOOP_LIMIT = 64
"""Concept sets up to this size get each cosine pair by pair, and their structure from the
latents (the numbers every earlier audit has); a larger set gets all of them from the Gram
matrix of its centred latents, equal to within rounding (a 1,000-concept set has a million
pairs and 80 million numbers of latents)."""


def _centred_gram(ctx: api.AnalysisContext, cset: Any) -> np.ndarray:
    """The Gram matrix [n, n] of a concept set's centred concept latents, in the set's term
    order (kept on the context: the similarity and the structure share it), from the Gram
    matrix of H: a large set's latents are never copied out."""
    import numpy as np

    from auditkit.analyze.measures import ConceptMatrix, reference

    cache = ctx.memo.setdefault("centred grams", {})
    if cset.name not in cache:
        ref = reference(ctx.H, ctx.layout, cset)
        cache[cset.name] = ConceptMatrix.of(ctx.H, cset).gram(ref)
    return np.asarray(cache[cset.name])


def _similarity_matrix(set_name: str, names: list[str], gram: np.ndarray) -> pd.DataFrame:
    """Every ordered pair's cosine of one concept set (both orders and the diagonal), from the
    Gram matrix of its centred concept latents; 0 where a centred latent is zero."""
    import numpy as np
    import pandas as pd

    norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
    scale = np.where(norms > 0, norms, 1.0)
    cos = gram / scale[:, None] / scale[None, :]
    cos[(norms == 0)[:, None] | (norms == 0)[None, :]] = 0.0
    n = len(names)
    return pd.DataFrame(
        {
            "concept_set": set_name,
            "concept_a": np.repeat(np.asarray(names, dtype=object), n),
            "concept_b": np.tile(np.asarray(names, dtype=object), n),
            "cosine": cos.reshape(-1),
        },
        columns=TABLE.required,
    )


def _gram_factor(gram: np.ndarray) -> np.ndarray:
    """Rows [n, n] with the same inner products as the vectors of ``gram`` (so the same
    cosines and principal components): V sqrt(Λ) of its eigen-decomposition."""
    import numpy as np

    values, vectors = np.linalg.eigh((gram + gram.T) / 2.0)
    return np.asarray(vectors * np.sqrt(np.clip(values, 0.0, None))[None, :])


def structure_table(ctx: api.AnalysisContext) -> pd.DataFrame:
    """Per concept set of three concepts or more: hierarchical clusters (cosine distance of
    centred latents) and a 2-D map (first two principal components of the unit-length centred
    latents)."""
    import numpy as np
    import pandas as pd

    from auditkit.analyze.measures import concept_latents, reference
    from auditkit.analyze.structure import cluster_concepts, concept_map

    layout, H = ctx.layout, ctx.H
    frames = []
    for cset in layout.concepts:
        names = list(cset.term_names)
        if len(names) < 3:
            continue
        if len(names) > PAIR_LOOP_LIMIT:  # the same geometry, n numbers per concept
            vectors = _gram_factor(_centred_gram(ctx, cset))
        else:
            ref = reference(H, layout, cset)
            latents = concept_latents(H, cset)
            vectors = np.asarray([latents[n] - ref for n in names])
        clusters = cluster_concepts(vectors, names)
        order = {name: i for i, name in enumerate(clusters["leaf_names"])}
        frame = concept_map(vectors, names).assign(
            concept_set=cset.name,
            cluster=[int(c) for c in clusters["labels"]],
            leaf_order=[order[n] for n in names],
        )
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=STRUCTURE.required)
    return pd.concat(frames, ignore_index=True)[STRUCTURE.required]


def similarity_samples(frame: pd.DataFrame, draw: Resamples) -> np.ndarray:
    """Per row: the resampled cosine of the two concepts."""
    from auditkit.analyze.resampled_measures import cosine_samples

    return cosine_samples(
        draw,
        frame,
        ("concept", "concept_set", "concept_a"),
        ("concept", "concept_set", "concept_b"),
    )


class Similarity(api.Analysis):
    name = NAME
    title = "Concept similarity"
    after = "descriptors"
    tables = (TABLE, STRUCTURE)
    statistic = "the cosine of each pair of concepts of a set (the structure has no intervals)"
    resampled = (Resampled(NAME, ("cosine",), similarity_samples),)
    gate_metrics: tuple[api.GateMetric, ...] = ()
    """None: how alike two concepts are is not a bias to bound."""

    def build(self, ctx: api.AnalysisContext) -> dict[str, pd.DataFrame]:
        return {NAME: similarity_table(ctx), "structure": structure_table(ctx)}

    def summary(self, spec: AuditSpec, tables: api.Tables) -> dict[str, Any] | None:
        return None  # summary.json has no similarity block

    def findings(self, spec: AuditSpec, tables: api.Tables) -> list[str]:
        return []  # the report shows the matrices; no sentence summarises them

    def section(self, ctx: api.SectionContext) -> dict[str, Any] | None:
        from auditkit import charts
        from auditkit.analyses.values import frame_records, matrix_block

        similarity, structure = ctx.tables.get(NAME), ctx.tables.get("structure")
        if similarity is None:
            return None
        sections = []
        for index, name in enumerate(dict.fromkeys(similarity["concept_set"].tolist())):
            part = similarity[similarity["concept_set"] == name]
            points = None
            if structure is not None and (structure["concept_set"] == name).any():
                points = structure[structure["concept_set"] == name]
            leaves = None if points is None else points.sort_values("leaf_order")["concept"]
            order = None if leaves is None else [str(c) for c in leaves]
            n_concepts = int(part["concept_a"].nunique())
            block = matrix_block(n_concepts)
            heatmap = charts.similarity_heatmap(part, order, block)
            chart_id = ctx.chart(f"similarity-{index}", heatmap)
            map_id = None
            clusters: list[list[str]] = []
            if points is not None:
                map_id = ctx.chart(f"concept-map-{index}", charts.concept_map_chart(points))
                ordered = points.sort_values("leaf_order")
                for _, members in ordered.groupby("cluster", sort=False):
                    clusters.append([str(c) for c in members["concept"]])
            pairs = part[part["concept_a"].astype(str) < part["concept_b"].astype(str)]
            top = pairs.nlargest(CLOSEST_PAIRS if block == 1 else CLOSEST_PAIRS_LARGE, "cosine")
            sections.append(
                {
                    "concept_set": name,
                    "n_concepts": n_concepts,
                    "chart_id": chart_id,
                    "closest": frame_records(top, ["concept_a", "concept_b", "cosine"]),
                    "map_chart_id": map_id,
                    "clusters": _largest(clusters) if block > 1 else clusters,
                    "n_clusters": len(clusters),
                    "ordered": order is not None,
                    "block": block,
                    "labelled": charts.matrix_labelled(-(-n_concepts // block)),
                }
            )
        return {"sets": sections} if sections else None


def _largest(clusters: list[list[str]]) -> list[list[str]]:
    """The :data:`LISTED_CLUSTERS` largest clusters (of two concepts or more; among equal sizes
    the first), in leaf order."""
    several = [i for i, members in enumerate(clusters) if len(members) > 1]
    largest = sorted(several, key=lambda i: -len(clusters[i]))[:LISTED_CLUSTERS]  # stable
    return [clusters[i] for i in sorted(largest)]


ANALYSIS = Similarity()
