"""Measurement helpers (not timed assertions: only that they measure what they name)."""

from __future__ import annotations

import time

import pytest

from ocrslim.bench import file_mb, latency_ms, peak_rss_mb


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


def test_summary_report_table_and_plots(tmp_path):
    import json

    from ocrslim.report import summary_report

    ev = {"sroie_dev": {"det": {"hmean": 0.95}, "e2e": {"f1": 0.88}, "rec": {"accuracy_ci_alnum": 0.9}},
          "ic15_words_dev": {"rec": {"accuracy_ci_alnum": 0.66}}}
    (tmp_path / "a.json").write_text(json.dumps(ev))
    bench = {"a": {"det": {"size_mb": 4.5, "p50_ms": 70.0, "peak_rss_mb": 300.0},
                   "rec": {"size_mb": 10.5, "p50_ms": 30.0, "peak_rss_mb": 320.0}}}
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    path = summary_report({"a": tmp_path / "a.json"}, tmp_path / "bench.json", {}, tmp_path / "out")
    text = path.read_text()
    # size = det + rec, latency = det + rec, memory = the larger peak; missing metrics shown as "–"
    assert "| a | 15.00 | 100.0 | 320 | 0.880 | 0.950 | 0.660 | 0.900 | – |" in text
    assert (tmp_path / "out" / "latency_vs_accuracy.png").stat().st_size > 1000
