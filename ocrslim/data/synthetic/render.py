"""Rendering synthetic text: backgrounds, text masks, composition and photometric/geometric augmentation.

Everything takes a ``numpy.random.Generator`` and is deterministic given it. Images are BGR uint8 HxWx3
(OpenCV order, as the rest of ocrslim); text masks are float32 HxW coverage in [0, 1].
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from PIL import Image, ImageDraw

from ocrslim.data.fonts import pil_font

__all__ = ["augment_photometric", "background", "composite", "perspective", "text_mask", "text_colour"]

BACKGROUNDS = ("flat", "gradient", "noise", "paper")


def _light_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(170, 256, size=3).astype(np.float32)


def background(rng: np.random.Generator, h: int, w: int, kind: str | None = None) -> np.ndarray:
    """A light background: flat, gradient, noise or paper-like texture (low-frequency blotches + fibres)."""
    kind = kind or BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    base = _light_colour(rng)
    if kind == "flat":
        img = np.broadcast_to(base, (h, w, 3)).copy()
    elif kind == "gradient":
        other = _light_colour(rng)
        angle = rng.random() * 2 * math.pi
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        t = xx * math.cos(angle) + yy * math.sin(angle)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
        img = base * (1 - t[..., None]) + other * t[..., None]
    elif kind == "noise":
        img = base + rng.normal(0, rng.uniform(4, 14), size=(h, w, 1)).astype(np.float32)
    else:  # paper: smooth blotches + thin fibres
        small = rng.normal(0, 1, size=(max(2, h // 32), max(2, w // 32), 1)).astype(np.float32)
        blotch = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)[..., None]
        img = base + blotch * rng.uniform(3, 10) + rng.normal(0, 3, size=(h, w, 1)).astype(np.float32)
        for _ in range(int(rng.integers(5, 30))):
            p0 = (int(rng.integers(w)), int(rng.integers(h)))
            p1 = (p0[0] + int(rng.integers(-40, 41)), p0[1] + int(rng.integers(-40, 41)))
            cv2.line(img, p0, p1, tuple(float(v) for v in base - rng.uniform(10, 35)), 1, cv2.LINE_AA)
    return np.clip(img, 0, 255).astype(np.uint8)


def text_colour(rng: np.random.Generator, bg_mean: float) -> np.ndarray:
    """A dark (or, on dark backgrounds, light) ink colour with contrast to ``bg_mean``."""
    if rng.random() < 0.7:
        grey = rng.integers(0, 70)
        return np.array([grey, grey, grey], dtype=np.float32) + rng.integers(-10, 11, size=3)
    dark = rng.integers(0, 120, size=3).astype(np.float32)
    return dark if bg_mean > 128 else 255 - dark


def text_mask(text: str, font_path: str, size: int, spacing: int = 0) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Draw ``text`` as a coverage mask with a margin of ``size // 2`` px.

    Args:
        spacing: extra pixels between characters (0 draws the string in one call, with kerning).

    Returns:
        (mask float32 HxW in [0, 1], ink box (x0, y0, x1, y1) = the bounding box of drawn pixels, exclusive).
    """
    font = pil_font(font_path, size)
    margin = max(4, size // 2)
    if spacing == 0:
        x0, y0, x1, y1 = font.getbbox(text)
        w, h = x1 - x0 + 2 * margin, y1 - y0 + 2 * margin
        img = Image.new("L", (max(w, 1), max(h, 1)), 0)
        ImageDraw.Draw(img).text((margin - x0, margin - y0), text, font=font, fill=255)
    else:
        advances = [font.getlength(c) + spacing for c in text]
        asc, desc = font.getmetrics()
        w = int(math.ceil(sum(advances))) + 2 * margin + size
        h = asc + desc + 2 * margin
        img = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(img)
        x = float(margin)
        for c, adv in zip(text, advances, strict=True):
            draw.text((x, margin), c, font=font, fill=255)
            x += adv
    mask = np.asarray(img, dtype=np.float32) / 255.0
    ys, xs = np.nonzero(mask > 0.1)
    if len(xs) == 0:
        return mask, (0, 0, 0, 0)
    return mask, (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def composite(img: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Blend ``colour`` into ``img`` (same HxW as ``mask``) by coverage."""
    a = mask[..., None]
    return (img.astype(np.float32) * (1 - a) + colour.astype(np.float32) * a).clip(0, 255).astype(np.uint8)


def perspective(
    img: np.ndarray, points: np.ndarray, rng: np.random.Generator, strength: float, border: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Random mild perspective warp of the whole image; ``points`` (N, 2) are mapped with it.

    Each corner moves by up to ``strength`` x the short side, inwards, so nothing is cut off.
    """
    h, w = img.shape[:2]
    d = strength * min(h, w)
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    jitter = rng.uniform(0, d, size=(4, 2)).astype(np.float32) * np.float32([[1, 1], [-1, 1], [-1, -1], [1, -1]])
    m = cv2.getPerspectiveTransform(src, src + jitter)
    value = tuple(float(v) for v in (border if border is not None else img[0, 0]))
    out = cv2.warpPerspective(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=value)
    pts = cv2.perspectiveTransform(points.reshape(-1, 1, 2).astype(np.float32), m).reshape(-1, 2)
    return out, pts


def augment_photometric(img: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Blur, contrast/brightness, Gaussian noise (each with some probability, scaled by ``strength``)."""
    out = img.astype(np.float32)
    if rng.random() < 0.35 * strength:
        k = int(rng.choice([3, 5])) if min(img.shape[:2]) > 24 else 3
        if rng.random() < 0.5:
            out = cv2.GaussianBlur(out, (k, k), rng.uniform(0.3, 1.2))
        else:  # motion blur
            kernel = np.zeros((k, k), np.float32)
            kernel[k // 2, :] = 1.0 / k
            out = cv2.filter2D(out, -1, kernel)
    if rng.random() < 0.6 * strength:
        contrast = rng.uniform(0.6, 1.2)
        brightness = rng.uniform(-40, 30)
        out = (out - 128) * contrast + 128 + brightness
    if rng.random() < 0.4 * strength:
        out = out + rng.normal(0, rng.uniform(2, 10), size=out.shape[:2] + (1,)).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def encode_jpeg(img: np.ndarray, quality: int) -> bytes:
    """JPEG bytes at ``quality`` (low qualities are the JPEG-artefact augmentation)."""
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV always encodes a uint8 BGR array
        raise RuntimeError("cv2.imencode failed")
    return buf.tobytes()
