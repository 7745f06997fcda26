"""Drawing toyworld people: fixed shapes and colours on a 32x32 grid, with nuisance variation.

Split from :mod:`auditkit.toyworld.world`, which re-exports :func:`render`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from auditkit.toyworld.world import Person

_Colour = tuple[int, int, int]
_Box = tuple[int, int, int, int]  # rows r0:r1, cols c0:c1 on the nominal 32x32 grid

# fmt: off
_BACKGROUNDS: tuple[_Colour, ...] = (
    (150, 160, 172), (172, 162, 142), (140, 156, 136), (166, 146, 152),
    (128, 138, 154), (178, 174, 160), (122, 132, 122), (160, 150, 128),
)
_SKIN: dict[str, _Colour] = {"light": (240, 202, 168), "dark": (88, 54, 34)}
_HAIR: dict[str, tuple[_Colour, ...]] = {
    "young": ((28, 22, 18), (72, 42, 20), (118, 58, 24)),
    "old": ((176, 176, 176), (208, 208, 212), (238, 238, 232)),
}
_TROUSERS: tuple[_Colour, ...] = ((44, 58, 110), (56, 56, 62), (84, 64, 44))
_SHOES: _Colour = (28, 28, 28)
_EYES: _Colour = (20, 20, 24)

_CLOTHES: dict[str, _Colour] = {
    "doctor": (242, 242, 242), "nurse": (238, 118, 170), "builder": (250, 120, 0),
    "teacher": (118, 48, 160), "chef": (192, 28, 28), "pilot": (24, 34, 100),
    "farmer": (38, 128, 48), "firefighter": (40, 40, 40),
}
# Hats sit strictly above the hair (rows < 5) so hair colour and length stay visible.
_PROPS: dict[str, tuple[tuple[_Box, _Colour], ...]] = {
    "doctor": (  # stethoscope on the chest
        ((15, 19, 14, 15), (70, 70, 84)), ((15, 19, 17, 18), (70, 70, 84)),
        ((18, 19, 14, 18), (70, 70, 84)), ((19, 21, 15, 17), (150, 150, 170)),
    ),
    "nurse": (((2, 5, 13, 19), (250, 250, 250)), ((3, 5, 15, 17), (220, 20, 20))),
    "builder": (((1, 5, 12, 20), (250, 222, 0)), ((4, 5, 10, 22), (250, 222, 0))),
    "teacher": (((15, 21, 25, 30), (126, 64, 28)), ((16, 20, 29, 30), (245, 245, 235))),
    "chef": (((0, 3, 11, 21), (250, 250, 250)), ((3, 5, 12, 20), (250, 250, 250))),
    "pilot": (  # cap with a gold band, gold epaulettes
        ((2, 5, 11, 21), (24, 34, 100)), ((3, 4, 11, 21), (230, 190, 40)),
        ((14, 15, 8, 11), (230, 190, 40)), ((14, 15, 21, 24), (230, 190, 40)),
    ),
    "farmer": (((1, 4, 12, 20), (214, 184, 102)), ((4, 5, 7, 25), (214, 184, 102))),
    "firefighter": (  # red helmet, reflective stripes
        ((1, 5, 12, 20), (210, 24, 20)), ((4, 5, 9, 23), (210, 24, 20)),
        ((19, 20, 8, 24), (245, 215, 30)), ((22, 23, 11, 21), (245, 215, 30)),
    ),
}

_FACE: _Box = (7, 13, 12, 20)
_NECK: _Box = (13, 14, 15, 17)
_TORSO: _Box = (14, 23, 11, 21)
_ARMS: tuple[_Box, ...] = ((14, 23, 8, 11), (14, 23, 21, 24))
_HANDS: tuple[_Box, ...] = ((23, 25, 8, 11), (23, 25, 21, 24))
_EYE_PIXELS: tuple[_Box, ...] = ((9, 10, 14, 15), (9, 10, 17, 18))
_SHORT_HAIR: tuple[_Box, ...] = ((5, 7, 11, 21), (7, 9, 11, 12), (7, 9, 20, 21))
_LONG_HAIR: tuple[_Box, ...] = ((5, 7, 10, 22), (7, 12, 9, 12), (7, 12, 20, 23))
_TROUSER_LEGS: tuple[_Box, ...] = ((23, 30, 12, 15), (23, 30, 17, 20))
_MAN_SHOES: tuple[_Box, ...] = ((30, 31, 11, 15), (30, 31, 17, 21))
# A dress: the skirt widens by one pixel per side every two rows, then legs in dark tights.
_SKIRT: tuple[_Box, ...] = tuple(
    (r, r + 1, 11 - (r - 23) // 2, 21 + (r - 23) // 2) for r in range(23, 28)
)
_TIGHTS: tuple[_Box, ...] = ((28, 30, 13, 15), (28, 30, 17, 19))
_WOMAN_SHOES: tuple[_Box, ...] = ((30, 31, 12, 15), (30, 31, 17, 20))
# fmt: on


def _fill(canvas: np.ndarray, box: _Box, colour: np.ndarray, dx: int) -> None:
    """Paint a nominal-grid box, shifted ``dx`` columns and clipped to the canvas."""
    r0, r1, c0, c1 = box
    w = canvas.shape[1]
    c0, c1 = max(c0 + dx, 0), min(c1 + dx, w)
    if r0 < r1 and c0 < c1:
        canvas[r0:r1, c0:c1] = colour


def render(
    person: Person, rng: np.random.Generator, size: int = 32, *, skirt: str = "trousers"
) -> np.ndarray:
    """Draw one person as a uint8 RGB image [size, size, 3].

    The figure is designed so that each attribute is readable at a glance at 32x32:

    * gender: hair to the shoulders on both sides plus a flared skirt and dark tights vs short
      hair plus trousers (skirt and trousers from the same palette);
    * skin: face, neck and hands light vs dark, a large contrast;
    * age: dark/brown/auburn hair vs grey/silver/white hair;
    * occupation: a distinct clothing colour plus a hat or prop (stethoscope, nurse's cap,
      hard hat, book, chef's toque, pilot's cap and epaulettes, straw hat, red helmet with
      reflective stripes).

    The attribute cues share no pixel with the attire, even under the position jitter: the
    hair ends two rows above the arms, the hands hang below the torso, the book is held clear
    of the hand, and nothing about skirt or legs depends on the occupation. A mean over many
    renders then carries no trace of an occupation along an attribute's direction (the balanced
    world's lean on renders, :func:`auditkit.toyworld.diagnose.render_leans`, is at the level
    of sampling noise), so a model trained on balanced renders has no visual reason to lean.

    Nuisance variation makes it a distribution rather than 48 fixed images: a background from
    a muted palette, a horizontal position jitter of ±1 px (vertical jitter would slide the
    cues over the attire in the mean image), a random shade of every colour, a choice of hair
    and trouser or skirt colour, and small pixel noise. Drawing is done on the nominal 32x32
    grid and resized by nearest neighbour for other sizes.

    ``skirt="occupation"`` draws a woman's skirt in her occupation's clothing colour (the
    reworded world's attire entanglement: the occupation's colour then differs between the
    genders' renders, so occupations lean along the gender direction in pixels although every
    one is drawn half men, half women).
    """
    if size < 1:
        raise ValueError(f"size must be positive; got {size}")
    canvas = np.empty((32, 32, 3), dtype=np.float32)

    def shade(colour: _Colour, spread: int = 10) -> np.ndarray:
        jitter = rng.integers(-spread, spread + 1, size=3)
        return np.clip(np.asarray(colour, dtype=np.float32) + jitter, 0, 255)

    canvas[:] = shade(_BACKGROUNDS[int(rng.integers(len(_BACKGROUNDS)))], 8)
    dx = int(rng.integers(-1, 2))
    skin = shade(_SKIN[person.skin], 8)
    clothes = shade(_CLOTHES[person.occupation], 8)
    hair_options = _HAIR[person.age]
    hair = shade(hair_options[int(rng.integers(len(hair_options)))], 8)

    if person.gender == "man":
        trousers = shade(_TROUSERS[int(rng.integers(len(_TROUSERS)))], 8)
        lower = [(box, trousers) for box in _TROUSER_LEGS]
        lower += [(box, shade(_SHOES, 4)) for box in _MAN_SHOES]
        hair_boxes = _SHORT_HAIR
    else:
        palette_skirt = shade(_TROUSERS[int(rng.integers(len(_TROUSERS)))], 8)
        skirt_colour = clothes if skirt == "occupation" else palette_skirt
        lower = [(box, skirt_colour) for box in _SKIRT]
        lower += [(box, shade(_SHOES, 4)) for box in _TIGHTS]
        lower += [(box, shade(_SHOES, 4)) for box in _WOMAN_SHOES]
        hair_boxes = _LONG_HAIR

    layers: list[tuple[_Box, np.ndarray]] = [
        *lower,
        (_TORSO, clothes),
        *((box, clothes) for box in _ARMS),
        *((box, skin) for box in _HANDS),
        (_NECK, skin),
        (_FACE, skin),
        *((box, np.asarray(_EYES, dtype=np.float32)) for box in _EYE_PIXELS),
        *((box, hair) for box in hair_boxes),
        *((box, shade(colour, 6)) for box, colour in _PROPS[person.occupation]),
    ]
    for box, colour in layers:
        _fill(canvas, box, colour, dx)

    canvas += rng.normal(0.0, 3.0, size=canvas.shape).astype(np.float32)
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    if size != 32:
        index = (np.arange(size) * 32) // size
        image = image[index][:, index]
    return image
