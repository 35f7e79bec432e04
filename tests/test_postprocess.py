"""CTC decoding and DB post-processing on hand-made inputs."""

from __future__ import annotations

import numpy as np
import pytest

from ocrslim.core.config import DetConfig
from ocrslim.infer.postprocess import ctc_charset, ctc_greedy_decode, db_boxes


def onehot(frames: list[int], classes: int, p: float = 1.0) -> np.ndarray:
    out = np.full((len(frames), classes), (1 - p) / max(classes - 1, 1), dtype=np.float32)
    out[np.arange(len(frames)), frames] = p
    return out


def test_ctc_merges_repeats_and_drops_blanks():
    charset = ["<blank>", "a", "b", " "]
    probs = onehot([1, 1, 0, 1, 2, 2, 0, 0, 3, 2], 4)[None]
    assert ctc_greedy_decode(probs, charset) == [("aab b", 1.0)]


def test_ctc_confidence_is_mean_of_kept_frames():
    charset = ["<blank>", "x"]
    probs = np.array([[[0.2, 0.8], [0.9, 0.1], [0.4, 0.6]]], dtype=np.float32)
    ((text, conf),) = ctc_greedy_decode(probs, charset)
    assert text == "xx"
    assert conf == pytest.approx((0.8 + 0.6) / 2)


def test_ctc_all_blank_is_empty_with_zero_confidence():
    assert ctc_greedy_decode(onehot([0, 0, 0], 3)[None], ["-", "a", "b"]) == [("", 0.0)]


def test_ctc_batch_rows_are_independent():
    probs = np.stack([onehot([1, 0, 2], 3), onehot([2, 2, 2], 3)])
    assert [t for t, _ in ctc_greedy_decode(probs, ["-", "a", "b"])] == ["ab", "b"]


def test_ctc_rejects_charset_size_mismatch():
    with pytest.raises(ValueError, match="3 classes"):
        ctc_greedy_decode(onehot([1], 3)[None], ["-", "a"])


def test_charset_is_blank_chars_space():
    assert ctc_charset(["a", "b"]) == ["<blank>", "a", "b", " "]


def test_db_finds_one_box_per_blob_scaled_to_source():
    prob = np.zeros((64, 128), dtype=np.float32)
    prob[10:20, 10:60] = 0.9  # a text line
    prob[40:50, 70:120] = 0.8  # another
    prob[30:31, 5:6] = 0.99  # a speck: below min_size
    boxes, scores = db_boxes(prob, (128, 256), DetConfig())  # source is 2x the map
    assert len(boxes) == 2
    assert all(0.5 < s <= 0.9 for s in scores)  # mean inside the box (dilation adds a fringe)
    first = min(boxes, key=lambda b: b[0, 1])
    # unclipped around x 10..60, y 10..20 in map pixels → ×2 in the source, expanded by unclip
    assert first[0, 0] < 20 and first[1, 0] > 118 and first[0, 1] < 20 and first[2, 1] > 38
    # ordered tl, tr, br, bl
    assert first[0, 0] < first[1, 0] and first[0, 1] < first[3, 1]


def test_db_box_thresh_filters_faint_regions():
    prob = np.zeros((64, 64), dtype=np.float32)
    prob[10:30, 10:50] = 0.35  # above thresh 0.3, below box_thresh 0.5
    assert db_boxes(prob, (64, 64), DetConfig())[0] == []
    assert len(db_boxes(prob, (64, 64), DetConfig(box_thresh=0.3))[0]) == 1


def test_db_empty_map_gives_no_boxes():
    assert db_boxes(np.zeros((1, 32, 32), np.float32), (32, 32), DetConfig()) == ([], [])
