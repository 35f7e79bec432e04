"""Printed-document pages for detection: receipts and forms (dense rows, item + amount pairs, table cells)."""

from __future__ import annotations

import cv2
import numpy as np

from ocrslim.data.synthetic.context import SynthContext
from ocrslim.data.synthetic.lines import size_in, text_and_font
from ocrslim.data.synthetic.render import (
    augment_photometric,
    background,
    composite,
    perspective,
    text_colour,
    text_mask,
)

__all__ = ["render_doc_page"]


def _paper(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Near-white paper: a flat or slightly textured sheet (thermal receipts, printed forms)."""
    base = rng.uniform(215, 255) + rng.uniform(-8, 8, size=3)
    img = np.broadcast_to(base.astype(np.float32), (h, w, 3)).copy()
    if rng.random() < 0.5:
        small = rng.normal(0, 1, size=(max(2, h // 48), max(2, w // 48), 1)).astype(np.float32)
        img += cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)[..., None] * rng.uniform(2, 8)
    return np.clip(img, 0, 255).astype(np.uint8)


def _doc_row(rng: np.random.Generator) -> str:
    """A row kind of a printed document: one left/centred/right segment, an item with a right amount, or a
    table row of short cells."""
    r = rng.random()
    return "left" if r < 0.25 else "centre" if r < 0.4 else "pair" if r < 0.7 else "right" if r < 0.78 else "table"


def _cell(rng: np.random.Generator) -> str:
    """A short table cell: a quantity, an amount, a code or a short word (1-8 characters)."""
    r = rng.random()
    if r < 0.3:
        return str(int(rng.integers(1, 20)))
    if r < 0.65:
        return f"{rng.random() * 10 ** int(rng.integers(1, 4)):.2f}"
    if r < 0.85:
        letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        return "".join(letters[int(i)] for i in rng.integers(0, 26, size=int(rng.integers(1, 4))))
    return str(int(rng.integers(1000, 100000)))


_DOC_KINDS = ("en", "mixed", "date", "number", "price")
_DOC_P = (0.5, 0.2, 0.1, 0.1, 0.1)


def _doc_kind(rng: np.random.Generator, latin: bool) -> str | None:
    """Text kind of a document segment: Latin-script kinds, or None (the corpus' mix, CJK included)."""
    return _DOC_KINDS[int(rng.choice(len(_DOC_KINDS), p=_DOC_P))] if latin else None


def render_doc_page(
    ctx: SynthContext, rng: np.random.Generator
) -> tuple[np.ndarray, list[np.ndarray], list[str], list[str]]:
    """One printed-document page (receipt/form style): (BGR image, quads, texts, font names).

    Dense rows of dark text on near-white paper, top to bottom: left-aligned, centred, right-aligned
    or an item with its right-aligned amount (two boxes, as receipt annotations split them), one font
    per page at one size (±10%). Half the pages are photos of the sheet: paper on a textured
    background, the sheet narrower than the frame. A whole-page rotation (±2°), the perspective warp
    and the photometric augmentation of :func:`render_det_page` follow.
    """
    cfg = ctx.cfg
    long_side = size_in(rng, *cfg.page_size)
    h = long_side
    w = int(long_side / rng.uniform(1.2, 2.2))  # documents are portrait, receipts narrow
    photo = rng.random() < 0.5
    page = background(rng, h, w) if photo else _paper(rng, h, w)
    if photo:  # a sheet inside the frame
        pw, ph = int(w * rng.uniform(0.6, 0.95)), int(h * rng.uniform(0.75, 1.0))
        px, py = int(rng.integers(0, w - pw + 1)), int(rng.integers(0, h - ph + 1))
        page[py : py + ph, px : px + pw] = _paper(rng, ph, pw)
    else:
        px, py, pw, ph = 0, 0, w, h
    base = size_in(rng, cfg.line_height[0], min(cfg.line_height[1], max(cfg.line_height[0], pw // 14)))
    margin = int(pw * rng.uniform(0.04, 0.12))
    left, right = px + margin, px + pw - margin
    gap = rng.uniform(0.25, 1.0)
    latin = rng.random() < 1.0 - 0.5 * cfg.cjk_ratio  # documents lean Latin; else the corpus' own mix
    ink = text_colour(rng, 230.0)
    fonts_ok = ctx.fonts
    y = py + int(rng.integers(margin // 2, margin + 1))
    quads: list[np.ndarray] = []
    texts: list[str] = []
    fonts: list[str] = []
    font = fonts_ok[int(rng.integers(len(fonts_ok)))]

    def place(text_kind: str | None, x_anchor: str, limit: int, size: int, hi: int | None = None,
              lo: int | None = None, text: str | None = None) -> tuple[int, int] | None:
        """Draw one segment on the current row between ``lo`` and ``hi`` (default the margins); returns its
        (x0, x1), or None (nothing drawn) when it does not fit."""
        nonlocal font
        hi = right if hi is None else hi
        lo = left if lo is None else lo
        if text is None:
            text = ctx.corpus.line(rng, kind=text_kind, max_chars=max(1, limit))
            if rng.random() < 0.15 and len(text) < limit:  # a label: "Total :", "Cashier:"
                text += " :" if rng.random() < 0.5 else ":"
        if not set(text) - {" "} <= font.chars:
            text, font = text_and_font(ctx, rng, max(1, limit))
        mask, (x0, y0, x1, y1) = text_mask(text, font.path, size)
        if x1 <= x0 or x1 - x0 > hi - lo or y + (y1 - y0) >= py + ph:
            return None
        tw = x1 - x0
        ox = {"left": lo, "right": hi - tw, "centre": (lo + hi - tw) // 2}[x_anchor] - x0
        oy = y - y0
        mh, mw = mask.shape
        # clip the mask's margins to the page
        cx0, cy0 = max(0, -ox), max(0, -oy)
        cx1, cy1 = min(mw, w - ox), min(mh, h - oy)
        patch = page[oy + cy0 : oy + cy1, ox + cx0 : ox + cx1]
        page[oy + cy0 : oy + cy1, ox + cx0 : ox + cx1] = composite(patch, mask[cy0:cy1, cx0:cx1], ink)
        gx0, gy0, gx1, gy1 = ox + x0, oy + y0, ox + x1, oy + y1
        quads.append(np.float32([[gx0, gy0], [gx1, gy0], [gx1, gy1], [gx0, gy1]]))
        texts.append(text)
        fonts.append(font.name)
        return gx0, gx1

    while y < py + ph - base:
        size = max(cfg.line_height[0], int(base * rng.uniform(0.9, 1.1)))
        fit = max(1, int(1.6 * (right - left) / size))  # a Latin glyph is about 0.6 × size wide
        row = _doc_row(rng)
        if row == "pair":
            placed = place("price" if rng.random() < 0.7 else "number", "right", 12, size)
            room = placed[0] - left - 2 * size if placed is not None else 0
            if placed is not None and room > 2 * size:
                place(_doc_kind(rng, latin), "left", min(cfg.max_chars, int(1.6 * room / size)), size, hi=left + room)
        elif row == "table":  # 2-5 short cells in equal columns (quantities, prices, codes)
            cols = int(rng.integers(2, 6))
            edges = np.linspace(left, right, cols + 1).astype(int)
            for c in range(cols):
                if rng.random() < 0.85:
                    anchor = "right" if c == cols - 1 else ("left", "centre", "right")[int(rng.integers(3))]
                    place(None, anchor, 8, size, lo=int(edges[c]) + size // 2, hi=int(edges[c + 1]) - size // 2,
                          text=_cell(rng))
        else:
            place(_doc_kind(rng, latin), row, min(cfg.max_chars, fit), size)
        y += int(size * (1.0 + gap * rng.uniform(0.8, 1.2)))
        if rng.random() < 0.08:  # a blank line / separator gap
            y += size
    if rng.random() < 0.7:
        page, quads = _rotate_page(page, quads, rng.uniform(-2.0, 2.0))
    if quads and rng.random() < 0.3 * cfg.aug:
        warped, pts = perspective(page, np.concatenate(quads), rng, 0.04 * cfg.aug, border=page.reshape(-1, 3).mean(0))
        page, quads = warped, list(pts.reshape(-1, 4, 2))
    page = augment_photometric(page, rng, cfg.aug)
    return page, quads, texts, fonts


def _rotate_page(page: np.ndarray, quads: list[np.ndarray], angle: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """Rotate the page about its centre (same size, edge colour filled); quads go along."""
    h, w = page.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    fill = tuple(float(v) for v in page.reshape(-1, 3).mean(0))
    out = cv2.warpAffine(page, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
    moved = [np.hstack([q, np.ones((4, 1), np.float32)]) @ m.T for q in quads]
    return out, [q.astype(np.float32) for q in moved]
