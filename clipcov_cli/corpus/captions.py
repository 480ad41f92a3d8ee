"""Web-style captions: templates with synonyms and attributes, and boilerplate for junk."""

from __future__ import annotations

import numpy as np

from clipcov_cli.corpus.concepts import Concept

SHAPE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc", "round dot"),
    "square": ("square", "box", "tile"),
    "triangle": ("triangle", "triangular shape", "pyramid sign"),
    "star": ("star", "star shape", "five-pointed star"),
    "cross": ("cross", "plus sign", "cross shape"),
    "ring": ("ring", "donut", "hoop"),
    "diamond": ("diamond", "rhombus", "diamond shape"),
    "arrow": ("arrow", "arrow sign", "pointer"),
}
COLOUR_SYNONYMS: dict[str, tuple[str, ...]] = {
    "red": ("red", "crimson", "scarlet"),
    "green": ("green", "emerald", "grass-green"),
    "blue": ("blue", "navy", "cobalt"),
    "yellow": ("yellow", "golden", "lemon"),
    "purple": ("purple", "violet", "plum"),
    "orange": ("orange", "tangerine", "amber"),
}
TEXTURE_WORDS: dict[str, tuple[str, ...]] = {
    "solid": ("plain", "solid", "flat"),
    "striped": ("striped", "stripy", "lined"),
    "dotted": ("dotted", "polka-dot", "spotted"),
}
SIZE_WORDS = ("small", "big", "tiny", "large", "")
BACKGROUNDS = ("white", "light", "grey", "dark", "messy", "plain")

TEMPLATES: tuple[str, ...] = (
    "a photo of a {size} {colour} {shape}",
    "{texture} {colour} {shape} on a {bg} background",
    "close-up of a {colour} {shape} with a {texture} pattern",
    "my new {colour} {shape} sticker",
    "{colour} {shape} icon, {texture} style",
    "stock image: {size} {texture} {shape} in {colour}",
    "hand-made {colour} {shape} decoration",
)

BOILERPLATE: tuple[str, ...] = (
    "click to enlarge",
    "IMG_{num}.jpg",
    "image not available",
    "DSC{num}",
    "placeholder",
    "no description",
    "view full size",
    "thumbnail {num}",
)

# Clean prompts for zero-shot evaluation and for the class vocabulary.
PROMPT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {c}.",
    "a {c}.",
    "an image of a {c}.",
    "a picture of a {c}.",
    "a drawing of a {c}.",
)


def _pick(options, rng: np.random.Generator) -> str:
    return str(options[int(rng.integers(0, len(options)))])


def web_caption(concept: Concept, texture: str, rng: np.random.Generator) -> str:
    """A noisy-web style caption of ``concept``: a random template, synonyms and attributes."""
    text = _pick(TEMPLATES, rng).format(
        size=_pick(SIZE_WORDS, rng),
        colour=_pick(COLOUR_SYNONYMS[concept.colour], rng),
        shape=_pick(SHAPE_SYNONYMS[concept.shape], rng),
        texture=_pick(TEXTURE_WORDS[texture], rng),
        bg=_pick(BACKGROUNDS, rng),
    )
    return " ".join(text.split())


def clean_caption(concept: Concept, texture: str) -> str:
    """The plain caption used for the clean splits."""
    return f"a photo of a {TEXTURE_WORDS[texture][0]} {concept.colour} {concept.shape}"


def junk_caption(rng: np.random.Generator) -> str:
    return _pick(BOILERPLATE, rng).format(num=int(rng.integers(1000, 9999)))
