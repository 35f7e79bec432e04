"""Metrics on hand-computed cases. Boxes are axis-aligned so every area below can be checked on paper."""

from __future__ import annotations

import numpy as np
import pytest

from ocrslim.eval.metrics import (
    DetMetric,
    E2EMetric,
    RecMetric,
    has_cjk,
    match_icdar15,
    normalize_ci_alnum,
    normalize_for_ned,
)


def box(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Axis-aligned box as a clockwise (4, 2) polygon (image coordinates, y down)."""
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float32)


# ------------------------------------------------------------------------------------------- detection


def test_det_perfect_partial_and_dontcare() -> None:
    gts = [box(0, 0, 10, 10), box(20, 0, 30, 10), box(40, 0, 50, 10)]  # areas 100, 100, 100
    ignore = [False, False, True]  # the third GT is "###"
    preds = [
        box(0, 0, 10, 10),  # = GT0: IoU 1 -> match
        box(20, 0, 30, 4),  # inside GT1, area 40: IoU = 40 / 100 = 0.4 <= 0.5 -> no match
        box(41, 1, 49, 9),  # area 64, all of it inside don't-care GT2: 64/64 = 1 > 0.5 -> not counted
    ]
    metric = DetMetric()
    result = metric.update(gts, ignore, preds)
    assert result.pairs == ((0, 0),)
    assert result.pred_dontcare == (False, False, True)
    assert (result.num_gt_care, result.num_pred_care) == (2, 2)
    # 1 match, 2 care GT, 2 care predictions: P = 1/2, R = 1/2, hmean = 2*1 / (2+2) = 1/2.
    assert metric.summary() == {"precision": 0.5, "recall": 0.5, "hmean": 0.5, "images": 1}


@pytest.mark.parametrize(
    ("pred", "matched"),
    [
        (box(0, 0, 10, 5), False),  # IoU = 50 / 100 = 0.5 exactly: the official test is IoU > 0.5
        (box(0, 0, 10, 6), True),  # IoU = 60 / 100 = 0.6
    ],
)
def test_det_iou_threshold_is_strict(pred: np.ndarray, matched: bool) -> None:
    result = match_icdar15([box(0, 0, 10, 10)], [False], [pred])
    assert result.pairs == (((0, 0),) if matched else ())


@pytest.mark.parametrize(
    ("pred", "dontcare"),
    [
        (box(45, 0, 55, 10), False),  # half inside the don't-care box: 50/100 = 0.5 is not > 0.5 -> counted
        (box(44, 0, 54, 10), True),  # 60/100 = 0.6 > 0.5 -> dropped
    ],
)
def test_det_dontcare_area_threshold_is_strict(pred: np.ndarray, dontcare: bool) -> None:
    result = match_icdar15([box(40, 0, 50, 10)], [True], [pred])
    assert result.pred_dontcare == (dontcare,)
    assert result.num_gt_care == 0
    assert result.num_pred_care == (0 if dontcare else 1)


def test_det_dontcare_gt_is_never_matched() -> None:
    metric = DetMetric()
    result = metric.update([box(0, 0, 10, 10)], [True], [box(0, 0, 10, 10)])
    # The prediction lies entirely in don't-care GT, so it is dropped rather than matched or counted.
    assert result.pairs == ()
    assert metric.summary() == {"precision": None, "recall": None, "hmean": None, "images": 1}


def test_det_greedy_first_fit_order() -> None:
    """The official script takes the first unmatched prediction over the threshold, not the best IoU."""
    gts = [box(0, 0, 10, 10)]
    preds = [box(0, 0, 10, 6), box(0, 0, 10, 10)]  # IoU 0.6 first, then IoU 1.0
    metric = DetMetric()
    assert metric.update(gts, [False], preds).pairs == ((0, 0),)
    # 1 match, 1 care GT, 2 care predictions: P = 1/2, R = 1, hmean = 2*1 / (1+2) = 2/3.
    assert metric.summary() == {"precision": 0.5, "recall": 1.0, "hmean": 2 / 3, "images": 1}


def test_det_zero_predictions() -> None:
    metric = DetMetric()
    metric.update([box(0, 0, 10, 10)], [False], [])
    # No prediction: precision has no denominator; recall 0/1; hmean = 2*0 / (1+0) = 0.
    assert metric.summary() == {"precision": None, "recall": 0.0, "hmean": 0.0, "images": 1}


def test_det_empty_and_reset() -> None:
    metric = DetMetric()
    assert metric.summary() == {"precision": None, "recall": None, "hmean": None, "images": 0}
    metric.update([box(0, 0, 10, 10)], [False], [box(0, 0, 10, 10)])
    metric.reset()
    assert metric.summary() == {"precision": None, "recall": None, "hmean": None, "images": 0}


def test_det_accumulates_counts_over_images() -> None:
    metric = DetMetric()
    metric.update([box(0, 0, 10, 10)], [False], [box(0, 0, 10, 10)])  # 1 match, 1 GT, 1 pred
    metric.update([box(0, 0, 10, 10), box(20, 0, 30, 10), box(40, 0, 50, 10)], [False] * 3, [])  # 0, 3, 0
    # Micro average: P = 1/1, R = 1/4, hmean = 2*1 / (4+1) = 0.4 (a mean of per-image values would differ).
    assert metric.summary() == {"precision": 1.0, "recall": 0.25, "hmean": 0.4, "images": 2}


def test_det_point_order_does_not_matter() -> None:
    counter_clockwise = box(0, 0, 10, 10)[::-1].copy()
    assert match_icdar15([box(0, 0, 10, 10)], [False], [counter_clockwise]).pairs == ((0, 0),)


def test_det_invalid_polygons_do_not_crash() -> None:
    bow_tie = np.array([[0, 0], [10, 10], [10, 0], [0, 10]], dtype=np.float32)  # self-intersecting
    collinear = np.array([[0, 0], [5, 5], [10, 10], [0, 0]], dtype=np.float32)  # no area
    nan = np.full((4, 2), np.nan, dtype=np.float32)
    two_points = np.array([[0, 0], [10, 10]], dtype=np.float32)
    # make_valid turns the bow tie into two triangles of area 25 each, all inside the GT box:
    # IoU = 50 / 100 = 0.5, not > 0.5, so nothing matches; every prediction still counts.
    metric = DetMetric()
    result = metric.update([box(0, 0, 10, 10)], [False], [bow_tie, collinear, nan, two_points])
    assert result.pairs == ()
    assert metric.summary() == {"precision": 0.0, "recall": 0.0, "hmean": 0.0, "images": 1}
    # A repaired bow tie still works as GT: its left triangle (0,0),(5,5),(0,10) covers 25 of its 50: IoU 0.5.
    assert match_icdar15([bow_tie], [False], [np.array([[0, 0], [5, 5], [0, 10]])]).pairs == ()
    assert match_icdar15([bow_tie], [False], [bow_tie]).pairs == ((0, 0),)


def test_det_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="gt_ignore"):
        match_icdar15([box(0, 0, 1, 1)], [], [])


# ----------------------------------------------------------------------------------------- recognition


def test_normalizers() -> None:
    assert normalize_ci_alnum("Hello,") == "hello"
    assert normalize_ci_alnum("A-1 b_2!") == "a1b2"
    assert normalize_for_ned("  Hello \t  World\n") == "helloworld"
    assert normalize_for_ned("Hello,") == "hello"  # punctuation is ignored, like accuracy_ci_alnum
    assert normalize_for_ned("总计 42元") == "总计42元"  # but CJK characters are kept


def test_rec_single_substitution() -> None:
    metric = RecMetric()
    metric.update("abd", "abc")
    # distance 1, max length 3: NED = 1/3; CER = 1 edit / 3 GT characters.
    assert metric.summary() == {
        "accuracy": 0.0,
        "accuracy_ci_alnum": 0.0,
        "one_minus_ned": 1 - 1 / 3,
        "cer": 1 / 3,
        "samples": 1,
    }


def test_rec_accumulates() -> None:
    metric = RecMetric()
    metric.update("abd", "abc")  # exact no, ci-alnum no; NED 1/3; 1 edit, 3 GT chars
    metric.update("Hello,", "hello")  # exact no, ci-alnum yes; "hello" vs "hello": NED 0; 0 edits, 5 chars
    metric.update("abc", "abc")  # exact yes, ci-alnum yes; NED 0; 0 edits, 3 chars
    metric.update("", "")  # exact yes, ci-alnum yes; NED 0 (both empty); 0 edits, 0 chars
    summary = metric.summary()
    assert summary["accuracy"] == 2 / 4
    assert summary["accuracy_ci_alnum"] == 3 / 4
    # mean NED = (1/3 + 0 + 0 + 0) / 4 = 1/12
    assert summary["one_minus_ned"] == pytest.approx(1 - 1 / 12, abs=1e-15)
    assert summary["cer"] == 1 / 11  # 1 edit / (3 + 5 + 3 + 0) GT characters
    assert summary["samples"] == 4


def test_rec_whitespace_and_case_are_normalized_for_ned() -> None:
    metric = RecMetric()
    metric.update("Hello   World ", "hello world")
    assert metric.summary() == {
        "accuracy": 0.0,
        "accuracy_ci_alnum": 1.0,
        "one_minus_ned": 1.0,
        "cer": 0.0,
        "samples": 1,
    }


def test_rec_empty_gt_and_reset() -> None:
    metric = RecMetric()
    assert metric.summary() == {
        "accuracy": None,
        "accuracy_ci_alnum": None,
        "one_minus_ned": None,
        "cer": None,
        "samples": 0,
    }
    metric.update("ab", "")  # distance 2, max length 2: NED 1; no GT characters, so CER is undefined
    assert metric.summary()["one_minus_ned"] == 0.0
    assert metric.summary()["cer"] is None
    metric.reset()
    assert metric.summary()["samples"] == 0


def test_rec_by_script_splits_on_the_label_and_keeps_the_totals() -> None:
    pairs = [("中文识别", "中文识别"),  # CJK: exact, NED 0
             ("中又识别", "中文识别"),  # CJK: 1 substitution of 4: NED 1/4
             ("Total 中", "Total 中文"),  # mixed line counts as CJK: "total中" vs "total中文", NED 1/7
             ("USD 78.92", "USD 78.92"),  # Latin: exact
             ("2019-04-O7", "2019-04-07")]  # Latin: "20190407" vs "201904o7", NED 1/8
    plain, split = RecMetric(), RecMetric(by_script=True)
    for pred, gt in pairs:
        plain.update(pred, gt)
        split.update(pred, gt)
    s = split.summary()
    assert {k: s[k] for k in plain.summary()} == plain.summary()  # the existing keys and values are unchanged
    assert s["samples_cjk"] == 3 and s["samples_latin"] == 2
    assert s["accuracy_cjk"] == 1 / 3 and s["accuracy_latin"] == 1 / 2
    assert s["one_minus_ned_cjk"] == pytest.approx(1 - (0 + 1 / 4 + 1 / 7) / 3)
    assert s["one_minus_ned_latin"] == pytest.approx(1 - (0 + 1 / 8) / 2)
    assert "samples_cjk" not in plain.summary()
    only_latin = RecMetric(by_script=True)
    only_latin.update("a", "a")
    assert only_latin.summary()["one_minus_ned_cjk"] is None and only_latin.summary()["samples_cjk"] == 0


def test_has_cjk() -> None:
    assert has_cjk("何妨1400") and has_cjk("ひらがな") and has_cjk("한국어") and has_cjk("𠀀")
    assert not has_cjk("MADDOGSKULLCAP") and not has_cjk("（）、。") and not has_cjk("ＵＳＤ７８")


# ------------------------------------------------------------------------------------------ end to end


def test_e2e_matched_box_with_wrong_text() -> None:
    gts = [box(0, 0, 10, 10), box(20, 0, 30, 10), box(40, 0, 50, 10)]
    gt_texts = ["Hello", "World", "###"]
    ignore = [False, False, True]
    preds = [box(0, 0, 10, 10), box(20, 0, 30, 10), box(41, 1, 49, 9), box(100, 100, 110, 110)]
    pred_texts = [
        "hello!",  # matched GT0, "hello" == "hello" after ci-alnum -> TP
        "Word",  # matched GT1 but "word" != "world" -> not a TP
        "x",  # inside don't-care GT2 -> not counted
        "foo",  # matches nothing -> counted, not a TP
    ]
    metric = E2EMetric()
    result = metric.update(gts, gt_texts, ignore, preds, pred_texts)
    assert result.det.pairs == ((0, 0), (1, 1))
    assert result.correct == ((0, 0),)
    # TP 1, care predictions 3, care GT 2: P = 1/3, R = 1/2, F1 = 2*1 / (2+3) = 0.4.
    assert metric.summary() == {"precision": 1 / 3, "recall": 0.5, "f1": 0.4}


def test_e2e_uses_the_detection_matching() -> None:
    gts, ignore = [box(0, 0, 10, 10), box(20, 0, 30, 10)], [False, False]
    preds = [box(20, 0, 30, 10), box(0, 0, 10, 6), box(0, 0, 10, 10)]
    det = DetMetric().update(gts, ignore, preds)
    e2e = E2EMetric().update(gts, ["a", "b"], ignore, preds, ["b", "a", "a"])
    assert e2e.det == det
    assert e2e.correct == ((0, 1), (1, 0))


def test_e2e_empty() -> None:
    metric = E2EMetric()
    assert metric.summary() == {"precision": None, "recall": None, "f1": None}
    metric.update([box(0, 0, 10, 10)], ["a"], [False], [], [])
    assert metric.summary() == {"precision": None, "recall": 0.0, "f1": 0.0}


def test_e2e_compares_chinese_text_on_its_characters() -> None:
    """Regression: ASCII-only normalization made every pure-Chinese pair equal ("" == "")."""
    box = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], np.float32)
    metric = E2EMetric()
    metric.update([box], ["合计"], [False], [box], ["收据"])
    assert metric.summary()["f1"] == 0.0
    metric.update([box], ["合计 42"], [False], [box], ["合计42"])
    assert metric.true_positives == 1
