"""Output-level statistics (shares, reference comparison, lean/share agreement) on known answers."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from auditkit.analyze.outputs import (
    AGREEMENT_COLUMNS,
    REFERENCE_SMOOTHING,
    SHARE_COLUMNS,
    agreement,
    agreement_points,
    compare_to_reference,
    entropy_bits,
    kl_bits,
    output_shares,
    row_spearman,
)
from auditkit.analyze.stats import spearman
from auditkit.charts import agreement_chart, share_chart

scipy_stats = pytest.importorskip("scipy.stats")

GENDER = {"gender": ["man", "woman"]}


def readings_from(counts: dict[str, dict[str, int]], attribute: str = "gender") -> pd.DataFrame:
    """One reading per image: concept -> value -> how many images were read so."""
    rows = []
    for concept, values in counts.items():
        seed = 0
        for value, k in values.items():
            for _ in range(k):
                rows.append(("jobs", concept, seed, attribute, value))
                seed += 1
    return pd.DataFrame(rows, columns=["concept_set", "concept", "seed", "attribute", "value"])


def latent_from(scores: dict[str, float], axis: str = "gender") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "axis": axis,
            "concept_set": "jobs",
            "concept": list(scores),
            "score": list(scores.values()),
        }
    )


def shares_from(share: dict[str, float], n: int = 100) -> pd.DataFrame:
    """Shares of "man" per concept, as output_shares would give for n images each."""
    counts = {c: {"man": round(s * n), "woman": n - round(s * n)} for c, s in share.items()}
    return output_shares(readings_from(counts), GENDER)


def direct_shares(share: np.ndarray, names: list[str]) -> pd.DataFrame:
    """Exact (unrounded) shares of "man" in output_shares' layout, without building readings."""
    rows = [
        ("jobs", c, "gender", g, 100, 0, 0, v, v, v)
        for c, s in zip(names, share, strict=True)
        for g, v in (("man", s), ("woman", 1 - s))
    ]
    return pd.DataFrame(rows, columns=list(SHARE_COLUMNS))


def test_shares_counts_and_wilson_intervals_match_scipy() -> None:
    readings = readings_from(
        {"doctor": {"man": 37, "woman": 27, "unknown": 6}, "nurse": {"woman": 10}}
    )
    shares = output_shares(readings, GENDER, confidence=0.9)
    assert list(shares.columns) == list(SHARE_COLUMNS)
    assert shares[["concept", "group"]].values.tolist() == [
        ["doctor", "man"],
        ["doctor", "woman"],
        ["nurse", "man"],
        ["nurse", "woman"],
    ]
    assert shares["count"].tolist() == [37, 27, 0, 10]
    assert shares["n_images"].tolist() == [64, 64, 10, 10]
    assert shares["n_unread"].tolist() == [6, 6, 0, 0]
    assert shares["share"].tolist() == pytest.approx([37 / 64, 27 / 64, 0.0, 1.0])
    for row in shares.itertuples():
        ci = scipy_stats.binomtest(row.count, row.n_images).proportion_ci(0.9, method="wilson")
        assert (row.share_low, row.share_high) == pytest.approx((ci.low, ci.high), abs=1e-7)


def test_shares_with_nothing_read_are_nan_and_bad_input_is_refused() -> None:
    shares = output_shares(readings_from({"ghost": {"unknown": 4}}), GENDER)
    assert shares["n_images"].tolist() == [0, 0] and shares["n_unread"].tolist() == [4, 4]
    assert shares[["share", "share_low", "share_high"]].isna().all().all()
    doubled = pd.concat([readings_from({"doctor": {"man": 1}})] * 2)
    with pytest.raises(ValueError, match="more than one 'gender' reading"):
        output_shares(doubled, GENDER)
    with pytest.raises(ValueError, match="at least two distinct groups"):
        output_shares(readings_from({"doctor": {"man": 1}}), {"gender": ["man", "man"]})
    with pytest.raises(ValueError, match="missing columns"):
        output_shares(pd.DataFrame({"concept": ["a"]}), GENDER)


def test_entropy_and_kl_match_hand_values() -> None:
    assert entropy_bits([0.5, 0.5]) == pytest.approx(1.0)
    assert entropy_bits([1.0, 0.0]) == 0.0
    assert entropy_bits([0.75, 0.25]) == pytest.approx(0.8112781245)
    # A uniform reference is unchanged by smoothing: KL = sum p log2(p / 0.5).
    assert kl_bits([0.75, 0.25], [0.5, 0.5]) == pytest.approx(0.1887218755)
    assert kl_bits([0.3, 0.7], [0.3, 0.7], smoothing=0.0) == 0.0
    # A zero in the reference gives a finite KL through the documented smoothing.
    e = REFERENCE_SMOOTHING
    assert kl_bits([0.5, 0.5], [1.0, 0.0]) == pytest.approx(
        0.5 * math.log2(0.5 / (1 - e + e / 2)) + 0.5 * math.log2(0.5 / (e / 2))
    )


def test_compare_to_uniform_and_table_reference() -> None:
    readings = pd.concat(
        [
            readings_from({"doctor": {"man": 75, "woman": 25}}),
            readings_from({"nurse": {"man": 2, "woman": 8}}).assign(seed=lambda f: f["seed"] + 500),
        ]
    )
    shares = output_shares(readings, GENDER)
    uniform = compare_to_reference(shares, {"gender": "uniform"})
    doctor = uniform[uniform["concept"] == "doctor"]
    assert doctor["reference"].tolist() == [0.5, 0.5]
    assert doctor["difference"].tolist() == pytest.approx([0.25, -0.25])
    assert doctor["ratio"].tolist() == pytest.approx([1.5, 0.5])
    assert doctor["kl_bits"].iloc[0] == pytest.approx(0.1887218755)
    assert doctor["entropy_bits"].iloc[0] == pytest.approx(0.8112781245)
    assert doctor["normalized_entropy"].iloc[0] == pytest.approx(0.8112781245)
    assert doctor["max_abs_gap"].iloc[0] == pytest.approx(0.25)
    assert doctor["max_gap_group"].iloc[0] == "man"

    table = {"doctor": {"man": 0.6, "woman": 0.4}, "nurse": {"woman": 1.0}}
    compared = compare_to_reference(shares, {"gender": table})
    nurse = compared[compared["concept"] == "nurse"]
    assert nurse["reference"].tolist() == [0.0, 1.0]
    assert math.isnan(nurse["ratio"].iloc[0]) and nurse["ratio"].iloc[1] == pytest.approx(0.8)
    assert math.isfinite(nurse["kl_bits"].iloc[0]) and nurse["kl_bits"].iloc[0] > 1.0
    doctor = compared[compared["concept"] == "doctor"]
    q = np.array([0.6, 0.4]) * (1 - REFERENCE_SMOOTHING) + REFERENCE_SMOOTHING / 2
    hand = 0.75 * math.log2(0.75 / q[0]) + 0.25 * math.log2(0.25 / q[1])
    assert doctor["kl_bits"].iloc[0] == pytest.approx(hand)
    assert doctor["max_abs_gap"].iloc[0] == pytest.approx(0.15)
    assert set(compared["reference_kind"]) == {"table"}
    # Concepts a table does not list, and attributes not named, are left out.
    partial = compare_to_reference(shares, {"gender": {"nurse": {"man": 0.1, "woman": 0.9}}})
    assert set(partial["concept"]) == {"nurse"}
    assert compare_to_reference(shares, {"age": "uniform"}).empty


def test_reference_problems_are_reported_together_with_the_concept() -> None:
    shares = shares_from({"doctor": 0.5})
    bad = {"doctor": {"man": 0.6, "woman": 0.5}, "pilot": {"man": 0.5, "robot": 0.5}}
    reference: dict[str, Any] = {"gender": bad, "age": "even"}
    with pytest.raises(ValueError) as error:
        compare_to_reference(shares, reference)
    message = str(error.value)
    assert "'doctor'" in message and "sum to 1.1" in message
    assert "'pilot'" in message and "robot" in message
    assert "'even'" in message


def test_row_spearman_matches_the_single_pair_helper_with_ties() -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(0, 4, size=(50, 9)).astype(float)
    y = rng.normal(size=(50, 9))
    batched = row_spearman(x, y)
    for i in range(50):
        single = spearman(x[i], y[i])
        assert (math.isnan(single) and math.isnan(batched[i])) or batched[i] == pytest.approx(
            single, abs=1e-12
        )


def test_agreement_recovers_perfect_rank_agreement_and_disagreement() -> None:
    scores = {f"job{i}": s for i, s in enumerate([-0.9, -0.4, -0.1, 0.2, 0.5, 1.1])}
    share_up = {f"job{i}": s for i, s in enumerate([0.1, 0.2, 0.35, 0.5, 0.7, 0.9])}
    result = agreement(latent_from(scores), shares_from(share_up), {"gender": "gender"})
    assert list(result.columns) == list(AGREEMENT_COLUMNS)
    row = result.iloc[0]
    assert row["rho"] == pytest.approx(1.0)
    assert row["rho_ci_low"] == pytest.approx(1.0) and row["rho_ci_high"] == pytest.approx(1.0)
    assert row["statement"] == "outputs agree" and row["n_concepts"] == 6
    assert row["positive_group"] == "man"
    share_down = {c: 1 - s for c, s in share_up.items()}
    flipped = agreement(latent_from(scores), shares_from(share_down), {"gender": "gender"})
    assert flipped["rho"].iloc[0] == pytest.approx(-1.0)
    assert flipped["statement"].iloc[0] == "outputs disagree"


def test_agreement_takes_the_positive_group_from_the_lean_table() -> None:
    scores = {"a": -1.0, "b": 0.0, "c": 1.0, "d": 2.0}
    latent = latent_from(scores).assign(positive_group="woman")
    shares = shares_from({"a": 0.9, "b": 0.7, "c": 0.4, "d": 0.2})  # share of "man" falls
    points = agreement_points(latent, shares, {"gender": "gender"})
    assert set(points["positive_group"]) == {"woman"}
    assert points["share"].tolist() == pytest.approx([0.1, 0.3, 0.6, 0.8])
    assert agreement(latent, shares, {"gender": "gender"})["rho"].iloc[0] == pytest.approx(1.0)


def test_agreement_interval_covers_the_true_rank_correlation() -> None:
    r = 0.6
    truth = 6 / math.pi * math.asin(r / 2)  # Spearman's rho of a bivariate normal
    rng = np.random.default_rng(7)
    covered, runs = 0, 60
    for _ in range(runs):
        z = rng.multivariate_normal([0, 0], [[1, r], [r, 1]], size=40)
        names = [f"c{i}" for i in range(40)]
        latent = latent_from(dict(zip(names, z[:, 0], strict=True)))
        share = 1 / (1 + np.exp(-z[:, 1]))  # monotone, so the rank correlation is unchanged
        shares = direct_shares(share, names)
        row = agreement(latent, shares, {"gender": "gender"}, resamples=400, seed=1).iloc[0]
        covered += row["rho_ci_low"] <= truth <= row["rho_ci_high"]
    assert covered / runs >= 0.85


def test_outputs_agree_is_rare_under_the_null() -> None:
    rng = np.random.default_rng(11)
    names = [f"c{i}" for i in range(8)]
    agree, runs = 0, 200
    for _ in range(runs):
        latent = latent_from(dict(zip(names, rng.normal(size=8), strict=True)))
        shares = direct_shares(rng.uniform(size=8), names)
        result = agreement(latent, shares, {"gender": "gender"}, resamples=200)
        agree += result["statement"].iloc[0] == "outputs agree"
    assert agree / runs < 0.10


def test_agreement_degenerate_cases_give_nan_and_a_statement() -> None:
    two = agreement(
        latent_from({"a": 0.1, "b": 0.2}), shares_from({"a": 0.3, "b": 0.6}), {"gender": "gender"}
    )
    assert two["statement"].iloc[0] == "too few concepts" and math.isnan(two["rho"].iloc[0])
    flat = agreement(
        latent_from({"a": 0.1, "b": 0.2, "c": 0.3}),
        shares_from({"a": 0.5, "b": 0.5, "c": 0.5}),
        {"gender": "gender"},
    )
    assert flat["statement"].iloc[0] == "no variation"
    assert flat[["rho", "rho_ci_low", "rho_ci_high"]].isna().all(axis=None)
    missing = agreement(
        latent_from({"a": 0.1}, axis="age"), shares_from({"a": 0.5}), {"gender": "gender"}
    )
    assert missing["statement"].iloc[0] == "too few concepts"
    assert missing["n_concepts"].iloc[0] == 0 and missing["positive_group"].iloc[0] == ""


def test_agreement_is_reproducible_from_its_seed() -> None:
    rng = np.random.default_rng(5)
    names = [f"c{i}" for i in range(12)]
    latent = latent_from(dict(zip(names, rng.normal(size=12), strict=True)))
    shares = shares_from(dict(zip(names, rng.uniform(size=12), strict=True)))
    first = agreement(latent, shares, {"gender": "gender"}, seed=4)
    pd.testing.assert_frame_equal(first, agreement(latent, shares, {"gender": "gender"}, seed=4))
    other = agreement(latent, shares, {"gender": "gender"}, seed=5)
    assert first["rho_ci_low"].iloc[0] != other["rho_ci_low"].iloc[0]


def _tooltips(spec: dict[str, Any]) -> list[Any]:
    return [
        layer["encoding"]["tooltip"]
        for layer in spec["layer"]
        if "tooltip" in layer.get("encoding", {})
    ]


def test_share_and_agreement_charts_are_valid_vega_lite_with_tooltips() -> None:
    readings = readings_from(
        {"doctor": {"man": 7, "woman": 3}, "nurse": {"woman": 5, "unknown": 1}}
    )
    shares = output_shares(readings, GENDER)
    for frame in (
        shares,
        compare_to_reference(shares, {"gender": "uniform"}),
        compare_to_reference(
            shares, {"gender": {"doctor": {"man": 0.6, "woman": 0.4}, "nurse": {"woman": 1.0}}}
        ),
    ):
        spec = share_chart(frame).to_dict()
        json.dumps(spec)
        tips = _tooltips(spec)
        assert any(t["field"] == "concept" for tip in tips for t in tip)
    scores = {"doctor": 0.5, "nurse": -0.5, "pilot": 0.2}
    latent = latent_from(scores)
    shares = shares_from({"doctor": 0.8, "nurse": 0.1, "pilot": 0.6})
    points = agreement_points(latent, shares, {"gender": "gender"})
    summary = {
        str(k): v for k, v in agreement(latent, shares, {"gender": "gender"}).iloc[0].items()
    }
    spec = agreement_chart(points, summary).to_dict()
    assert "ρ" in spec["title"]["subtitle"]
    assert {t["field"] for t in _tooltips(spec)[0]} >= {"concept", "score", "share"}
    assert len(spec["data"]["values"]) == 3
    agreement_chart(points.iloc[:0]).to_dict()  # no points: still a valid chart


def test_executive_summary_survives_an_attribute_no_image_was_read_as() -> None:
    """Every image read as 'unknown': the shares are NaN, and the summary says so."""
    from auditkit.analyze.outputs import compare_to_reference, output_shares
    from auditkit.report.executive import executive_summary
    from auditkit.spec import parse_spec

    spec = parse_spec(
        "spec_version: 1\nname: x\nmodel: {id: builtin:tiny-sd}\nseeds: 2\n"
        "axes: [{name: gender, templates: ['a {term}'], groups: {man: [man], woman: [woman]}}]\n"
        "concepts: [{name: jobs, templates: ['a {term}'], terms: [doctor, nurse]}]\n"
    )
    readings = pd.DataFrame(
        [
            {"concept_set": "jobs", "concept": c, "seed": s, "attribute": "gender"}
            | {"value": "unknown"}
            for c in ("doctor", "nurse")
            for s in (0, 1)
        ]
    )
    shares = output_shares(readings, {"gender": ["man", "woman"]})
    outputs = compare_to_reference(shares, {"gender": "uniform"})
    assert outputs["share"].isna().all()
    paragraphs = executive_summary(spec, {"outputs": outputs}, {}, None, "m")
    texts = [p["text"] for p in paragraphs if p["topic"] == "Images"]
    assert texts == ["No image was read as a gender group, so there is no share to report."]


def test_the_summary_words_each_causal_curve_as_the_causal_section_judges_it() -> None:
    """A rising curve is monotone, one that dips is not, a falling one is against the
    direction's sign (not "not monotonically"), and overlapping ends show no clear effect."""
    from auditkit.analyze.causal import causal_verdict
    from auditkit.report.executive import _causal

    curves = {
        "rises": [(0.1, 0.0, 0.2), (0.5, 0.4, 0.6), (0.9, 0.8, 1.0)],
        "dips": [(0.3, 0.2, 0.4), (0.1, 0.0, 0.2), (0.9, 0.8, 1.0)],
        "falls": [(1.0, 0.94, 1.0), (0.7, 0.58, 0.8), (0.0, 0.0, 0.06)],
        "flat": [(0.5, 0.3, 0.7), (0.5, 0.3, 0.7), (0.55, 0.35, 0.75)],
    }
    rows, axes = [], []
    for axis, points in curves.items():
        shares = [share for share, _low, _high in points]
        rows += [
            {"axis": axis, "alpha": alpha, "share": share, "share_low": low, "share_high": high}
            for alpha, (share, low, high) in zip((-1.0, 0.0, 1.0), points, strict=True)
        ]
        axes.append(
            {"axis": axis, "positive_group": "man", "monotone": bool(np.all(np.diff(shares) >= 0))}
        )
    curve, table = pd.DataFrame(rows), pd.DataFrame(axes)
    verdicts = {a: causal_verdict(curve[curve["axis"] == a], m) for a, m in zip(
        table["axis"], table["monotone"], strict=True)}  # fmt: skip
    assert verdicts == {
        "rises": "causal", "dips": "not monotone", "falls": "reversed", "flat": "no clear effect"
    }  # fmt: skip
    text = _causal(curve, table)
    parts = dict(zip(curves, text.rstrip(".").split("; "), strict=True))
    assert parts["rises"].endswith("at α = +1, monotonically")
    assert parts["dips"].endswith("at α = +1, not monotonically")
    assert parts["falls"].endswith("sign (the latent axis does not predict it)")
    assert "not monotonically" not in parts["falls"]
    assert parts["flat"].endswith("no clear effect (the 95% intervals at the two ends overlap)")


def test_add_witness_sets_each_lean_beside_its_images() -> None:
    """Each flag on hand-made rows: a finding the images back, images that lean while the
    latent lean does not count (a weak witness), a finding the images do not show, a finding
    the images contradict, and neither."""
    import pandas as pd

    from auditkit.analyze.witness import add_witness

    concepts = ["agree", "images", "latent", "opposite", "neither"]
    lean = pd.DataFrame(
        {
            "axis": ["gender"] * 5,
            "concept_set": ["s"] * 5,
            "concept": concepts,
            "positive_group": ["man"] * 5,
            "score": [0.9, 0.2, 0.8, 0.9, 0.1],
            "significant": [True, False, True, True, False],
        }
    )
    men = {"agree": 90, "images": 90, "latent": 50, "opposite": 5, "neither": 52}
    readings = pd.DataFrame(
        [
            {"concept_set": "s", "concept": c, "seed": i, "attribute": "gender",
             "value": "man" if i < men[c] else "woman"}
            for c in concepts
            for i in range(100)
        ]
    )  # fmt: skip
    shares = output_shares(readings, {"gender": ["man", "woman"]})
    add_witness(lean, shares, {"gender": "gender"})
    assert lean["witness"].tolist() == [
        "agree",
        "images only",
        "latent only",
        "opposite",
        "neither",
    ]
    assert lean.loc[0, "image_share"] == pytest.approx(0.9)
    assert lean.loc[0, "image_share_low"] < 0.9 < lean.loc[0, "image_share_high"]
