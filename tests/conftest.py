"""Shared fixtures: text rendered with Pillow's bundled FreeType font (no system fonts needed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

LINES = ["Total 42.50", "Hello World", "OCR slim 2026"]


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tests use tiny tensors: one intra-op thread is fastest, and on a busy 2-core machine
    OpenMP's barriers across two threads made each op ~100x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def render_line(text: str, size: int = 32, pad: int = 10) -> np.ndarray:
    """A BGR image of one dark text line on white."""
    font = ImageFont.load_default(size=size)
    x0, y0, x1, y1 = font.getbbox(text)
    img = Image.new("RGB", (x1 - x0 + 2 * pad, y1 - y0 + 2 * pad), "white")
    ImageDraw.Draw(img).text((pad - x0, pad - y0), text, font=font, fill=(20, 20, 20))
    return np.ascontiguousarray(np.asarray(img)[:, :, ::-1])


def render_page(lines: list[str] = LINES, size: int = 30) -> tuple[np.ndarray, list[np.ndarray]]:
    """A BGR page with several lines and their GT quads (tl, tr, br, bl)."""
    font = ImageFont.load_default(size=size)
    img = Image.new("RGB", (640, 96 + 80 * len(lines)), "white")
    draw = ImageDraw.Draw(img)
    quads = []
    for i, text in enumerate(lines):
        x, y = 40 + 30 * i, 50 + 80 * i
        draw.text((x, y), text, font=font, fill=(10, 10, 10))
        x0, y0, x1, y1 = draw.textbbox((x, y), text, font=font)
        quads.append(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float32))
    return np.ascontiguousarray(np.asarray(img)[:, :, ::-1]), quads


@pytest.fixture(scope="session")
def line_image() -> np.ndarray:
    return render_line("Hello World 42")


@pytest.fixture(scope="session")
def page() -> tuple[np.ndarray, list[np.ndarray]]:
    return render_page()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "sroie_dev").is_dir():
        pytest.skip("../shared/data is not beside the repo")
    return SHARED_DATA
