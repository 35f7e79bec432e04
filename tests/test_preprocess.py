"""Preprocessing shapes, normalisation and cropping."""

from __future__ import annotations

import numpy as np
import pytest

from ocrslim.core.config import DetConfig, RecConfig
from ocrslim.infer.preprocess import (
    cap_image,
    crop_quad,
    det_preprocess,
    det_resize_shape,
    order_quad,
    read_image,
    reading_order,
    rec_preprocess,
)


@pytest.mark.parametrize(
    ("hw", "cfg", "expected"),
    [
        ((1000, 500), DetConfig(limit_type="min", limit_side_len=736), (1472, 736)),  # short side up to 736
        ((800, 1200), DetConfig(limit_type="min", limit_side_len=736), (800, 1216)),  # already ≥ 736: as is, /32
        ((1984, 672), DetConfig(limit_type="min", limit_side_len=736), (2176, 736)),  # 2173.1 → 2176
        ((1000, 2000), DetConfig(limit_type="max", limit_side_len=960), (480, 960)),
        ((10, 10), DetConfig(limit_type="max", limit_side_len=960), (32, 32)),
    ],
)
def test_det_resize_shape(hw, cfg, expected):
    assert det_resize_shape(*hw, cfg) == expected


def test_cap_image_downscales_long_side_to_multiple_of_32():
    img = np.zeros((3000, 1000, 3), np.uint8)
    capped, rh, rw = cap_image(img, DetConfig(max_side_len=2000))
    # 3000 x 2/3 = 2000 → round(62.5) = 62 → 1984; 1000 x 2/3 = 666 → 21 → 672
    assert capped.shape[:2] == (1984, 672)
    assert (rh, rw) == pytest.approx((3000 / 1984, 1000 / 672))
    small = np.zeros((100, 50, 3), np.uint8)
    assert cap_image(small, DetConfig())[0] is small


def test_det_preprocess_normalizes_to_minus_one_one():
    img = np.zeros((40, 70, 3), np.uint8)
    img[:, :35] = 255
    x = det_preprocess(img, DetConfig(limit_type="max", limit_side_len=64))
    assert x.shape == (1, 3, 32, 64) and x.dtype == np.float32
    assert x.max() == pytest.approx(1.0) and x.min() == pytest.approx(-1.0)


def test_rec_preprocess_keeps_aspect_and_pads():
    cfg = RecConfig()
    short = np.full((24, 48, 3), 255, np.uint8)  # aspect 2 → 96 px wide at height 48
    long = np.full((10, 700, 3), 255, np.uint8)  # aspect 70 → 3360, capped at max_width
    batch = rec_preprocess([short], cfg)
    assert batch.shape == (1, 3, 48, 320)
    assert np.all(batch[0, :, :, :96] == 1.0) and np.all(batch[0, :, :, 96:] == 0.0)
    batch = rec_preprocess([short, long], cfg)
    assert batch.shape == (2, 3, 48, cfg.max_width)
    assert batch.shape[3] % 8 == 0


def test_order_quad_from_any_order():
    quad = np.array([[10, 20], [0, 0], [10, 0], [0, 20]], np.float32)
    assert order_quad(quad).tolist() == [[0, 0], [10, 0], [10, 20], [0, 20]]


def test_crop_quad_rotates_tall_crops():
    img = np.zeros((100, 100, 3), np.uint8)
    wide = crop_quad(img, np.array([[10, 10], [70, 10], [70, 30], [10, 30]], np.float32))
    tall = crop_quad(img, np.array([[10, 10], [30, 10], [30, 70], [10, 70]], np.float32))
    assert wide.shape[:2] == (20, 60)
    assert tall.shape[:2] == (20, 60)


def test_reading_order_rows_then_columns():
    def box(x, y):
        return np.array([[x, y], [x + 5, y], [x + 5, y + 5], [x, y + 5]], np.float32)

    boxes = [box(50, 102), box(0, 100), box(0, 0), box(60, 3)]
    assert reading_order(boxes) == [2, 3, 1, 0]


def test_read_image_handles_gray_alpha_and_garbage(tmp_path):
    import cv2

    gray = tmp_path / "g.png"
    cv2.imwrite(str(gray), np.full((5, 7), 128, np.uint8))
    rgba = tmp_path / "a.png"
    cv2.imwrite(str(rgba), np.zeros((5, 7, 4), np.uint8))  # fully transparent → white
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    assert read_image(gray).shape == (5, 7, 3)
    assert read_image(rgba).min() == 255
    assert read_image(bad) is None
    assert read_image(tmp_path / "missing.png") is None
