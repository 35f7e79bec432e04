"""Scene pages for detection: lines scattered at random positions and angles on a background."""

from __future__ import annotations

import cv2
import numpy as np

from ocrslim.data.synthetic.context import SynthContext
from ocrslim.data.synthetic.lines import line_mask, rotate_mask, size_in
from ocrslim.data.synthetic.render import augment_photometric, background, composite, perspective, text_colour

__all__ = ["render_det_page"]


def render_det_page(
    ctx: SynthContext, rng: np.random.Generator
) -> tuple[np.ndarray, list[np.ndarray], list[str], list[str]]:
    """One detection page: (BGR image, quads (4, 2) as tl tr br bl, texts, font names).

    Lines are placed at random positions and angles without overlapping; each quad is the rotated
    bounding box of the line's drawn pixels.
    """
    cfg = ctx.cfg
    long_side = size_in(rng, *cfg.page_size)
    short_side = int(long_side / rng.uniform(1.0, 1.5))
    h, w = (long_side, short_side) if rng.random() < 0.5 else (short_side, long_side)
    page = background(rng, h, w)
    taken = np.zeros((h, w), np.uint8)
    quads: list[np.ndarray] = []
    texts: list[str] = []
    fonts: list[str] = []
    for _ in range(size_in(rng, *cfg.lines_per_page)):
        for _attempt in range(4):
            size = size_in(rng, cfg.line_height[0], min(cfg.line_height[1], max(cfg.line_height[0], h // 8)))
            fit = max(1, int(0.85 * w / size))  # a CJK glyph is about `size` wide
            text, font, mask, (x0, y0, x1, y1) = line_mask(ctx, rng, size, min(cfg.max_chars, fit))
            if x1 <= x0:
                continue
            box = np.float32([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
            angle = rng.uniform(-cfg.max_angle, cfg.max_angle) if rng.random() < 0.7 else 0.0
            rot, quad = rotate_mask(mask, box, angle)
            rh, rw = rot.shape
            if rw >= w or rh >= h:
                continue
            ox, oy = int(rng.integers(0, w - rw)), int(rng.integers(0, h - rh))
            quad = quad + np.float32([ox, oy])
            region = np.zeros_like(taken)
            cv2.fillPoly(region, [np.round(quad).astype(np.int32)], 1)
            region = cv2.dilate(region, np.ones((5, 5), np.uint8))
            if (region & taken).any():
                continue
            taken |= region
            patch = page[oy : oy + rh, ox : ox + rw]
            page[oy : oy + rh, ox : ox + rw] = composite(patch, rot, text_colour(rng, float(patch.mean())))
            quads.append(quad)
            texts.append(text)
            fonts.append(font.name)
            break
    if quads and rng.random() < 0.3 * cfg.aug:
        warped, pts = perspective(page, np.concatenate(quads), rng, 0.04 * cfg.aug, border=page.reshape(-1, 3).mean(0))
        page, quads = warped, list(pts.reshape(-1, 4, 2))
    page = augment_photometric(page, rng, cfg.aug)
    return page, quads, texts, fonts
