"""Paired bootstrap drops (ocrslim.eval.stats) on hand-computed cases."""

from __future__ import annotations

import pytest

from ocrslim.core.errors import ArtifactError
from ocrslim.eval.stats import metric_value, paired_drop


def _rec(rows: list[tuple[int, int, float, int]]) -> dict:
    return {"ids": [f"c{i}" for i in range(len(rows))], "rec": rows}


def test_metric_values_by_hand() -> None:
    rows = _rec([(1, 1, 1.0, 0), (0, 1, 0.8, 0), (0, 0, 0.5, 1), (1, 1, 1.0, 1)])
    assert metric_value(rows, "accuracy") == 0.5
    assert metric_value(rows, "accuracy_ci_alnum") == 0.75
    assert metric_value(rows, "one_minus_ned") == pytest.approx((1 + 0.8 + 0.5 + 1) / 4)
    assert metric_value(rows, "one_minus_ned_cjk") == pytest.approx(0.75)  # the two CJK crops only
    assert metric_value(_rec([(1, 1, 1.0, 0)]), "one_minus_ned_cjk") is None
    det = {"ids": ["p0", "p1"], "det": [(3, 4, 5), (1, 2, 1)]}
    assert metric_value(det, "hmean") == pytest.approx(2 * 4 / (6 + 6))  # pooled counts, not a mean of pages


def test_identical_models_drop_nothing_with_a_zero_interval() -> None:
    rows = _rec([(1, 1, 1.0, 0), (0, 0, 0.4, 0), (1, 1, 1.0, 0)] * 10)
    d = paired_drop(rows, rows, "rec", "accuracy_ci_alnum", n_boot=300)
    assert (d["drop"], d["lo"], d["hi"], d["n"]) == (0.0, 0.0, 0.0, 30)


def test_interval_contains_the_drop_and_narrows_with_more_samples() -> None:
    ref = [(1, 1, 1.0, 0)] * 8 + [(0, 0, 0.5, 0)] * 2
    cand = [(1, 1, 1.0, 0)] * 7 + [(0, 0, 0.5, 0)] * 3  # one of ten flips: a 10-point drop
    small = paired_drop(_rec(ref), _rec(cand), "rec", "accuracy_ci_alnum", n_boot=2000)
    big = paired_drop(_rec(ref * 20), _rec(cand * 20), "rec", "accuracy_ci_alnum", n_boot=2000)
    assert small["drop"] == big["drop"] == pytest.approx(10.0)
    assert small["lo"] <= 10.0 <= small["hi"] and big["lo"] <= 10.0 <= big["hi"]
    assert big["hi"] - big["lo"] < small["hi"] - small["lo"]
    assert small["lo"] >= 0.0  # paired: the candidate is never better on any sample, so no resample favours it
    again = paired_drop(_rec(ref), _rec(cand), "rec", "accuracy_ci_alnum", n_boot=2000)
    assert again == small  # seeded


def test_rows_of_different_samples_are_refused() -> None:
    a = _rec([(1, 1, 1.0, 0)])
    b = {"ids": ["other"], "rec": [(1, 1, 1.0, 0)]}
    with pytest.raises(ArtifactError, match="not the same samples"):
        paired_drop(a, b, "rec", "accuracy")


def test_no_samples_give_no_drop_and_an_undefined_bound_fails_the_gate() -> None:
    from ocrslim.quantize.gate import _fails

    empty = {"ids": [], "rec": []}
    d = paired_drop(empty, empty, "rec", "accuracy_ci_alnum")  # an empty table, not a reshape error
    assert (d["n"], d["drop"], d["hi"]) == (0, None, None)
    assert not _fails(d, 1.0)  # undefined on the set: not counted (the gate refuses empty sets when it builds)
    assert _fails({"drop": 0.2, "lo": None, "hi": None}, 1.0)  # a drop nothing bounds is not shown small
    assert not _fails({"drop": 0.2, "lo": -0.3, "hi": 0.9}, 1.0)
    assert _fails({"drop": 0.2, "lo": -0.3, "hi": 1.1}, 1.0)


def test_bootstrap_metrics_agree_with_the_evaluate_stage_metrics() -> None:
    import numpy as np

    from ocrslim.eval.metrics import DetMetric, RecMetric

    rec = RecMetric(by_script=True)
    pairs = (("Total", "TOTAL"), ("中文", "中文"), ("中又", "中文"), ("abc", "abd"), ("", "x"), ("RM 9", "RM 9"))
    for pred, gt in pairs:
        rec.update(pred, gt)
    rows = {"ids": list(range(len(rec.rows))), "rec": rec.rows}
    summary = rec.summary()
    for m in ("accuracy", "accuracy_ci_alnum", "one_minus_ned"):
        assert metric_value(rows, m) == pytest.approx(summary[m])
    assert metric_value(rows, "one_minus_ned_cjk") == pytest.approx(summary["one_minus_ned_cjk"])
    det = DetMetric()
    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], dtype=np.float32)
    det.update([square, square + 20], [False, False], [square + 1])
    det.update([square], [False], [square, square + 50])
    drows = {"ids": [0, 1], "det": det.rows}
    assert metric_value(drows, "hmean") == pytest.approx(det.summary()["hmean"])
