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
