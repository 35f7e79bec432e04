"""Whole pages, end to end, against the peers: what a page costs and what each reader finds on it.

    python benchmarks/bench_pages.py [--pages ../shared/data/sroie_dev data/synth/det/test] [--limit 60]
                                     [--threads 1 2] [--readers bundle teacher_mnn teacher_onnx rapidocr_v4 ...]
                                     [--bundle artifacts/bundle] [--rounds 1] [--json reports/bench_pages.json]

The on-demand full run of the bench stage's measurement (:mod:`ocrslim.eval.pages`), with the peers: each
reader, set and thread count runs in a fresh process (its own peak RSS; a timeout stops a hung one), reads
every page from its file (decode → detection at the page's own size → every line crop → recognition → text)
and is timed per page after one warm-up page. Printed per row: p50 / p90 ms per page, pages/s, peak RSS,
lines per page, det hmean and e2e F1 on those pages (ICDAR 2015 matching, the evaluate stage's scorer) and
the p50 speedups against the teacher in MNN FP32 and against RapidOCR v4, all measured in this one run.

Page sets: the 60 SROIE dev receipts and the synthetic test pages (``data/synth/det/test``, from the data stage),
which stand in for scene images: no real scene set with ground truth is available here.

Readers: ``bundle`` (``--bundle``, ocrslim's MNN runtime), ``bundle_onnx`` (``--bundle-onnx``, the ONNX
Runtime bundle), ``teacher_mnn`` / ``teacher_onnx`` (the zoo's PP-OCRv4 mobile through ocrslim's pipeline on
MNN FP32 — converted once and cached — and on ONNX Runtime), ``rapidocr_v4`` (``rapidocr_onnxruntime==1.4.4``)
and ``rapidocr_v6`` (``rapidocr==3.10.0``) through their own packages, angle classifier off (ocrslim has none;
the pages are upright). A reader that fails is reported and the run goes on. Latency is host-dependent; the
ratios are the figures to compare.

``--rounds N`` repeats the whole measurement N times, the readers in turn forwards and backwards, so that each
reader's neighbours in time are the others (on a shared host the speed of the machine drifts by tens of percent
over minutes): each round's speedups are taken within that round, and the summary gives every ratio's median and
range over the rounds beside the first round's table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

from ocrslim.core.config import BenchConfig
from ocrslim.core.fsutil import write_json
from ocrslim.eval.pages import PEER, PEERS, ReaderSpec, bench_pages, pages_table

READERS = ("bundle", "teacher_mnn", "teacher_onnx", *PEERS, "bundle_onnx")
TEACHER = ("ppocrv4_mobile_det", "ppocrv4_mobile_rec")


def reader_specs(names: list[str], bundle: str, bundle_onnx: str) -> dict[str, ReaderSpec]:
    """The readers by name; the zoo teacher in MNN FP32 is converted (once, cached) here, in the parent."""
    specs: dict[str, ReaderSpec] = {}
    for name in names:
        if name == "bundle":
            specs[name] = ReaderSpec(name, bundle=bundle)
        elif name == "bundle_onnx":
            specs[name] = ReaderSpec(name, bundle=bundle_onnx)
        elif name == "teacher_onnx":
            specs[name] = ReaderSpec(name, det=TEACHER[0], rec=TEACHER[1])
        elif name == "teacher_mnn":
            from ocrslim.export.mnn import zoo_as_mnn

            specs[name] = ReaderSpec(name, det=str(zoo_as_mnn(TEACHER[0])), rec=str(zoo_as_mnn(TEACHER[1])))
        else:
            specs[name] = ReaderSpec(name)
    return specs


def round_ratios(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per reader, set and thread count: the p50 and each speedup of every round, with their median and range."""
    out: dict[str, dict[str, Any]] = {}
    for res in results:
        for name, entry in res.items():
            for key, rows in entry.items():
                if not isinstance(rows, dict):
                    continue
                for tkey, row in rows.items():
                    if not isinstance(row, dict):
                        continue
                    for field in ("p50_ms", "speedup_vs_teacher", f"speedup_vs_{PEER}"):
                        if row.get(field) is not None:
                            out.setdefault(f"{name} {key} {tkey}", {}).setdefault(field, []).append(row[field])
    for cell in out.values():
        for field, values in list(cell.items()):
            cell[field] = {"rounds": values, "median": round(statistics.median(values), 3),
                           "min": min(values), "max": max(values)}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--pages", nargs="+", default=list(BenchConfig().pages), help="det sets with transcriptions")
    p.add_argument("--limit", type=int, default=60, help="first N pages of each set")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--readers", nargs="+", default=list(READERS[:-1]), choices=READERS)
    p.add_argument("--bundle", default="artifacts/bundle")
    p.add_argument("--bundle-onnx", default="artifacts/bundle_onnx")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--rounds", type=int, default=1,
                   help="repeat the measurement, readers forwards then backwards; ratios per round, then medians")
    p.add_argument("--timeout", type=float, default=BenchConfig().timeout, help="seconds per measuring process")
    p.add_argument("--json", help="write the bench.json-shaped result here")
    args = p.parse_args()
    cfg = BenchConfig(pages=tuple(args.pages), limit=args.limit, readers=tuple(args.readers),
                      threads=tuple(args.threads), runs=args.runs, rss=True, timeout=args.timeout)
    if args.rounds < 1:
        p.error(f"--rounds {args.rounds}: must be at least 1")
    specs = reader_specs(args.readers, args.bundle, args.bundle_onnx)
    results = []
    for r in range(args.rounds):
        order = list(specs.items()) if r % 2 == 0 else list(reversed(specs.items()))
        if args.rounds > 1:
            print(f"round {r + 1} of {args.rounds}: {', '.join(name for name, _ in order)}", file=sys.stderr)
        results.append(bench_pages(dict(order), cfg, keep_going=True))
    result = results[0]  # round 1 runs the readers in the order given
    print(f"\n{', '.join(args.pages)}: first {args.limit} pages each, one fresh process per reader, set and "
          "thread count" + (" (round 1)" if args.rounds > 1 else "") + "\n")
    print(pages_table(result))
    summary = round_ratios(results) if args.rounds > 1 else None
    if summary:
        print(f"\nover {args.rounds} rounds (median [min, max]):")
        for cell, fields in summary.items():
            print(f"  {cell}: " + "; ".join(f"{f} {v['median']} [{v['min']}, {v['max']}]" for f, v in fields.items()))
    if args.json:
        write_json(Path(args.json), {**result, "rounds": summary} if summary else result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
