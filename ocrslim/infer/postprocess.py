"""Post-processing: DB probability map → boxes, and CTC greedy decoding (numpy only)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import pyclipper

from ocrslim.core.config import DetConfig
from ocrslim.infer.preprocess import order_quad


def _mini_box(contour: np.ndarray) -> tuple[np.ndarray, float]:
    """Minimum-area rectangle of a contour as 4 ordered points, and its short side."""
    rect = cv2.minAreaRect(contour)
    pts = sorted(list(cv2.boxPoints(rect)), key=lambda p: p[0])
    i1, i4 = (0, 1) if pts[1][1] > pts[0][1] else (1, 0)
    i2, i3 = (2, 3) if pts[3][1] > pts[2][1] else (3, 2)
    return np.array([pts[i1], pts[i2], pts[i3], pts[i4]], dtype=np.float32), float(min(rect[1]))


def _box_score(prob: np.ndarray, box: np.ndarray) -> float:
    """Mean probability inside the box (the "fast" DB score)."""
    h, w = prob.shape
    xmin = int(np.clip(np.floor(box[:, 0].min()), 0, w - 1))
    xmax = int(np.clip(np.ceil(box[:, 0].max()), 0, w - 1))
    ymin = int(np.clip(np.floor(box[:, 1].min()), 0, h - 1))
    ymax = int(np.clip(np.ceil(box[:, 1].max()), 0, h - 1))
    mask = np.zeros((ymax - ymin + 1, xmax - xmin + 1), dtype=np.uint8)
    shifted = box - np.array([xmin, ymin], dtype=np.float32)
    cv2.fillPoly(mask, shifted.reshape(1, -1, 2).astype(np.int32), 1)  # type: ignore[call-overload]
    return float(cv2.mean(prob[ymin : ymax + 1, xmin : xmax + 1], mask)[0])


def offset_polygon(poly: np.ndarray, distance: float) -> list[np.ndarray]:
    """Offset a polygon by ``distance`` px (negative shrinks) with round joins (pyclipper).

    Returns the resulting polygons (N×2 float64; none when it vanishes, several when it splits).
    DB's unclip (here) and its shrunk training targets (:mod:`ocrslim.data.targets`) both use it.
    """
    pco = pyclipper.PyclipperOffset()
    pco.AddPath([tuple(map(float, p)) for p in np.asarray(poly).reshape(-1, 2)], pyclipper.JT_ROUND,
                pyclipper.ET_CLOSEDPOLYGON)
    return [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in pco.Execute(distance)]


def _unclip(box: np.ndarray, ratio: float) -> np.ndarray:
    """Expand a box by ``area * ratio / perimeter`` (the DB unclip)."""
    pts = np.asarray(box, dtype=np.float32).reshape(-1, 1, 2)
    length = cv2.arcLength(pts, True)  # closed perimeter and |area| (shoelace), both in double
    if length == 0:
        return np.zeros((0, 1, 2), dtype=np.float32)
    expanded = offset_polygon(box, cv2.contourArea(pts) * ratio / length)
    if len(expanded) != 1:  # degenerate or split polygon: drop it
        return np.zeros((0, 1, 2), dtype=np.float32)
    return expanded[0].astype(np.float32).reshape(-1, 1, 2)


def db_boxes(prob: np.ndarray, src_hw: tuple[int, int], cfg: DetConfig) -> tuple[list[np.ndarray], list[float]]:
    """DB post-processing of one probability map.

    Args:
        prob: HxW probability map (the detector output for one image, at network resolution).
        src_hw: (height, width) of the original image; boxes are scaled back to it.
        cfg: thresholds and unclip ratio.

    Returns:
        (boxes, scores): boxes are 4x2 float32 quads in original-image pixels, ordered
        tl, tr, br, bl; scores are mean probabilities inside the un-expanded box.
    """
    prob = np.asarray(prob, dtype=np.float32)
    if prob.ndim == 3:
        prob = prob[0]
    height, width = prob.shape
    src_h, src_w = src_hw
    bitmap: np.ndarray = (prob > cfg.thresh).astype(np.uint8)
    if cfg.use_dilation:
        bitmap = cv2.dilate(bitmap, np.ones((2, 2), dtype=np.uint8))
    contours, _ = cv2.findContours(bitmap * 255, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    boxes: list[np.ndarray] = []
    scores: list[float] = []
    for contour in contours[: cfg.max_candidates]:
        pts, sside = _mini_box(contour)
        if sside < cfg.min_size:
            continue
        score = _box_score(prob, pts)
        if score < cfg.box_thresh:
            continue
        expanded = _unclip(pts, cfg.unclip_ratio)
        if len(expanded) == 0:
            continue
        box, sside = _mini_box(expanded)
        if sside < cfg.min_size + 2:
            continue
        box[:, 0] = np.clip(np.round(box[:, 0] / width * src_w), 0, src_w)
        box[:, 1] = np.clip(np.round(box[:, 1] / height * src_h), 0, src_h)
        box = order_quad(box)
        box[:, 0] = np.clip(box[:, 0], 0, src_w - 1)
        box[:, 1] = np.clip(box[:, 1], 0, src_h - 1)
        if np.linalg.norm(box[0] - box[1]) <= 3 or np.linalg.norm(box[0] - box[3]) <= 3:
            continue
        boxes.append(box)
        scores.append(score)
    return boxes, scores


def ctc_charset(characters: Sequence[str]) -> list[str]:
    """Model classes from a character list: blank at 0, the characters, then a space (PP-OCR)."""
    return ["<blank>", *characters, " "]


def ctc_greedy_decode(probs: np.ndarray, charset: Sequence[str]) -> list[tuple[str, float]]:
    """Greedy CTC decoding: best class per frame, merge repeats, drop blanks (class 0).

    Args:
        probs: NxTxC per-frame class probabilities (softmax output).
        charset: C labels; index 0 is the blank.

    Returns:
        One (text, confidence) per row; confidence is the mean probability of the kept frames
        (0.0 for an empty result).

    >>> p = np.eye(3)[[1, 1, 0, 1, 2]][None]          # frames: a a _ a b
    >>> ctc_greedy_decode(p, ["-", "a", "b"])
    [('aab', 1.0)]
    """
    probs = np.asarray(probs)
    if probs.ndim != 3:
        raise ValueError(f"expected NxTxC probabilities, got shape {probs.shape}")
    if probs.shape[2] != len(charset):
        raise ValueError(f"model has {probs.shape[2]} classes but the charset has {len(charset)}")
    idx = probs.argmax(axis=2)
    conf = probs.max(axis=2)
    out: list[tuple[str, float]] = []
    for row_idx, row_conf in zip(idx, conf):
        keep = np.ones(len(row_idx), dtype=bool)
        keep[1:] = row_idx[1:] != row_idx[:-1]
        keep &= row_idx != 0
        text = "".join(charset[i] for i in row_idx[keep])
        out.append((text, float(row_conf[keep].mean()) if keep.any() else 0.0))
    return out
