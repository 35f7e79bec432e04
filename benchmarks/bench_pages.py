"""Whole pages, end to end, against the peers: what a page costs and what each reader finds on it.

    python benchmarks/bench_pages.py [--pages ../shared/data/sroie_dev] [--limit 60] [--threads 1 2]
                                     [--readers bundle teacher_mnn teacher_ort rapidocr_v4 rapidocr_v6]

Each reader runs in a fresh process per thread count (so its peak RSS is its own: imports, models,
buffers), reads every page from its file (decode → detection at the page's own size → every line crop →
recognition → text), and is timed per page after one warm-up page. Printed per reader: p50 / p90 ms per
page, pages/s, peak RSS, lines per page, det hmean and e2e F1 on those pages (ICDAR 2015 matching, the
evaluate stage's scorer), and the ratios of p50 against the teacher in MNN FP32 and against RapidOCR v4,
all measured in this one run.

Readers: ``bundle`` (``artifacts/bundle``, ocrslim's MNN runtime), ``teacher_mnn`` / ``teacher_ort``
(PP-OCRv4 mobile through ocrslim's pipeline on MNN FP32 / ONNX Runtime), ``rapidocr_v4``
(``rapidocr_onnxruntime==1.4.4``) and ``rapidocr_v6`` (``rapidocr==3.10.0``) through their own packages,
angle classifier off (ocrslim has none; the pages are upright). Latency is host-dependent; the ratios are
the figures to compare.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

READERS = ("bundle", "teacher_mnn", "teacher_ort", "rapidocr_v4", "rapidocr_v6")


def _reader(name: str, threads: int, bundle: str) -> Any:
    """``fn(bgr image) -> [(4x2 box, text)]`` for one reader."""
    import numpy as np

    if name.startswith("rapidocr"):
        if name == "rapidocr_v4":
            from rapidocr_onnxruntime import RapidOCR

            engine = RapidOCR(intra_op_num_threads=threads, inter_op_num_threads=1, use_cls=False,
                              print_verbose=False)

            def read_v4(img: Any) -> list[tuple[Any, str]]:
                result, _ = engine(img)
                return [(np.asarray(r[0], dtype=np.float32), r[1]) for r in result or []]

            return read_v4
        from rapidocr import RapidOCR as RapidOCR6

        engine6 = RapidOCR6(params={"Global.use_cls": False, "Global.log_level": "error",
                                    "EngineConfig.onnxruntime.intra_op_num_threads": threads,
                                    "EngineConfig.onnxruntime.inter_op_num_threads": 1})

        def read_v6(img: Any) -> list[tuple[Any, str]]:
            out = engine6(img)
            boxes = out.boxes if out.boxes is not None else []
            return [(np.asarray(b, dtype=np.float32), t) for b, t in zip(boxes, out.txts or ())]

        return read_v6
    from ocrslim.infer.pipeline import OCR, open_bundle, open_model

    if name == "bundle":
        ocr = OCR(*open_bundle(bundle, threads=threads))
    elif name == "teacher_ort":
        ocr = OCR(open_model("ppocrv4_mobile_det", "det", threads=threads),
                  open_model("ppocrv4_mobile_rec", "rec", threads=threads))
    else:  # teacher_mnn: the zoo teacher converted to MNN FP32 (cached), read by ocrslim's MNN runtime
        from ocrslim.export.mnn import open_model_on

        ocr = OCR(open_model_on("ppocrv4_mobile_det", "det", "mnn", threads=threads),
                  open_model_on("ppocrv4_mobile_rec", "rec", "mnn", threads=threads))
    drop = ocr.rec.rec_cfg.drop_score if ocr.rec is not None else 0.0

    def read(img: Any) -> list[tuple[Any, str]]:
        return [(ln.box, ln.text) for ln in ocr.read(img) if ln.score >= drop and ln.text.strip()]

    return read


def child(args: argparse.Namespace) -> int:
    """One reader, one thread count: time every page, score them, report peak RSS (JSON on stdout)."""
    import cv2
    import numpy as np

    from ocrslim.data.datasets import load_det_dataset
    from ocrslim.eval.metrics import DetMetric, E2EMetric
    from ocrslim.eval.rss_child import hwm_mb

    samples = load_det_dataset(args.pages, args.limit)
    t0 = time.perf_counter()
    read = _reader(args.child, args.threads, args.bundle)
    open_s = time.perf_counter() - t0
    read(cv2.imread(str(samples[0].image)))  # warm-up (first-call allocations, MNN resize)
    det, e2e, times, lines = DetMetric(), E2EMetric(), [], 0
    for s in samples:
        t = time.perf_counter()
        img = cv2.imread(str(s.image))
        out = read(img)
        times.append((time.perf_counter() - t) * 1000)
        boxes = [b for b, _ in out]
        det.update(s.polys, s.ignore, boxes)
        e2e.update(s.polys, s.texts, s.ignore, boxes, [t for _, t in out])
        lines += len(out)
    ms = np.asarray(times)
    print(json.dumps({"reader": args.child, "threads": args.threads, "pages": len(samples),
                      "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
                      "pages_per_s": len(ms) / (ms.sum() / 1000), "peak_rss_mb": hwm_mb(), "open_s": open_s,
                      "lines_per_page": lines / len(samples), "det_hmean": det.summary()["hmean"],
                      "e2e_f1": e2e.summary()["f1"]}))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--pages", default="../shared/data/sroie_dev", help="a det set with transcriptions")
    p.add_argument("--limit", type=int, default=60)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--readers", nargs="+", default=list(READERS), choices=READERS)
    p.add_argument("--bundle", default="artifacts/bundle")
    p.add_argument("--json", help="write all rows here")
    p.add_argument("--child", choices=READERS, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.threads = args.threads[0]
        return child(args)
    rows: list[dict[str, Any]] = []
    for threads in args.threads:
        for name in args.readers:
            cmd = [sys.executable, __file__, "--child", name, "--threads", str(threads), "--pages", args.pages,
                   "--limit", str(args.limit), "--bundle", args.bundle]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                print(f"{name} ({threads} threads) failed:\n{res.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(f"  {name} x{threads}: {rows[-1]['p50_ms']:.0f} ms/page", file=sys.stderr, flush=True)
    print(f"{args.pages}: {rows[0]['pages'] if rows else 0} pages, one fresh process per reader and thread count\n")
    print("| reader | threads | p50 ms | p90 ms | pages/s | peak RSS MB | lines/page | det hmean | e2e F1 "
          "| p50 vs teacher MNN | p50 vs RapidOCR v4 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ref = {x["reader"]: x["p50_ms"] for x in rows if x["threads"] == r["threads"]}

        def ratio(other: str, row: dict[str, Any] = r, base: dict[str, float] = ref) -> str:
            return f"×{base[other] / row['p50_ms']:.2f} faster" if other in base else "–"

        print(f"| {r['reader']} | {r['threads']} | {r['p50_ms']:.0f} | {r['p90_ms']:.0f} | {r['pages_per_s']:.2f} | "
              f"{r['peak_rss_mb']:.0f} | {r['lines_per_page']:.1f} | {r['det_hmean']:.3f} | {r['e2e_f1']:.3f} | "
              f"{ratio('teacher_mnn')} | {ratio('rapidocr_v4')} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
