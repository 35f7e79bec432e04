"""Evaluate a zoo teacher (det + rec) with every runner on the real dev sets.

    python benchmarks/eval_teachers.py ppocrv6_small [--backends onnx torch mnn] [--limit N]

Writes reports/teachers/<family>_<backend>.json (the ``ocrslim eval`` shape keyed by set) and
prints a Markdown table with the largest difference between runners. The PP-OCRv4 rows of the
README come from ``dvc repro`` (metrics/eval_teacher.json) or from this script with ppocrv4_mobile.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ocrslim.core.fsutil import write_json
from ocrslim.eval.evaluate import evaluate
from ocrslim.eval.report import eval_table, max_spread
from ocrslim.export.mnn import open_model_on
from ocrslim.infer.pipeline import OCR

REPO = Path(__file__).resolve().parents[1]

DATA = REPO.parent / "shared" / "data"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("family", help="zoo family, e.g. ppocrv6_small (uses <family>_det and <family>_rec)")
    p.add_argument("--backends", nargs="+", default=["onnx", "torch", "mnn"])
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(REPO / "reports" / "teachers"))
    args = p.parse_args()
    files = []
    for backend in args.backends:
        t0 = time.perf_counter()
        ocr = OCR(open_model_on(f"{args.family}_det", "det", backend, threads=args.threads),
                  open_model_on(f"{args.family}_rec", "rec", backend, threads=args.threads))
        res = evaluate(ocr, [DATA / "sroie_dev"], [DATA / "sroie_dev", DATA / "ic15_words_dev"], limit=args.limit,
                       progress=sys.stderr.isatty())
        out = Path(args.out) / f"{args.family}_{backend}.json"
        write_json(out, res)
        files.append(out)
        print(f"{args.family} {backend}: {time.perf_counter() - t0:.0f} s -> {out}", file=sys.stderr)
    print(eval_table(files))
    print(f"\nlargest difference between runners: {max_spread(files):.2f} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
