"""DB training targets of one image from its text polygons (numpy; the data side of DB training).

PaddleOCR ``ppocr/data/imaug/make_shrink_map.py`` / ``make_border_map.py`` (Apache-2.0), re-implemented:
the shrink map and its mask, and the threshold (border) map and its mask, that
:func:`ocrslim.compress.losses.db_loss` trains on. Polygons are offset with the same
:func:`ocrslim.infer.postprocess.offset_polygon` the DB post-processing unclips boxes with.
"""

from __future__ import annotations

import numpy as np

from ocrslim.core.errors import ConfigError
from ocrslim.infer.postprocess import offset_polygon

__all__ = ["make_db_targets"]


def _segment_distance(xs: np.ndarray, ys: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of every (xs, ys) grid point to the segment a–b."""
    ab = b - a
    length2 = float(ab @ ab)
    if length2 == 0.0:
        return np.hypot(xs - a[0], ys - a[1])
    t = np.clip(((xs - a[0]) * ab[0] + (ys - a[1]) * ab[1]) / length2, 0.0, 1.0)
    return np.hypot(xs - (a[0] + t * ab[0]), ys - (a[1] + t * ab[1]))


def _draw_border(poly: np.ndarray, distance: float, canvas: np.ndarray, mask: np.ndarray) -> None:
    """Border map of one polygon: 1 on its edges, falling to 0 at ``distance`` px (max over polygons)."""
    import cv2

    padded = offset_polygon(poly, distance)
    if not padded:
        return
    outer = padded[0]
    cv2.fillPoly(mask, [np.round(outer).astype(np.int32)], 1.0)
    h, w = canvas.shape
    x0, y0 = int(np.floor(outer[:, 0].min())), int(np.floor(outer[:, 1].min()))
    x1, y1 = int(np.ceil(outer[:, 0].max())), int(np.ceil(outer[:, 1].max()))
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w - 1), min(y1, h - 1)
    if cx0 > cx1 or cy0 > cy1:
        return
    ys, xs = np.mgrid[cy0:cy1 + 1, cx0:cx1 + 1].astype(np.float64)
    dist = np.full(xs.shape, np.inf)
    for i in range(len(poly)):
        dist = np.minimum(dist, _segment_distance(xs, ys, poly[i], poly[(i + 1) % len(poly)]))
    border = 1.0 - np.clip(dist / distance, 0.0, 1.0)
    region = canvas[cy0:cy1 + 1, cx0:cx1 + 1]
    np.maximum(region, border.astype(np.float32), out=region)


def make_db_targets(
    polys: list[np.ndarray] | np.ndarray,
    ignore: list[bool] | np.ndarray,
    h: int,
    w: int,
    shrink_ratio: float = 0.4,
    thresh_min: float = 0.3,
    thresh_max: float = 0.7,
    min_text_size: int = 8,
) -> dict[str, np.ndarray]:
    """DB training targets of one image (PaddleOCR MakeShrinkMap + MakeBorderMap).

    Each text polygon is shrunk inwards by ``D = A (1 − r²) / L`` (area A, perimeter L, r =
    ``shrink_ratio``) to give the probability target; the threshold target is 1 on the polygon's
    edges falling linearly to 0 at distance D, inside the polygon dilated by D, then scaled to
    ``[thresh_min, thresh_max]``. Ignored polygons (``ignore``, "###" labels), polygons with a side
    under ``min_text_size`` px and polygons that vanish when shrunk are masked out of the
    probability loss.

    Args:
        polys: K polygons, each P×2 (x, y) in pixels of the (resized) training image.
        ignore: K flags.
        h, w: map size (the training input size; DB maps are full resolution).
        shrink_ratio, thresh_min, thresh_max, min_text_size: PaddleOCR defaults.

    Returns:
        float32 H×W arrays ``gt_prob`` (1 in shrunk text), ``gt_mask`` (0 where ignored),
        ``gt_thresh`` (in [thresh_min, thresh_max]) and ``gt_thresh_mask`` (1 in dilated text).

    >>> t = make_db_targets([np.array([[8, 8], [56, 8], [56, 24], [8, 24]])], [False], 32, 64)
    >>> sorted(t), t["gt_prob"].shape
    (['gt_mask', 'gt_prob', 'gt_thresh', 'gt_thresh_mask'], (32, 64))
    """
    import cv2
    from shapely.geometry import Polygon

    if len(polys) != len(ignore):
        raise ConfigError(
            f"make_db_targets: {len(polys)} polygons but {len(ignore)} ignore flags. Pass one flag per polygon."
        )
    gt_prob = np.zeros((h, w), dtype=np.float32)
    gt_mask = np.ones((h, w), dtype=np.float32)
    canvas = np.zeros((h, w), dtype=np.float32)
    thresh_mask = np.zeros((h, w), dtype=np.float32)
    for raw, ign in zip(polys, ignore, strict=True):
        poly = np.asarray(raw, dtype=np.float64).reshape(-1, 2).copy()
        poly[:, 0] = poly[:, 0].clip(0, w - 1)
        poly[:, 1] = poly[:, 1].clip(0, h - 1)
        shape = Polygon(poly)
        poly_int = [np.round(poly).astype(np.int32)]
        side = min(np.ptp(poly[:, 0]), np.ptp(poly[:, 1]))
        if ign or len(poly) < 3 or shape.area <= 0 or side < min_text_size:
            cv2.fillPoly(gt_mask, poly_int, 0.0)
            continue
        distance = shape.area * (1 - shrink_ratio**2) / shape.length
        shrunk = offset_polygon(poly, -distance)
        if not shrunk:
            cv2.fillPoly(gt_mask, poly_int, 0.0)
            continue
        for part in shrunk:
            cv2.fillPoly(gt_prob, [np.round(part).astype(np.int32)], 1.0)
        _draw_border(poly, distance, canvas, thresh_mask)
    # clip: float32 rounding would otherwise leave 0.70000005 above thresh_max.
    gt_thresh = np.clip(canvas * (thresh_max - thresh_min) + thresh_min, thresh_min, thresh_max).astype(np.float32)
    return {"gt_prob": gt_prob, "gt_mask": gt_mask, "gt_thresh": gt_thresh, "gt_thresh_mask": thresh_mask}
