"""The toyworld: people drawn at 32x32, a caption grammar, and biases planted on purpose.

Everything a known-answer audit needs to know about the world lives here:

* :data:`ATTRIBUTES` and :data:`OCCUPATIONS` name what a person can be;
* :func:`render` draws a :class:`Person` so that every attribute is unmistakable at 32x32
  (a tiny diffusion model has to learn it and a small CNN has to read it back);
* :data:`TEMPLATES` and :func:`caption` form the caption grammar;
* :func:`planted_rates` is the written-down answer: per occupation, the share of men and of
  light skin among images captioned with the *unmarked* occupation caption;
* :func:`sample_training_set` draws the training data whose joint distribution *is* the world.

All randomness comes from an explicit :class:`numpy.random.Generator`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from auditkit.toyworld.drawing import render

SCHEMA_VERSION = 1

Variant = Literal["biased", "balanced", "reworded"]

ATTRIBUTES: dict[str, tuple[str, str]] = {
    "gender": ("man", "woman"),
    "skin": ("light", "dark"),
    "age": ("young", "old"),
}
"""Binary attributes; the first value is the first group (A) of the audit axis A − B."""

OCCUPATIONS: tuple[str, ...] = (
    *("doctor", "nurse", "builder", "teacher", "chef", "pilot", "farmer", "firefighter"),
)
"""Eight occupations, single lowercase words that start with a consonant (so "a {term}" reads
fine for every occupation; only the age word "old" breaks the article rule, see TEMPLATES)."""

MARKABLE: tuple[str, ...] = ("age", "skin", "gender", "occupation")
"""Fields a caption can mention, in the fixed word order of a caption term."""

TEMPLATES: tuple[str, ...] = (
    "a photo of a {term}",
    "a picture of a {term}",
    "an image of a {term}",
    "a drawing of a {term}",
    "a portrait of a {term}",
)
"""Caption templates. The article before ``{term}`` is always "a", even for "old" ("a photo of
a old person"): grammar is traded for one property that matters more, namely that an audit
spec's template "a photo of a {term}" reproduces the training captions for every term."""

CAPTION_MODE_SHARES: dict[str, float] = {"unmarked": 0.40, "marked": 0.35, "attribute_only": 0.25}
"""How training captions are drawn: the occupation alone ("a photo of a doctor"), the
occupation with a random non-empty subset of attributes ("a photo of a old woman doctor"), or a
random non-empty subset of attributes alone ("a photo of a man", "a photo of a dark person")."""

# Occupation → (share of men, share of light skin) in the biased variant. The skin ranks were
# chosen so that Spearman(gender, skin) across occupations is exactly 0 (Pearson about -0.01):
# a method that confuses the two axes cannot recover both orders.
# fmt: off
_PLANTED: dict[str, tuple[float, float]] = {
    "nurse": (0.1, 0.2), "teacher": (0.2, 0.7), "chef": (0.3, 0.45), "doctor": (0.4, 0.8),
    "farmer": (0.6, 0.55), "builder": (0.7, 0.3), "pilot": (0.8, 0.6), "firefighter": (0.9, 0.4),
}
# fmt: on

# --- the reworded world ---------------------------------------------------------------------
# A second world for the calibration suite (docs/toyworld.md, "toyworld-reworded"): the same
# figures, told in other words and templates, with a different planted attribute (age) and one
# attribute entangled with the attire but not planted (a woman's skirt takes her occupation's
# clothing colour, so the occupations' colours move along the gender direction, while every
# occupation is drawn half men, half women).
REWORDED_WORDS: dict[str, str] = {
    "doctor": "medic", "nurse": "carer", "builder": "mason", "teacher": "tutor",
    "chef": "cook", "pilot": "aviator", "farmer": "grower", "firefighter": "rescuer",
    "man": "male", "woman": "female", "light": "fair", "dark": "brown",
    "young": "junior", "old": "senior",
}  # fmt: skip
"""Figure or attribute value -> the word the reworded world's captions use for it."""
REWORDED_TEMPLATES: tuple[str, ...] = (
    "an illustration of a {term}",
    "a sketch of a {term}",
    "a snapshot of a {term}",
    "a rendering of a {term}",
)
_REWORDED_YOUNG: dict[str, float] = {
    "doctor": 0.15, "nurse": 0.85, "builder": 0.3, "teacher": 0.75,
    "chef": 0.5, "pilot": 0.5, "farmer": 0.2, "firefighter": 0.9,
}  # fmt: skip
"""Share of young people per figure in the reworded world (age is planted; gender and skin
are 0.5 everywhere)."""


def words_of(variant: str) -> dict[str, str]:
    """Figure or value -> caption word in a variant's world (identity outside 'reworded')."""
    return REWORDED_WORDS if variant == "reworded" else {}


def reader_of(variant: str) -> str:
    """Folder name of the captioner that reads a variant's world (the reworded world's skirts
    take the occupation's colour, so it has a reader of its own)."""
    return "toyworld-reworded-captioner" if variant == "reworded" else "toyworld-captioner"


def templates_of(variant: str) -> tuple[str, ...]:
    """The caption templates of a variant's world."""
    return REWORDED_TEMPLATES if variant == "reworded" else TEMPLATES


@dataclass(frozen=True)
class Person:
    """One toyworld person: a value of each attribute and an occupation."""

    gender: str
    skin: str
    age: str
    occupation: str

    def __post_init__(self) -> None:
        for name, values in ATTRIBUTES.items():
            if getattr(self, name) not in values:
                raise ValueError(f"{name} must be one of {values}; got {getattr(self, name)!r}")
        if self.occupation not in OCCUPATIONS:
            raise ValueError(f"occupation must be one of {OCCUPATIONS}; got {self.occupation!r}")


@dataclass(frozen=True)
class TrainingSet:
    """Rendered images with their captions.

    Attributes:
        images: uint8 array [n, 32, 32, 3].
        captions: one caption per image.
        people: the person drawn in each image (ground truth).
        marked: the fields each caption mentions (see :func:`caption`).
    """

    images: np.ndarray
    captions: list[str]
    people: list[Person]
    marked: list[frozenset[str]]


# --- rendering ------------------------------------------------------------------------------


def render_many(
    people: Sequence[Person], rng: np.random.Generator, size: int = 32, *, skirt: str = "trousers"
) -> np.ndarray:
    """Render several people into one uint8 array [n, size, size, 3] (see :func:`render`)."""
    images = np.empty((len(people), size, size, 3), dtype=np.uint8)
    for i, person in enumerate(people):
        images[i] = render(person, rng, size, skirt=skirt)
    return images


def random_people(n: int, rng: np.random.Generator) -> list[Person]:
    """Draw ``n`` people with every attribute and occupation uniform and independent.

    Used for balanced data such as captioner training and held-out evaluation.
    """
    occupations = rng.integers(len(OCCUPATIONS), size=n)
    codes = {name: rng.integers(2, size=n) for name in ATTRIBUTES}
    return [
        Person(
            occupation=OCCUPATIONS[occupations[i]],
            **{name: values[codes[name][i]] for name, values in ATTRIBUTES.items()},
        )
        for i in range(n)
    ]


# --- captions -------------------------------------------------------------------------------


def caption_term(person: Person, marked: frozenset[str], variant: str = "biased") -> str:
    """The noun phrase of a caption: the marked fields in the order age, skin, gender, occupation.

    Without an occupation the noun is the gender word if gender is marked ("young man"), and
    "person" otherwise ("old person", or just "person" when nothing is marked). In the
    reworded world every field is an adjective in its own words and the noun is the occupation
    or "person" ("senior female person", "junior medic").
    """
    unknown = sorted(set(marked) - set(MARKABLE))
    if unknown:
        raise ValueError(f"marked fields must be among {MARKABLE}; got {unknown}")
    words_map = words_of(variant)
    words = [
        words_map.get(v, v)
        for v in (getattr(person, name) for name in ("age", "skin", "gender") if name in marked)
    ]
    if "occupation" in marked:
        words.append(words_map.get(person.occupation, person.occupation))
    elif "gender" not in marked or words_map:
        words.append("person")
    return " ".join(words)


def caption(
    person: Person, rng: np.random.Generator, *, marked: frozenset[str], variant: str = "biased"
) -> str:
    """Caption ``person`` with a random template, mentioning only the ``marked`` fields.

    ``marked`` is a subset of :data:`MARKABLE`: ``{"occupation"}`` gives the unmarked occupation
    caption "a photo of a doctor", ``{"occupation", "gender"}`` gives "a photo of a woman
    doctor", ``{"age"}`` gives "a photo of a old person".
    """
    templates = templates_of(variant)
    template = templates[int(rng.integers(len(templates)))]
    return template.format(term=caption_term(person, marked, variant))


def caption_mode(marked: frozenset[str]) -> str:
    """Which of the :data:`CAPTION_MODE_SHARES` modes a set of marked fields belongs to."""
    if "occupation" not in marked:
        return "attribute_only"
    return "unmarked" if marked == {"occupation"} else "marked"


def sample_marked(rng: np.random.Generator) -> frozenset[str]:
    """Draw which fields a training caption mentions, following :data:`CAPTION_MODE_SHARES`.

    The draw never looks at the person, which is what keeps the planted rates intact in the
    unmarked captions (see :func:`sample_training_set`).
    """
    modes = list(CAPTION_MODE_SHARES)
    shares = np.asarray([CAPTION_MODE_SHARES[m] for m in modes])
    mode = modes[int(rng.choice(len(modes), p=shares / shares.sum()))]
    if mode == "unmarked":
        return frozenset({"occupation"})
    names = list(ATTRIBUTES)
    subset_code = int(rng.integers(1, 2 ** len(names)))  # uniform over non-empty subsets
    subset = {name for bit, name in enumerate(names) if subset_code >> bit & 1}
    if mode == "marked":
        subset.add("occupation")
    return frozenset(subset)


def vocabulary(variant: str = "biased") -> list[str]:
    """Every word any caption of a variant's world can contain, sorted (for building a
    tokenizer; biased and balanced share one world)."""
    templates = templates_of(variant)
    words_map = words_of(variant)
    words = {word for template in templates for word in template.replace("{term}", "").split()}
    words.update(words_map.get(value, value) for values in ATTRIBUTES.values() for value in values)
    words.update(words_map.get(o, o) for o in OCCUPATIONS)
    words.add("person")
    return sorted(words)


# --- planted rates --------------------------------------------------------------------------


def _check_variant(variant: str) -> None:
    if variant not in get_args(Variant):
        raise ValueError(f"variant must be one of {get_args(Variant)}; got {variant!r}")


def planted_rates(variant: Variant) -> dict[str, dict[str, float]]:
    """The planted answer: per attribute and occupation, the share of the first group.

    ``rates["gender"]["doctor"]`` is the share of men, ``rates["skin"]["doctor"]`` the share of
    light skin, ``rates["age"]["doctor"]`` the share of young people among images of doctors —
    and so among images captioned "a photo of a doctor". In the ``biased`` variant gender
    spreads over 0.1 ... 0.9 (8 distinct values), skin over 0.2 ... 0.8 with a rank order
    uncorrelated with gender (Spearman rho = 0), and age is 0.5 everywhere. In the ``balanced``
    variant every rate is 0.5.
    """
    _check_variant(variant)
    if variant == "balanced":
        return {name: dict.fromkeys(OCCUPATIONS, 0.5) for name in ATTRIBUTES}
    if variant == "reworded":
        return {
            "gender": dict.fromkeys(OCCUPATIONS, 0.5),
            "skin": dict.fromkeys(OCCUPATIONS, 0.5),
            "age": dict(_REWORDED_YOUNG),
        }
    return {
        "gender": {occ: _PLANTED[occ][0] for occ in OCCUPATIONS},
        "skin": {occ: _PLANTED[occ][1] for occ in OCCUPATIONS},
        "age": dict.fromkeys(OCCUPATIONS, 0.5),
    }


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation of two equal-length sequences; None when either is constant."""
    from auditkit.analyze.stats import spearman

    rho = spearman(x, y)
    return None if np.isnan(rho) else rho


def write_planted_rates(path: Path, variant: Variant) -> Path:
    """Write the planted rates as JSON (``schema_version`` 1) and return the path.

    Fields: ``variant``; ``groups`` (attribute → [first group, second group]); ``rates``
    (attribute → occupation → share of the first group); ``spearman_gender_skin`` (rank
    correlation across occupations, null when a rate is constant, as in ``balanced``);
    ``caption_mode_shares`` and ``templates`` (how training captions were drawn).
    """
    figure_rates = planted_rates(variant)
    w = words_of(variant)
    rates = {
        name: {w.get(o, o): rate for o, rate in per.items()} for name, per in figure_rates.items()
    }
    occupations = [w.get(o, o) for o in OCCUPATIONS]
    document: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "variant": variant,
        "groups": {name: [w.get(v, v) for v in values] for name, values in ATTRIBUTES.items()},
        "occupations": occupations,
        "rates": rates,
        "rate_meaning": "share of the first group among images of the occupation",
        "spearman_gender_skin": spearman_rho(
            [rates["gender"][o] for o in occupations], [rates["skin"][o] for o in occupations]
        ),
        "caption_mode_shares": CAPTION_MODE_SHARES,
        "templates": list(templates_of(variant)),
    }
    if w:
        document["figures"] = {w[o]: o for o in OCCUPATIONS}
        document["entangled"] = {
            "gender": "a woman's skirt takes her occupation's clothing colour (not planted)"
        }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path


# --- training data --------------------------------------------------------------------------


def sample_training_set(n: int, variant: Variant, rng: np.random.Generator) -> TrainingSet:
    """Draw ``n`` captioned renders from the planted world.

    The occupation is uniform; then, per occupation, gender ~ Bernoulli(share of men), skin ~
    Bernoulli(share of light) and age ~ Bernoulli(0.5), independently. Each image gets a caption
    whose marked fields come from :func:`sample_marked`: about 40% the unmarked occupation
    ("a photo of a doctor"), 35% the occupation with a random non-empty subset of attributes,
    25% attributes alone.

    Why the unmarked caption carries exactly the planted rates: the choice of marked fields is
    drawn independently of the attribute *values*, so conditioning on "the caption is the
    unmarked 'doctor' caption" is the same as conditioning on "the person is a doctor". Hence
    p(man | "a photo of a doctor") = p(man | doctor) = the planted rate, and a model that fits
    its training captions learns that rate as the default for the unmarked prompt.
    """
    _check_variant(variant)
    if n < 0:
        raise ValueError(f"n must be non-negative; got {n}")
    rates = planted_rates(variant)
    occupation_index = rng.integers(len(OCCUPATIONS), size=n)
    draws = {name: rng.random(n) for name in ATTRIBUTES}
    people: list[Person] = []
    for i in range(n):
        occupation = OCCUPATIONS[occupation_index[i]]
        chosen = {
            name: groups[0] if draws[name][i] < rates[name][occupation] else groups[1]
            for name, groups in ATTRIBUTES.items()
        }
        people.append(Person(occupation=occupation, **chosen))
    images = np.empty((n, 32, 32, 3), dtype=np.uint8)
    captions: list[str] = []
    marked_fields: list[frozenset[str]] = []
    skirt = "occupation" if variant == "reworded" else "trousers"
    for i, person in enumerate(people):
        images[i] = render(person, rng, skirt=skirt)
        marked = sample_marked(rng)
        marked_fields.append(marked)
        captions.append(caption(person, rng, marked=marked, variant=variant))
    return TrainingSet(images=images, captions=captions, people=people, marked=marked_fields)
