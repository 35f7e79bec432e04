"""How the pruned detector's recovery was chosen: distillation variants scored on real receipts.

    python benchmarks/det_recovery.py [--pages 30] [--train-pages 1000] [--variants a b ...]

Each variant distils the DAG's pruned detector (``artifacts/pruned/det.pt``) from the teacher of
``params.yaml`` (``distill.teacher_det``) with the ``distill`` section's settings plus the variant's
overrides, on synthetic pages generated here (seed 0, ``data`` section, with the variant's
``data.doc_ratio``), then scores it on the first ``--pages`` SROIE dev pages (det hmean, through the
real pipeline) and on 50 synthetic val pages. The teacher is scored on the same pages in the same
process. Needs ``dvc repro prune`` and ``../shared/data/sroie_dev``. One variant of 100 steps takes
about 5 CPU minutes on 2 cores.

The SROIE pages used here are dev pages: picking defaults by them means the SROIE figures of the
chosen default are not held out (the README says so).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import torch

from ocrslim.compress.distill import det_data, det_metrics, distill_det
from ocrslim.core.artifacts import preprocessing
from ocrslim.core.config import DataConfig, DistillConfig, load_section
from ocrslim.data.datasets import load_det_dataset
from ocrslim.data.synthetic import generate_synthetic
from ocrslim.infer.pipeline import open_model
from ocrslim.models.io import load_model

#: name → (description, data.doc_ratio, distill overrides)
VARIANTS: dict[str, tuple[str, float, dict]] = {
    "scene": ("scene pages only, page-scale crops, 100 steps", 0.0, {"det_scale": "page", "steps": 100}),
    "docs": ("+ document pages (doc_ratio 0.4)", 0.4, {"det_scale": "page", "steps": 100}),
    "scale": ("+ inference-scale crops", 0.4, {"det_scale": "inference", "steps": 100}),
    "steps200": ("+ 200 steps (the default)", 0.4, {"det_scale": "inference", "steps": 200}),
    "kd_only": ("200 steps, KD only (alpha 1)", 0.4, {"det_scale": "inference", "steps": 200, "alpha": 1.0}),
    "alpha05": ("200 steps, alpha 0.5", 0.4, {"det_scale": "inference", "steps": 200, "alpha": 0.5}),
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--pages", type=int, default=30, help="first N SROIE dev pages")
    p.add_argument("--train-pages", type=int, default=1000)
    p.add_argument("--variants", nargs="+", default=["scene", "docs", "scale", "steps200"], choices=list(VARIANTS))
    p.add_argument("--sroie", default="../shared/data/sroie_dev")
    p.add_argument("--params", default="params.yaml")
    args = p.parse_args()
    torch.set_num_threads(2)
    base = load_section(args.params, "distill", DistillConfig)
    data_cfg = load_section(args.params, "data", DataConfig)
    sroie = load_det_dataset(args.sroie, args.pages)
    _, meta = load_model("artifacts/pruned/det.pt")
    det_cfg, _ = preprocessing(meta)
    teacher = open_model(base.teacher_det or "ppocrv4_mobile_det", "det", threads=base.threads)
    with tempfile.TemporaryDirectory(prefix="ocrslim-detrec-") as tmp:
        sets: dict[float, Path] = {}
        for ratio in sorted({VARIANTS[v][1] for v in args.variants}):
            cfg = dataclasses.replace(data_cfg, det_train=args.train_pages, det_val=50, det_test=0, rec_train=0,
                                      rec_val=0, rec_test=0, doc_ratio=ratio)
            generate_synthetic(cfg, Path(tmp) / f"doc{ratio}")
            sets[ratio] = Path(tmp) / f"doc{ratio}" / "det"
        val = load_det_dataset(sets[max(sets)] / "val")
        t_sroie = _score_runner(teacher, sroie)
        print(f"teacher {teacher.source}: SROIE first {len(sroie)} pages hmean {t_sroie:.3f}")
        print("| variant | steps | synthetic val hmean | SROIE hmean, first pages | distill CPU min |")
        print("|---|---:|---:|---:|---:|")
        for name in args.variants:
            desc, ratio, over = VARIANTS[name]
            cfg = dataclasses.replace(base, **over, eval_every=0, train_data_det=(str(sets[ratio] / "train"),),
                                      val_data_det=(str(sets[ratio] / "val"),))
            student, _ = load_model("artifacts/pruned/det.pt")
            report = distill_det(student, teacher, cfg, det_data(cfg, det_cfg), Path(tmp) / f"run_{name}",
                                 det_cfg=det_cfg, progress=False)
            cpu = (report["fit"].get("cpu_seconds") or 0.0) / 60
            student.eval()
            with torch.no_grad():
                v = det_metrics(student, val, det_cfg)["hmean"]
                s = det_metrics(student, sroie, det_cfg)["hmean"]
            print(f"| {desc} | {cfg.steps} | {v:.3f} | {s:.3f} (teacher {t_sroie:.3f}) | {cpu:.1f} |", flush=True)
    return 0


def _score_runner(model, samples) -> float:
    """Det hmean of an opened pipeline model (the teacher, in its own runtime) on ``samples``."""
    from ocrslim.eval.metrics import DetMetric
    from ocrslim.infer.pipeline import OCR
    from ocrslim.infer.preprocess import read_image

    ocr, metric = OCR(model, None), DetMetric()
    for s in samples:
        boxes, _ = ocr.detect(read_image(s.image))
        metric.update(s.polys, s.ignore, boxes)
    return metric.summary()["hmean"]


if __name__ == "__main__":
    sys.exit(main())
