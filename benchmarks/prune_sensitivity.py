"""Pruning sensitivity, before any recovery: accuracy of the teacher pruned at several ratios, as a
whole and one backbone stage at a time, with and without bias compensation.

    python benchmarks/prune_sensitivity.py [--task rec|det] [--ratios 0.05 0.1 0.2 0.4] [--samples 100]
        [--out reports/prune_sensitivity_<task>.png]

Accuracy is measured through the real pipeline on the synthetic validation split (rec: 1−NED,
det: hmean); the row "teacher" is the unpruned model in the same process. Needs the DAG's
artifacts/teacher/<task>.pt and data/synth (``dvc repro teacher data``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

from ocrslim.compress.distill import det_metrics, rec_metrics
from ocrslim.compress.prune import example_input, prune_model
from ocrslim.core.artifacts import preprocessing
from ocrslim.core.config import PruneConfig, load_section
from ocrslim.data.datasets import load_det_dataset, load_rec_dataset
from ocrslim.models.io import load_model

STAGES = ("backbone.blocks3*", "backbone.blocks4*", "backbone.blocks5*", "backbone.blocks6*")


def score(task: str, model: torch.nn.Module, meta: dict, samples: list) -> float:
    model.eval()
    det_cfg, rec_cfg = preprocessing(meta)
    with torch.no_grad():
        if task == "rec":
            return rec_metrics(model, samples, meta["characters"], rec_cfg)["one_minus_ned"]
        return det_metrics(model, samples, det_cfg)["hmean"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--task", choices=("det", "rec"), default="rec")
    p.add_argument("--ratios", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.4])
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--out", default=None, help="PNG plot (default: reports/prune_sensitivity_<task>.png)")
    args = p.parse_args()
    torch.set_num_threads(2)
    base = load_section(args.params, "prune", PruneConfig)
    src = Path(f"artifacts/teacher/{args.task}.pt")
    samples = (load_rec_dataset("data/synth/rec/val", args.samples) if args.task == "rec"
               else load_det_dataset("data/synth/det/val", max(1, args.samples // 5)))
    metric = "1−NED" if args.task == "rec" else "hmean"
    model, meta = load_model(src)
    teacher = score(args.task, model, meta, samples)
    print(f"{args.task} on {len(samples)} synthetic val samples, metric {metric}; teacher {teacher:.3f}")
    print(f"| pruned | ratio | params (M) | {metric} no compensation | {metric} compensated |")
    print("|---|---:|---:|---:|---:|")
    ignore = base.ignore(args.task)
    scopes = {"all": ignore, **{s.split(".")[1].rstrip("*"): (*ignore, *[o for o in STAGES if o != s])
                                 for s in STAGES}}
    curves: dict[str, list[tuple[float, float]]] = {}
    t0 = time.perf_counter()
    for scope, ign in scopes.items():
        for ratio in args.ratios:
            row = []
            for comp in (False, True):
                model, meta = load_model(src)
                cfg = dataclasses.replace(base, ratio=ratio, rec_ratio=None, compensate=comp,
                                          **{f"ignore_{args.task}": tuple(ign)})
                report = prune_model(model, args.task, cfg, example_input(args.task, cfg), measure_onnx=False)
                row.append(score(args.task, model, meta, samples))
            curves.setdefault(scope, []).append((ratio, row[1]))
            print(f"| {scope} | {ratio} | {report['params_after'] / 1e6:.2f} | {row[0]:.3f} | {row[1]:.3f} |",
                  flush=True)
    print(f"({time.perf_counter() - t0:.0f} s)")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for scope, pts in curves.items():
        ax.plot([r for r, _ in pts], [v for _, v in pts], "o-", label=scope, lw=2 if scope == "all" else 1)
    ax.axhline(teacher, ls="--", c="gray", label="teacher")
    ax.set_xlabel("pruning ratio (channels removed per group)")
    ax.set_ylabel(f"{metric} before recovery (synthetic val)")
    ax.set_title(f"{args.task}: sensitivity to L1 pruning, compensated")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(args.out or f"reports/prune_sensitivity_{args.task}.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"plot: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
