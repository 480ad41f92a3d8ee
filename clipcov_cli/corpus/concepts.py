"""Visual concepts drawn procedurally: a shape (or glyph) in a colour with a texture, with random
position, scale and rotation over a cluttered background. Pure Pillow + numpy, deterministic given
the numpy Generator passed in."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring", "diamond", "arrow")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 60, 220),
    "yellow": (235, 210, 20),
    "purple": (140, 40, 180),
    "orange": (245, 130, 20),
}
TEXTURES: tuple[str, ...] = ("solid", "striped", "dotted")


@dataclass(frozen=True)
class Concept:
    index: int
    shape: str
    colour: str

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


def all_concepts() -> list[Concept]:
    """Every (shape, colour) concept in a fixed order that spreads shapes and colours evenly:
    shape i takes colours i, i+1, i+2 (mod 6) first, so the first 24 classes use each shape 3 times
    and each colour 4 times."""
    colours = list(COLOURS)
    pairs: list[tuple[str, str]] = []
    for rnd in range(len(colours)):
        for i, shape in enumerate(SHAPES):
            pairs.append((shape, colours[(i + rnd) % len(colours)]))
    seen: list[tuple[str, str]] = []
    for p in pairs:
        if p not in seen:
            seen.append(p)
    return [Concept(i, s, c) for i, (s, c) in enumerate(seen)]


def max_classes() -> int:
    return len(SHAPES) * len(COLOURS)


def _polygon(shape: str, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    def pts(angles_radii):
        return [(cx + rr * math.cos(a + rot), cy + rr * math.sin(a + rot)) for a, rr in angles_radii]

    if shape == "square":
        return pts([(math.pi / 4 + k * math.pi / 2, r) for k in range(4)])
    if shape == "triangle":
        return pts([(-math.pi / 2 + k * 2 * math.pi / 3, r) for k in range(3)])
    if shape == "diamond":
        return pts([(k * math.pi / 2, r * (1.0 if k % 2 == 0 else 0.6)) for k in range(4)])
    if shape == "star":
        return pts([(-math.pi / 2 + k * math.pi / 5, r if k % 2 == 0 else r * 0.45) for k in range(10)])
    if shape == "cross":
        a, b = r, r * 0.35
        base = [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b), (-a, b), (-a, -b), (-b, -b)]
    elif shape == "arrow":
        a, b = r, r * 0.3
        base = [(-a, -b), (0.1 * a, -b), (0.1 * a, -a * 0.7), (a, 0), (0.1 * a, a * 0.7), (0.1 * a, b), (-a, b)]
    else:
        raise ValueError(shape)
    c, s = math.cos(rot), math.sin(rot)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in base]


def _texture_mask(size: int, texture: str, rng: np.random.Generator) -> Image.Image | None:
    if texture == "solid":
        return None
    mask = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(mask)
    if texture == "striped":
        step = int(rng.integers(4, 7))
        for x in range(-size, 2 * size, step):
            d.line([(x, 0), (x + size, size)], fill=255, width=max(1, step // 2))
    else:  # dotted
        step = int(rng.integers(4, 6))
        for y in range(0, size, step):
            for x in range(0, size, step):
                d.ellipse([x, y, x + step // 2 + 1, y + step // 2 + 1], fill=255)
    return mask


def _background(size: int, rng: np.random.Generator) -> Image.Image:
    base = rng.integers(150, 256) if rng.random() < 0.7 else rng.integers(0, 90)
    tint = rng.integers(-20, 21, size=3)
    arr = np.clip(base + tint[None, None, :] + rng.normal(0, 8, size=(size, size, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr, "RGB")
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 7))):  # clutter: grey strokes and specks
        g = int(rng.integers(60, 200))
        x0, y0, x1, y1 = (int(v) for v in rng.integers(0, size, size=4))
        if rng.random() < 0.5:
            d.line([(x0, y0), (x1, y1)], fill=(g, g, g), width=int(rng.integers(1, 3)))
        else:
            rr = int(rng.integers(1, 4))
            d.ellipse([x0, y0, x0 + rr, y0 + rr], fill=(g, g, g))
    return img


def draw_concept(concept: Concept, texture: str, size: int, rng: np.random.Generator) -> Image.Image:
    """One image of ``concept`` with ``texture``: random position, scale, rotation and clutter."""
    img = _background(size, rng)
    r = size * float(rng.uniform(0.22, 0.38))
    cx = float(rng.uniform(r, size - r))
    cy = float(rng.uniform(r, size - r))
    rot = float(rng.uniform(0, 2 * math.pi))
    jitter = rng.integers(-25, 26, size=3)
    colour = tuple(int(v) for v in np.clip(np.array(COLOURS[concept.colour]) + jitter, 0, 255))
    shape_mask = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(shape_mask)
    if concept.shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif concept.shape == "ring":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        d.ellipse([cx - r * 0.55, cy - r * 0.55, cx + r * 0.55, cy + r * 0.55], fill=0)
    else:
        d.polygon(_polygon(concept.shape, cx, cy, r, rot), fill=255)
    tex = _texture_mask(size, texture, rng)
    fill = Image.new("RGB", (size, size), colour)
    if tex is not None:
        # textured shapes: the colour on the pattern, a darker shade of it between
        shade = tuple(int(v * 0.55) for v in colour)
        fill = Image.composite(fill, Image.new("RGB", (size, size), shade), tex)
    img.paste(fill, (0, 0), shape_mask)
    return img


def draw_junk(size: int, rng: np.random.Generator) -> Image.Image:
    """A junk image: noise, a flat banner, or a blank placeholder with a grid."""
    kind = int(rng.integers(0, 3))
    if kind == 0:
        arr = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        return Image.fromarray(arr, "RGB")
    g = int(rng.integers(180, 250))
    img = Image.new("RGB", (size, size), (g, g, g))
    d = ImageDraw.Draw(img)
    if kind == 1:
        h = int(rng.integers(size // 5, size // 2))
        y = int(rng.integers(0, size - h))
        c = tuple(int(v) for v in rng.integers(0, 256, size=3))
        d.rectangle([0, y, size, y + h], fill=c)
        d.text((2, y + 2), "BUY NOW", fill=(255, 255, 255))
    else:
        step = size // 8
        for x in range(0, size, step):
            d.line([(x, 0), (x, size)], fill=(g - 40,) * 3)
            d.line([(0, x), (size, x)], fill=(g - 40,) * 3)
    return img


def perturb(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A near-duplicate: a small shift and brightness change of ``img``."""
    arr = np.asarray(img).astype(np.int16)
    dx, dy = (int(v) for v in rng.integers(-2, 3, size=2))
    arr = np.roll(arr, (dy, dx), axis=(0, 1))
    arr = np.clip(arr + int(rng.integers(-12, 13)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")
