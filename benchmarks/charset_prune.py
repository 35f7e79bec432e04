"""Vocabulary pruning of the recogniser (``prune.charset``): size against accuracy, one run.

    python benchmarks/charset_prune.py [--charsets full ascii] [--limit N]

For each charset, the DAG's teacher recogniser (``artifacts/teacher/rec.pt``, unpruned channels) gets
the prune stage's treatment (``ocrslim.compress.prune.make_student`` with ``prune.charset``), is exported to
ONNX as the export stage does (parity-gated), and is evaluated with ONNX Runtime on the real dev
sets (IC15 words, SROIE line crops; case-insensitive alphanumeric accuracy) and on the synthetic
test lines (half of them Chinese; exact accuracy). Needs ``dvc repro teacher data`` and
``../shared/data``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import torch

from ocrslim.compress.prune import make_student
from ocrslim.core.config import ExportConfig, PruneConfig, StudentConfig, load_section
from ocrslim.eval.evaluate import evaluate_rec
from ocrslim.export.steps import export_model
from ocrslim.infer.pipeline import OCR, open_model
from ocrslim.models.io import load_model, save_model

SETS = {
    "IC15 acc": ("../shared/data/ic15_words_dev", "accuracy_ci_alnum"),
    "SROIE acc": ("../shared/data/sroie_dev", "accuracy_ci_alnum"),
    "synth exact acc": ("data/synth/rec/test", "accuracy"),
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--charsets", nargs="+", default=["full", "ascii"], help="'full', 'ascii' or dictionary files")
    p.add_argument("--limit", type=int, default=None, help="first N crops of each set")
    p.add_argument("--params", default="params.yaml")
    args = p.parse_args()
    torch.set_num_threads(2)
    prune = dataclasses.replace(load_section(args.params, "prune", PruneConfig), rec_ratio=0.0)
    export = load_section(args.params, "export", ExportConfig)
    print("| rec dictionary | classes | params (M) | ONNX MB | " + " | ".join(SETS) + " |")
    print("|---|---:|---:|---:|" + "---:|" * len(SETS))
    with tempfile.TemporaryDirectory(prefix="ocrslim-charset-") as tmp:
        for spec in args.charsets:
            model, meta = load_model("artifacts/teacher/rec.pt")
            cfg = dataclasses.replace(prune, charset=None if spec == "full" else spec)
            model, report = make_student(model, "rec", cfg, StudentConfig(), characters=meta["characters"],
                                         measure_onnx=False)
            meta = {**meta, "characters": report.pop("characters", meta["characters"])}
            pt, onnx = Path(tmp) / f"{Path(spec).stem}.pt", Path(tmp) / f"{Path(spec).stem}.onnx"
            save_model(model, pt, meta)
            exp = export_model(pt, onnx, "rec", export)
            ocr = OCR(None, open_model(str(onnx), "rec", threads=2))
            scores = []
            for path, key in SETS.values():
                scores.append(evaluate_rec(ocr, path, limit=args.limit, progress=False)["rec"][key])
            print(f"| {spec} | {len(meta['characters']) + 2} | {exp['params'] / 1e6:.2f} | {exp['onnx_mb']:.2f} | "
                  + " | ".join(f"{s:.3f}" for s in scores) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
