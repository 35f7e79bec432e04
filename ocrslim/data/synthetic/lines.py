"""Text lines: a line of the corpus in a font that draws it, as an ink mask; and recognition crops."""

from __future__ import annotations

import math

import cv2
import numpy as np

from ocrslim.core.errors import DataError
from ocrslim.data.fonts import Font
from ocrslim.data.synthetic.context import SynthContext
from ocrslim.data.synthetic.render import (
    augment_photometric,
    background,
    composite,
    perspective,
    text_colour,
    text_mask,
)

__all__ = ["line_mask", "render_rec_line", "rotate_mask", "size_in", "text_and_font"]


def text_and_font(ctx: SynthContext, rng: np.random.Generator, max_chars: int) -> tuple[str, Font]:
    """A line and a font that has a glyph for each of its characters."""
    for _ in range(50):
        text = ctx.corpus.line(rng, max_chars=max_chars)
        need = set(text) - {" "}
        fonts = [f for f in ctx.fonts if need <= f.chars]
        if fonts:
            return text, fonts[int(rng.integers(len(fonts)))]
    raise DataError(  # pragma: no cover - the corpus only holds characters some font draws
        "data.fonts: no font draws the generated lines. apt-get install fonts-wqy-microhei fonts-dejavu-core."
    )


def size_in(rng: np.random.Generator, lo: int, hi: int) -> int:
    return int(rng.integers(lo, max(lo, hi) + 1))


def line_mask(
    ctx: SynthContext, rng: np.random.Generator, size: int, max_chars: int
) -> tuple[str, Font, np.ndarray, tuple[int, int, int, int]]:
    text, font = text_and_font(ctx, rng, max_chars)
    spacing = int(rng.integers(1, max(2, size // 4))) if rng.random() < 0.2 else 0
    mask, ink = text_mask(text, font.path, size, spacing)
    return text, font, mask, ink


def rotate_mask(mask: np.ndarray, box: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate ``mask`` by ``angle`` degrees (counter-clockwise) with expansion; ``box`` (4, 2) goes along."""
    h, w = mask.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(math.ceil(h * sin + w * cos)), int(math.ceil(h * cos + w * sin))
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    out = cv2.warpAffine(mask, m, (nw, nh), flags=cv2.INTER_LINEAR, borderValue=0)
    pts = np.hstack([box, np.ones((4, 1), np.float32)]) @ m.T
    return out, pts.astype(np.float32)


def render_rec_line(ctx: SynthContext, rng: np.random.Generator) -> tuple[np.ndarray, str, str]:
    """One recognition crop: (BGR image, text, font name)."""
    cfg = ctx.cfg
    size = size_in(rng, *cfg.line_height)
    text, font, mask, (x0, y0, x1, y1) = line_mask(ctx, rng, size, cfg.max_chars)
    # Crop to the ink with a random margin, as a detector's box would be (tight to loose).
    px0, px1 = (int(rng.uniform(0.05, 0.5) * size) for _ in range(2))
    py0, py1 = (int(rng.uniform(0.05, 0.3) * size) for _ in range(2))
    mh, mw = mask.shape
    padded = np.zeros((mh + 2 * size, mw + 2 * size), np.float32)
    padded[size : size + mh, size : size + mw] = mask
    mask = padded[size + y0 - py0 : size + y1 + py1, size + x0 - px0 : size + x1 + px1]
    if cfg.rec_max_angle > 0 and rng.random() < 0.5 * cfg.aug:
        angle = rng.uniform(-cfg.rec_max_angle, cfg.rec_max_angle)
        mask, _ = rotate_mask(mask, np.zeros((4, 2), np.float32), angle)
    h, w = mask.shape
    bg = background(rng, h, w)
    img = composite(bg, mask, text_colour(rng, float(bg.mean())))
    if rng.random() < 0.3 * cfg.aug:
        img, _ = perspective(img, np.zeros((1, 2), np.float32), rng, 0.04 * cfg.aug, border=bg.reshape(-1, 3).mean(0))
    img = augment_photometric(img, rng, cfg.aug)
    return img, text, font.name
