"""Deterministic text images for parity gates: random noise leaves a detector's map at ~0
everywhere, which would make a det parity check pass vacuously."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

WORDS = ("TOTAL", "42.50", "Receipt", "CASH", "ocrslim", "2026-11-23", "Qty", "x3", "MNN", "int8", "收据", "合计")


def text_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A BGR uint8 image of the given size with several lines of dark text on a light background."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(200, 256, 3)))
    draw = ImageDraw.Draw(img)
    size = max(8, min(height // 3, 28))
    font = ImageFont.load_default(size=size)
    y = int(rng.integers(0, max(1, size // 2)))
    while y < height - size // 2:
        x = int(rng.integers(0, max(1, width // 6)))
        text = " ".join(str(rng.choice(WORDS)) for _ in range(int(rng.integers(1, 5))))
        draw.text((x, y), text, font=font, fill=tuple(int(v) for v in rng.integers(0, 80, 3)))
        y += int(size * rng.uniform(1.4, 2.2))
    return np.ascontiguousarray(np.asarray(img)[:, :, ::-1])
