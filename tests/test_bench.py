"""Measurement helpers and the page benchmark (not timed assertions: only that they measure what they name)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from ocrslim.core.config import BenchConfig
from ocrslim.core.errors import ConfigError, ToolError
from ocrslim.eval.bench import file_mb, latency_ms, peak_rss_mb
from ocrslim.eval.pages import ReaderSpec, bench_pages, pages_table, run_reader, score_pages
from ocrslim.eval.report import headline

from .conftest import LINES, render_page


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
    # the page bench's shape: the headline is SROIE at the largest thread count
    bench = {"teacher_mnn": {"size_mb": 15.0, "synth_test": {"t2": {"p50_ms": 9.0}},
                             "sroie_dev": {"pages": 60, "e2e_f1": 0.88,
                                           "t1": {"p50_ms": 150.0, "p90_ms": 170.0, "peak_rss_mb": 300.0},
                                           "t2": {"p50_ms": 100.0, "p90_ms": 120.0, "peak_rss_mb": 320.0}}},
             "bundle": {"size_mb": 3.0, "sroie_dev": {"t2": {"p50_ms": 75.0, "p90_ms": 85.0, "peak_rss_mb": 210.0}}}}
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
    # size = det + rec files, latency = per page (p50 / p90), memory = the reader's peak, params from prune
    assert "| teacher, MNN FP32 | 2.00 | 15.00 | 100.0 / 120.0 | 320 | 0.950 | 0.880 | 0.900 | 0.660 | – | – |" in text
    assert "| bundle (shipped) | 0.80 | 3.00 | 75.0 / 85.0 | 210 | 0.940 | 0.870 | 0.900 | 0.650 | – | – |" in text
    assert "size ×5.0 smaller" in text and "SROIE e2e F1 -1.0" in text and "IC15 rec acc -1.0 points" in text
    assert (tmp_path / "out" / "latency_vs_accuracy.png").stat().st_size > 1000
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary) == {"teacher", "bundle"}  # the student's eval file is missing: no row, not zeros
    assert summary["bundle"] == {"size_mb": 3.0, "latency_ms": 75.0, "latency_p90_ms": 85.0, "peak_rss_mb": 210.0,
                                 "det_hmean": 0.94, "e2e_f1": 0.87, "rec_acc": 0.65, "sroie_rec_acc": 0.9,
                                 "params_m": 0.8}
    assert summary["teacher"]["params_m"] == 2.0
    # Pareto: (size, accuracy) points; (3, .8) is beaten by (2, .9); ties on both axes stay on the front
    assert _pareto([(1, 0.5), (2, 0.9), (3, 0.8), (2, 0.9)]) == [0, 1, 3]


# ------------------------------------------------------------------------------------------ page benchmark
TEACHER_ORT = ReaderSpec("teacher_onnx", det="ppocrv4_mobile_det", rec="ppocrv4_mobile_rec")


@pytest.fixture(scope="module")
def page_set(tmp_path_factory) -> Path:
    """A det set (ICDAR layout) of two rendered pages with their transcriptions."""
    root = tmp_path_factory.mktemp("pages")
    (root / "images").mkdir()
    (root / "gt").mkdir()
    img, quads = render_page()
    for name in ("p1", "p2"):
        cv2.imwrite(str(root / "images" / f"{name}.png"), img)
        (root / "gt" / f"gt_{name}.txt").write_text(
            "".join(",".join(str(int(v)) for v in q.reshape(-1)) + f",{t}\n" for q, t in zip(quads, LINES)))
    return root


def test_reader_spec_needs_models_and_gives_its_arguments():
    with pytest.raises(ConfigError, match="no models"):
        ReaderSpec("mine", det="a.onnx")
    with pytest.raises(ConfigError, match="opens its own models"):
        ReaderSpec("rapidocr_v4", bundle="b")
    spec = ReaderSpec("x", det="d.onnx", rec="r.onnx", overrides=("det.limit_side_len=960",))
    assert spec.args() == ["--name", "x", "--det", "d.onnx", "--rec", "r.onnx", "--set", "det.limit_side_len=960"]


def test_score_pages_uses_the_evaluate_matching(page_set):
    from ocrslim.data.datasets import load_det_dataset

    samples = load_det_dataset(page_set)
    exact = [[[q.tolist(), t] for q, t in zip(s.polys, s.texts)] for s in samples]
    assert score_pages(samples, exact) == {"pages": 2, "lines_per_page": 3.0, "det_hmean": 1.0, "e2e_f1": 1.0}
    wrong = [[[q.tolist(), "x"] for q in s.polys] for s in samples]
    assert score_pages(samples, [wrong[0], None]) == {"pages": 1, "lines_per_page": 3.0, "det_hmean": 1.0,
                                                      "e2e_f1": 0.0}


def test_bench_pages_in_process_and_in_a_fresh_process(page_set):
    """Both modes read every page end to end and score what was read; the fresh process adds its peak RSS, and
    the ratios compare readers measured in the same run."""
    cfg = BenchConfig(pages=(str(page_set),), limit=2, threads=(1,), rss=False)
    here = bench_pages({"teacher_mnn": TEACHER_ORT, "bundle": TEACHER_ORT}, cfg, log=lambda _: None)
    rows = here["bundle"][page_set.name]
    assert rows["pages"] == 2 and rows["det_hmean"] == 1.0 and rows["e2e_f1"] >= 2 / 3
    assert rows["e2e_f1_vs_teacher"] == 0.0 and rows["lines_per_page"] == 3.0
    t1 = rows["t1"]
    assert 0 < t1["p50_ms"] <= t1["p90_ms"] and t1["pages_per_s"] > 0 and "peak_rss_mb" not in t1
    assert t1["speedup_vs_teacher"] > 0 and "speedup_vs_teacher" not in here["teacher_mnn"][page_set.name]["t1"]

    child = run_reader(TEACHER_ORT, page_set, limit=1, threads=1, timeout=300)
    assert len(child["times_ms"]) == 1 and len(child["lines"]) == 1 and child["unreadable"] == 0
    assert sorted(t.replace(" ", "") for _, t in child["lines"][0]) == sorted(x.replace(" ", "") for x in LINES)
    assert 10 < child["peak_rss_mb"] < 4000 and child["startup_s"] > 0 and child["open_s"] > 0


def test_a_child_that_fails_or_hangs_is_one_line(page_set, tmp_path):
    with pytest.raises(ToolError, match=r"no result within 0.01 s \(bench.timeout\)"):
        run_reader(TEACHER_ORT, page_set, limit=1, threads=1, timeout=0.01)
    with pytest.raises(ToolError, match=r"exit 1\): error: .*missing.onnx: model file not found"):
        run_reader(ReaderSpec("x", det=str(tmp_path / "missing.onnx"), rec="ppocrv4_mobile_rec"), page_set, 1, 1,
                   timeout=300)


def test_overrides_change_the_det_policy_and_are_validated():
    from ocrslim.eval.pages import _apply_overrides
    from ocrslim.infer.pipeline import open_model

    det = open_model("ppocrv4_mobile_det", "det", threads=1)
    new = _apply_overrides(det, ["det.limit_type=max", "det.limit_side_len=960", "rec.batch_size=12"])
    assert (new.det_cfg.limit_type, new.det_cfg.limit_side_len) == ("max", 960)
    assert new.det_cfg.thresh == det.det_cfg.thresh
    with pytest.raises(ConfigError, match="det.limit_type"):
        _apply_overrides(det, ["det.limit_type=biggest"])
    with pytest.raises(ConfigError, match="expected det.KEY=VALUE"):
        _apply_overrides(det, ["limit_side_len=960"])


def test_headline_and_table_read_the_flat_shape():
    entry = {"size_mb": 3.0, "synth_test": {"t1": {"p50_ms": 5.0}},
             "sroie_dev": {"pages": 2, "e2e_f1": 0.5, "t1": {"p50_ms": 20.0}, "t2": {"p50_ms": 12.0, "p90_ms": 15.0}}}
    assert headline(entry) == {"set": "sroie_dev", "size_mb": 3.0, "threads": 2, "p50_ms": 12.0, "p90_ms": 15.0}
    assert headline(entry, "synth_test")["p50_ms"] == 5.0
    table = pages_table({"bundle": entry})
    assert "| bundle | sroie_dev (2) | 2 | 12 | 15 |" in table and len(table.splitlines()) == 2 + 3
    json.dumps(entry)  # JSON-able as written
    assert np.isfinite(entry["sroie_dev"]["t2"]["p50_ms"])
