"""toyworld: the renderer, caption grammar, planted rates, training sets and captioner."""

from __future__ import annotations

import json
import re
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from auditkit.toyworld.world import (
    ATTRIBUTES,
    CAPTION_MODE_SHARES,
    OCCUPATIONS,
    TEMPLATES,
    Person,
    TrainingSet,
    caption,
    caption_mode,
    caption_term,
    planted_rates,
    random_people,
    render,
    render_many,
    sample_marked,
    sample_training_set,
    spearman_rho,
    vocabulary,
    write_planted_rates,
)

DOCTOR = Person(gender="woman", skin="dark", age="young", occupation="doctor")


@pytest.fixture(scope="module")
def large_set() -> TrainingSet:
    """One large biased training set shared by the statistical tests (about 3 s to draw)."""
    return sample_training_set(16000, "biased", np.random.default_rng(7))


# --- rendering ------------------------------------------------------------------------------


def test_render_shape_dtype_and_determinism() -> None:
    image = render(DOCTOR, np.random.default_rng(3))
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert np.array_equal(image, render(DOCTOR, np.random.default_rng(3)))
    assert not np.array_equal(image, render(DOCTOR, np.random.default_rng(4)))
    assert render(DOCTOR, np.random.default_rng(3), size=64).shape == (64, 64, 3)


def test_render_is_a_distribution_not_a_fixed_image() -> None:
    images = render_many([DOCTOR] * 20, np.random.default_rng(0)).astype(np.int16)
    distinct = {img.tobytes() for img in images}
    assert len(distinct) == 20
    backgrounds = {tuple(img[0, 0] // 16) for img in images}  # corner pixel = background
    assert len(backgrounds) > 3


def _paired(change: dict[str, str], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two renders from the same seed that differ only in ``change``."""
    other = Person(**{**DOCTOR.__dict__, **change})
    first = render(DOCTOR, np.random.default_rng(seed)).astype(np.int32)
    second = render(other, np.random.default_rng(seed)).astype(np.int32)
    return first, second


def test_skin_tone_separates_face_colour() -> None:
    rng = np.random.default_rng(1)
    people = random_people(400, rng)
    images = render_many(people, rng).astype(np.float64)
    # The face spans rows 7-12, cols 12-19 before a jitter of ±1 row and ±2 columns.
    face = np.median(images[:, 8:12, 14:18].mean(axis=3).reshape(len(people), -1), axis=1)
    light = face[[p.skin == "light" for p in people]]
    dark = face[[p.skin == "dark" for p in people]]
    assert light.min() > dark.max() + 60


def test_gender_changes_hair_and_lower_body() -> None:
    for seed in range(10):
        woman, man = _paired({"gender": "man"}, seed)
        changed = np.abs(woman - man).sum(axis=2) > 60
        assert changed.sum() >= 50  # long hair at both sides of the face, dress vs trousers
        rows = np.flatnonzero(changed.any(axis=1))
        assert rows.min() <= 12 and rows.max() >= 26  # both the head and the legs differ


def test_age_turns_hair_grey() -> None:
    for seed in range(10):
        young, old = _paired({"age": "old"}, seed)
        changed = np.abs(young - old).sum(axis=2) > 60
        assert changed.sum() >= 30
        assert old[changed].mean() > young[changed].mean() + 80


def test_occupations_have_distinct_clothing() -> None:
    rng = np.random.default_rng(2)
    torso = {}
    for occupation in OCCUPATIONS:
        person = Person(gender="man", skin="light", age="young", occupation=occupation)
        images = render_many([person] * 10, rng).astype(np.float64)
        torso[occupation] = np.median(images[:, 15:22, 13:19].reshape(-1, 3), axis=0)
    for a, b in combinations(OCCUPATIONS, 2):
        assert np.abs(torso[a] - torso[b]).sum() > 60, (a, b)


# --- captions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("marked", "term"),
    [
        ({"occupation"}, "doctor"),
        ({"occupation", "gender"}, "woman doctor"),
        ({"occupation", "gender", "skin", "age"}, "young dark woman doctor"),
        ({"occupation", "age", "skin"}, "young dark doctor"),
        ({"gender"}, "woman"),
        ({"gender", "age"}, "young woman"),
        ({"skin"}, "dark person"),
        (set(), "person"),
    ],
)
def test_caption_terms(marked: set[str], term: str) -> None:
    assert caption_term(DOCTOR, frozenset(marked)) == term
    text = caption(DOCTOR, np.random.default_rng(0), marked=frozenset(marked))
    assert text in {template.format(term=term) for template in TEMPLATES}


def test_caption_rejects_unknown_fields_and_people() -> None:
    with pytest.raises(ValueError, match="marked"):
        caption_term(DOCTOR, frozenset({"height"}))
    with pytest.raises(ValueError, match="gender"):
        Person(gender="other", skin="light", age="old", occupation="chef")


def test_templates_and_vocabulary() -> None:
    assert len(TEMPLATES) >= 4
    assert all(t.endswith("of a {term}") for t in TEMPLATES)
    words = vocabulary()
    assert all(re.fullmatch(r"[a-z]+", w) for w in words)
    assert len(OCCUPATIONS) == 8 and len(set(OCCUPATIONS)) == 8
    assert set(OCCUPATIONS) | {"person", "man", "woman", "light", "dark", "young", "old"} <= set(
        words
    )


def test_vocabulary_covers_every_caption_word(large_set: TrainingSet) -> None:
    words = set(vocabulary())
    used = {word for text in large_set.captions for word in text.split()}
    assert used <= words


def test_vocabulary_makes_a_one_token_per_word_tokenizer(tmp_path: Path) -> None:
    from auditkit.models.tokenizer import build_clip_tokenizer

    tokenizer = build_clip_tokenizer(tmp_path, vocabulary())
    ids = tokenizer("a photo of a young dark woman firefighter", add_special_tokens=False)
    assert len(ids["input_ids"]) == 8


def test_sample_marked_follows_the_mode_shares() -> None:
    rng = np.random.default_rng(5)
    modes = [caption_mode(sample_marked(rng)) for _ in range(20000)]
    for mode, share in CAPTION_MODE_SHARES.items():
        assert abs(modes.count(mode) / len(modes) - share) < 0.015


# --- planted rates --------------------------------------------------------------------------


def test_biased_rates_are_spread_and_independent() -> None:
    rates = planted_rates("biased")
    assert set(rates) == set(ATTRIBUTES)
    gender = [rates["gender"][o] for o in OCCUPATIONS]
    skin = [rates["skin"][o] for o in OCCUPATIONS]
    assert len(set(gender)) == 8 and min(gender) == pytest.approx(0.1)
    assert max(gender) == pytest.approx(0.9)
    assert len(set(skin)) == 8 and min(skin) >= 0.1 and max(skin) <= 0.9
    assert abs(spearmanr(gender, skin).statistic) <= 0.1
    assert spearman_rho(gender, skin) == pytest.approx(spearmanr(gender, skin).statistic)
    assert set(rates["age"].values()) == {0.5}


def test_balanced_rates_are_all_half() -> None:
    rates = planted_rates("balanced")
    assert {v for table in rates.values() for v in table.values()} == {0.5}
    with pytest.raises(ValueError, match="variant"):
        planted_rates("skewed")  # type: ignore[arg-type]


def test_write_planted_rates(tmp_path: Path) -> None:
    biased = json.loads(write_planted_rates(tmp_path / "biased.json", "biased").read_text())
    assert biased["schema_version"] == 1 and biased["variant"] == "biased"
    assert biased["rates"] == planted_rates("biased")
    assert abs(biased["spearman_gender_skin"]) <= 0.1
    balanced = json.loads(write_planted_rates(tmp_path / "b.json", "balanced").read_text())
    assert balanced["spearman_gender_skin"] is None


def test_unmarked_captions_carry_the_planted_rates(large_set: TrainingSet) -> None:
    data = large_set
    rates = planted_rates("biased")
    assert data.images.shape == (16000, 32, 32, 3)
    for occupation in OCCUPATIONS:
        chosen = [
            person
            for text, person in zip(data.captions, data.people, strict=True)
            if text.endswith(f" of a {occupation}")
        ]
        assert len(chosen) > 500
        for name, (first, _) in ATTRIBUTES.items():
            share = np.mean([getattr(p, name) == first for p in chosen])
            assert abs(share - rates[name][occupation]) < 0.05, (occupation, name, share)


def test_training_set_is_deterministic() -> None:
    a = sample_training_set(50, "balanced", np.random.default_rng(11))
    b = sample_training_set(50, "balanced", np.random.default_rng(11))
    assert np.array_equal(a.images, b.images) and a.captions == b.captions
    assert [caption_mode(m) for m in a.marked].count("unmarked") > 0


# --- captioner ------------------------------------------------------------------------------


def test_captioner_trains_reads_and_round_trips(tmp_path: Path) -> None:
    import torch

    from auditkit.toyworld.captioner import load_captioner, save_captioner, train_captioner

    captioner, metrics = train_captioner(
        steps=120, seed=0, pool_size=2000, held_out=400, num_threads=1
    )
    assert set(metrics.accuracy) == {"gender", "skin", "age", "occupation"}
    assert min(metrics.accuracy.values()) >= 0.9, metrics.accuracy

    folder = save_captioner(captioner, tmp_path / "captioner")
    loaded = load_captioner(folder)
    assert (
        loaded.sha256
        == captioner.sha256
        == json.loads((folder / "captioner.json").read_text())["weights_sha256"]
    )
    assert loaded.id == "toyworld-captioner" and loaded.metrics == metrics

    rng = np.random.default_rng(99)
    people = random_people(32, rng)
    images = render_many(people, rng)
    as_float = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    expected = captioner.probabilities(images)
    for name, values in loaded.probabilities(as_float).items():
        np.testing.assert_array_equal(values, expected[name])
    readings = loaded.read(images)
    assert np.mean([r == p.__dict__ for r, p in zip(readings, people, strict=True)]) >= 0.6
    text = loaded.caption(images[:1])[0]
    reading = readings[0]
    assert text == "a photo of a {age} {skin} {gender} {occupation}".format(**reading)


def test_render_leans_measure_what_the_drawing_ties_to_the_attributes() -> None:
    """The lean statistic on renders: the shipped drawing keeps attribute cues and attire
    apart, so the balanced world leans no further than sampling noise (0.05 at 1,000 renders
    per mean), while the biased world's renders lean with its planted rates; a drawing that
    moves the attire with an attribute is caught."""
    from auditkit.analyze.stats import spearman
    from auditkit.toyworld.diagnose import render_leans
    from auditkit.toyworld.drawing import render
    from auditkit.toyworld.world import planted_rates

    shipped = render_leans("balanced", n=1000, seed=0)
    assert set(shipped) == {"gender", "skin", "age"}
    assert all(len(per) == 8 for per in shipped.values())
    assert shipped == render_leans("balanced", n=1000, seed=0)  # seeded
    assert max(abs(v) for per in shipped.values() for v in per.values()) < 0.12, shipped

    biased = render_leans("biased", n=1000, seed=0)
    rates = planted_rates("biased")
    for axis in ("gender", "skin"):
        jobs = list(biased[axis])
        assert spearman([rates[axis][j] for j in jobs], [biased[axis][j] for j in jobs]) > 0.9
    assert max(abs(v) for v in biased["gender"].values()) > 0.6

    def dressed(person, rng):  # type: ignore[no-untyped-def]
        # a woman's skirt in her occupation's clothing colour (the first toyworld's drawing)
        image = render(person, rng)
        if person.gender == "woman":
            image[23:28, 10:23] = image[16, 12]  # a torso pixel under any jitter
        return image

    coupled = render_leans("balanced", n=1000, seed=0, draw=dressed)
    assert max(abs(v) for v in coupled["gender"].values()) > 0.5, coupled["gender"]


def test_the_reworded_world_speaks_its_own_words_and_couples_skirt_to_attire() -> None:
    """The calibration suite's second world: captions only in its vocabulary and templates,
    age planted, and a woman's skirt in her occupation's colour (the default world's skirt
    ignores the occupation, and its renders are unchanged by the option's existence)."""
    from auditkit.toyworld.world import (
        REWORDED_TEMPLATES,
        Person,
        planted_rates,
        render,
        sample_training_set,
        vocabulary,
    )

    batch = sample_training_set(300, "reworded", np.random.default_rng(4))
    words = set(vocabulary("reworded"))
    assert all(set(c.split()) <= words for c in batch.captions)
    assert not words & {"doctor", "man", "woman", "photo", "young"}
    assert all(
        any(c.startswith(t.split("{")[0]) for t in REWORDED_TEMPLATES) for c in batch.captions
    )
    rates = planted_rates("reworded")
    assert set(rates["gender"].values()) == {0.5} and set(rates["skin"].values()) == {0.5}
    assert max(rates["age"].values()) - min(rates["age"].values()) >= 0.7
    woman = Person(gender="woman", skin="light", age="young", occupation="nurse")
    coloured = render(woman, np.random.default_rng(0), skirt="occupation")
    plain = render(woman, np.random.default_rng(0))
    skirt_row = coloured[25, 12:20].astype(int)
    assert np.abs(skirt_row - np.array([238, 118, 170])).max() <= 20  # the nurse's pink
    assert np.abs(plain[25, 12:20].astype(int) - np.array([238, 118, 170])).max() > 40
    assert np.array_equal(plain, render(woman, np.random.default_rng(0), skirt="trousers"))
