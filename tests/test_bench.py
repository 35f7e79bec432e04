"""Measurement helpers (not timed assertions: only that they measure what they name)."""

from __future__ import annotations

import time

import pytest

from ocrslim.eval.bench import file_mb, latency_ms, peak_rss_mb


def test_latency_stats_are_ordered_and_count_runs():
    calls = []
    stats = latency_ms(lambda: calls.append(time.perf_counter()), runs=7, warmup=2)
    assert len(calls) == 9 and stats["runs"] == 7
    assert 0 <= stats["min"] <= stats["p50"] <= stats["p90"]


def test_latency_rejects_zero_runs():
    with pytest.raises(ValueError):
        latency_ms(lambda: None, runs=0)


def test_file_mb(tmp_path):
    f = tmp_path / "m.bin"
    f.write_bytes(b"\0" * 2**20)
    assert file_mb(f) == 1.0


def test_peak_rss_of_a_model_exceeds_the_bare_interpreter():
    """Regression: ru_maxrss survives fork+exec on Linux, so the child reported the parent's peak."""
    res = peak_rss_mb("ppocrv4_mobile_rec", "rec", (1, 3, 48, 64), backend="onnx", runs=1)
    assert res["peak_rss_mb"] > res["import_rss_mb"] > 10
    assert res["import_rss_mb"] < 2000  # the child's own imports, not the test process's high-water mark


def test_summary_report_table_plots_and_summary_json(tmp_path):
    import json

    from ocrslim.eval.report import _pareto, summary_report

    def ev(f1, hmean, ic15):
        return {"sroie_dev": {"det": {"hmean": hmean}, "e2e": {"f1": f1}, "rec": {"accuracy_ci_alnum": 0.9}},
                "ic15_words_dev": {"rec": {"accuracy_ci_alnum": ic15}}}

    for name, e in {"teacher": ev(0.88, 0.95, 0.66), "bundle": ev(0.87, 0.94, 0.65)}.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(e))
    bench = {"teacher_mnn": {"det": {"size_mb": 4.5, "p50_ms": 70.0, "p90_ms": 80.0, "peak_rss_mb": 300.0},
                             "rec": {"size_mb": 10.5, "p50_ms": 30.0, "p90_ms": 40.0, "peak_rss_mb": 320.0}},
             "bundle": {"det": {"size_mb": 1.0, "p50_ms": 50.0, "p90_ms": 55.0, "peak_rss_mb": 200.0},
                        "rec": {"size_mb": 2.0, "p50_ms": 25.0, "p90_ms": 30.0, "peak_rss_mb": 210.0}}}
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    prune = {"params_before": 1_000_000, "params_after": 400_000, "macs_before": 5e8, "macs_after": 2e8,
             "onnx_bytes_before": 4 * 2**20, "onnx_bytes_after": 2**20, "ratio": 0.4}
    for t in ("det", "rec"):
        (tmp_path / f"prune_{t}.json").write_text(json.dumps(prune))
    path = summary_report({"teacher": tmp_path / "teacher.json", "bundle": tmp_path / "bundle.json",
                           "student": tmp_path / "missing.json"},
                          tmp_path / "bench.json", {t: tmp_path / f"prune_{t}.json" for t in ("det", "rec")},
                          tmp_path / "out", summary_json=tmp_path / "summary.json")
    text = path.read_text()
    # size = det + rec, latency = det + rec (p50 / p90), memory = the larger peak, params from prune; missing "–"
    assert "| teacher, MNN FP32 | 2.00 | 15.00 | 100.0 / 120.0 | 320 | 0.950 | 0.880 | 0.660 | – | – |" in text
    assert "| bundle (shipped) | 0.80 | 3.00 | 75.0 / 85.0 | 210 | 0.940 | 0.870 | 0.650 | – | – |" in text
    assert "size ×5.0 smaller" in text and "SROIE e2e F1 -1.0 points" in text
    assert (tmp_path / "out" / "latency_vs_accuracy.png").stat().st_size > 1000
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary) == {"teacher", "bundle"}  # the student's eval file is missing: no row, not zeros
    assert summary["bundle"] == {"size_mb": 3.0, "latency_ms": 75.0, "latency_p90_ms": 85.0, "peak_rss_mb": 210.0,
                                 "det_hmean": 0.94, "e2e_f1": 0.87, "rec_acc": 0.65, "sroie_rec_acc": 0.9,
                                 "params_m": 0.8}
    assert summary["teacher"]["params_m"] == 2.0
    # Pareto: (size, accuracy) points; (3, .8) is beaten by (2, .9); ties on both axes stay on the front
    assert _pareto([(1, 0.5), (2, 0.9), (3, 0.8), (2, 0.9)]) == [0, 1, 3]
