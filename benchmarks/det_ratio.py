"""How hard to prune the detector: each ``prune.ratio`` against the teacher on real pages, with a paired interval.

    python benchmarks/det_ratio.py --ratios 0.3 0.25 0.2 [--pages ../shared/data/sroie_train] [--max-drop 1.0]
        [--json reports/det_ratio.json]

The teacher (``artifacts/teacher/det.safetensors``) is pruned at each ratio with the rest of the ``prune`` section
of ``params.yaml`` (L1 channels, then the least-squares reconstruction on ``prune.calib_data_det``: the default
student's recipe, which trains no further), and every model reads the same pages through the runtime the bundle
uses (strips, DB post-processing) with the shipped recogniser (``artifacts/bundle``) for end-to-end F1. Printed per
ratio: params, MACs, det hmean and e2e F1, and the drop against the teacher with a paired bootstrap 95% interval
over pages (:func:`ocrslim.eval.stats.paired_drop`, the quantize gate's statistic); the pick is the largest ratio
whose upper bound on both drops is within ``--max-drop``. Pages: the SROIE *training* set (never the dev pages).
Needs ``dvc repro teacher@det bundle``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ocrslim.compress.prune import make_student
from ocrslim.core.config import PruneConfig, StudentConfig, from_dict, load_section, to_dict
from ocrslim.core.fsutil import write_json
from ocrslim.data.datasets import load_det_dataset
from ocrslim.eval.evaluate import score_det
from ocrslim.eval.stats import paired_drop
from ocrslim.infer.pipeline import OCR, Model, open_bundle
from ocrslim.infer.runners import TorchRunner
from ocrslim.models.io import load_model, load_task_model

TEACHER = Path("artifacts/teacher/det.safetensors")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--ratios", type=float, nargs="+", required=True)
    p.add_argument("--pages", default="../shared/data/sroie_train")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--bundle", default="artifacts/bundle", help="its recogniser reads the lines (e2e F1)")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--max-drop", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    samples = load_det_dataset(args.pages, args.limit)
    _, rec = open_bundle(args.bundle, threads=args.threads)
    base = to_dict(load_section(args.params, "prune", PruneConfig))
    _, _, pre = load_task_model(TEACHER, "det")

    def score(model: Any, name: str) -> dict[str, Any]:
        model.eval()
        with torch.no_grad():
            return score_det(OCR(Model("det", TorchRunner(model), name, det_cfg=pre), rec), samples, rows=True)

    t0 = time.perf_counter()
    teacher = score(load_model(TEACHER)[0], "teacher")
    print(f"teacher: det hmean {teacher['det']['hmean']:.4f}, e2e F1 {teacher['e2e']['f1']:.4f} "
          f"({len(samples)} pages of {args.pages}, {time.perf_counter() - t0:.0f} s)", flush=True)
    rows: list[dict[str, Any]] = []
    for ratio in args.ratios:
        t0 = time.perf_counter()
        cfg = from_dict(PruneConfig, {**base, "ratio": ratio}, "prune")
        model, report = make_student(load_model(TEACHER)[0], "det", cfg, StudentConfig(), measure_onnx=False, pre=pre)
        res = score(model, f"u{ratio}")
        row: dict[str, Any] = {"ratio": ratio, "params": report["params_after"],
                               "params_teacher": report["params_before"], "macs": report["macs_after"],
                               "macs_teacher": report["macs_before"],
                               "hmean": res["det"]["hmean"], "e2e_f1": res["e2e"]["f1"]}
        for metric in ("hmean", "e2e_f1"):
            row[f"drop_{metric}"] = paired_drop(teacher["rows"]["det"], res["rows"]["det"], "det", metric)
        row["passes"] = all(row[f"drop_{m}"]["hi"] <= args.max_drop for m in ("hmean", "e2e_f1"))
        rows.append(row)
        print(f"ratio {ratio}: params {row['params'] / 1e6:.2f}M (×{row['params_teacher'] / row['params']:.2f}), "
              f"MACs {row['macs'] / 1e6:.0f}M (×{row['macs_teacher'] / row['macs']:.2f}); "
              f"det hmean {row['hmean']:.4f}, e2e F1 {row['e2e_f1']:.4f}; drop " + ", ".join(
                  f"{m} {row[f'drop_{m}']['drop']:+.2f} [{row[f'drop_{m}']['lo']:+.2f}, {row[f'drop_{m}']['hi']:+.2f}]"
                  for m in ("hmean", "e2e_f1")) + f" → {'within' if row['passes'] else 'over'} {args.max_drop} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    passing = [r["ratio"] for r in rows if r["passes"]]
    pick = max(passing) if passing else None
    print(f"pick: prune.ratio={pick}" if pick is not None else f"no ratio within {args.max_drop} points")
    if args.json:
        write_json(Path(args.json), {"pages": args.pages, "n_pages": len(samples), "max_drop": args.max_drop,
                                     "teacher": {"hmean": teacher["det"]["hmean"], "e2e_f1": teacher["e2e"]["f1"]},
                                     "ratios": rows, "pick": pick})
    return 0


if __name__ == "__main__":
    sys.exit(main())
