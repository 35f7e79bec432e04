"""How the students' recipes were chosen: prune (+ least-squares reconstruction) then distil, scored on
the training-side validation splits — never on the dev sets the evaluate stage reports.

    python benchmarks/recovery.py rec --variants b56h64 b56h64_kd [--steps 400] [--seed 0]
    python benchmarks/recovery.py det --variants u40 u40_kd40 u40_db200 u50nh
    python benchmarks/recovery.py rec --variants h64 h64_all --max-val 0
    python benchmarks/recovery.py rec --variants h64 --max-val 0 --pre rec.min_width=160

Each variant starts from the teacher of ``params.yaml`` (``artifacts/teacher/<task>.safetensors``),
applies the ``prune`` section plus the variant's prune overrides (reconstruction on
``prune.calib_data_<task>``), scores the pruned model on ``distill.<task>.val_data`` (the split stage's
val files + synthetic val), distils it with the ``distill`` section plus the variant's overrides, and
scores it again. The teacher is scored on the same samples in the same process. Printed: params and
MACs of the task's model (full dictionary), per-set validation metrics before and after recovery, and
the CPU minutes each part took. Needs ``dvc repro split data teacher``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from ocrslim.compress.distill import distill, score_student, task_data
from ocrslim.compress.prune import make_student
from ocrslim.core.config import (
    DistillConfig,
    PruneConfig,
    StudentConfig,
    from_dict,
    load_section,
    to_dict,
    with_overrides,
)
from ocrslim.infer.pipeline import open_model
from ocrslim.models.io import load_model, load_task_model

_EARLY_REC = ["backbone.conv1", "backbone.blocks2", "backbone.blocks3", "backbone.blocks4"]

#: name → (description, prune overrides, distill.<task> overrides)
VARIANTS: dict[str, dict[str, tuple[str, dict[str, Any], dict[str, Any]]]] = {
    "rec": {
        "u40": ("uniform 40% of backbone+neck convs, SVTR/head frozen", {"rec_ratio": 0.4}, {}),
        "h64": ("head rank 64, KD on the head alone (the default)", {"rec_ratio": 0.0, "head_rank_rec": 64}, {}),
        "ft": ("the teacher itself fine-tuned (the reference): 300 steps of KD + CTC on every weight",
               {"rec_ratio": 0.0, "head_rank_rec": 0}, {"steps": 300, "alpha": 0.9, "lr": 3e-4, "trainable": []}),
        "h64_all": ("head rank 64, KD on every weight (lr 1e-4)", {"rec_ratio": 0.0, "head_rank_rec": 64},
                    {"steps": 100, "alpha": 1.0, "lr": 1e-4, "trainable": []}),
        "b6": ("blocks6 at 50%, nothing else", {"rec_ratio": 0.0, "ratios_rec": ["backbone.blocks6=0.5"],
                                                  "ignore_rec": [*_EARLY_REC, "neck", "head.*"]}, {}),
        "b56h64": ("blocks6 50%, blocks5 30%, head rank 64 (activation PCA)",
                   {"rec_ratio": 0.0, "ratios_rec": ["backbone.blocks6=0.5", "backbone.blocks5=0.3"],
                    "ignore_rec": [*_EARLY_REC, "neck", "head.*"], "head_rank_rec": 64}, {}),
        "b56n3h64": ("blocks6 50%, blocks5 30%, neck convs 30%, head rank 64",
                     {"rec_ratio": 0.0, "ratios_rec": ["backbone.blocks6=0.5", "backbone.blocks5=0.3",
                                                       "neck.conv*=0.3"],
                      "ignore_rec": [*_EARLY_REC, "neck.svtr_block.*", "neck.norm", "head.*"], "head_rank_rec": 64},
                     {}),
    },
    "det": {
        "ft": ("the teacher itself fine-tuned (the reference): 40 KD-only steps", {"ratio": 0.0},
               {"steps": 40, "alpha": 1.0, "aux_weight": 0.0, "lr": 2e-4}),
        "u40": ("uniform 40%, head frozen (the default: no training)", {"ratio": 0.4}, {}),
        "u40_kd40": ("uniform 40%, 40 KD-only steps", {"ratio": 0.4},
                     {"steps": 40, "alpha": 1.0, "aux_weight": 0.0, "lr": 2e-4}),
        "u40_db200": ("uniform 40%, 200 steps of DB loss + KD (the previous default)", {"ratio": 0.4},
                      {"steps": 200, "alpha": 0.5, "aux_weight": 1.0, "lr": 1e-3}),
        "u50nh": ("uniform 50%, neck and head pruned too, 200 steps",
                  {"ratio": 0.5, "ignore_det": ["head.binarize.conv3"]},
                  {"steps": 200, "alpha": 0.5, "aux_weight": 0.0, "lr": 2e-4}),
        "u50": ("uniform 50%, head frozen", {"ratio": 0.5}, {}),
        "u60": ("uniform 60%, head frozen", {"ratio": 0.6}, {}),
    },
}


def _fmt(metrics: dict[str, Any], task: str) -> str:
    keys = ("hmean",) if task == "det" else ("accuracy_ci_alnum", "one_minus_ned")
    parts = []
    for k, v in sorted(metrics.items()):
        if isinstance(v, float) and (k in keys or k.split("/")[-1] in keys):
            parts.append(f"{k} {v:.3f}")
    return ", ".join(parts)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("task", choices=["det", "rec"])
    p.add_argument("--variants", nargs="+", required=True)
    p.add_argument("--steps", type=int, default=None, help="distill steps (default: the params' distill.<task>.steps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--max-val", type=int, default=None,
                   help="validation samples per set (default distill.<task>.max_val; 0 = all)")
    p.add_argument("--pre", nargs="*", default=[], metavar="TASK.KEY=VALUE",
                   help="preprocessing for the whole run instead of the teacher's (e.g. rec.min_width=160): the "
                        "teacher is scored, the student pruned, distilled and scored with it")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    unknown = [v for v in args.variants if v not in VARIANTS[args.task]]
    if unknown:
        p.error(f"unknown {args.task} variants {unknown}; choose from {sorted(VARIANTS[args.task])}")
    torch.manual_seed(0)
    task = args.task
    base_prune = to_dict(load_section(args.params, "prune", PruneConfig))
    base_distill = to_dict(load_section(args.params, "distill", DistillConfig))
    if args.max_val is not None:
        base_distill[task]["max_val"] = args.max_val or None
    teacher_path = Path(f"artifacts/teacher/{task}.safetensors")
    _, meta, pre = load_task_model(teacher_path, task)
    chars = meta.get("characters")
    other = [o for o in args.pre if not o.startswith(f"{task}.")]
    if other:
        p.error(f"--pre {other[0]!r}: expected {task}.KEY=VALUE (e.g. {task}.min_width=160).")
    pre = with_overrides(pre, task, args.pre)

    dcfg0 = from_dict(DistillConfig, base_distill, "distill")
    torch.set_num_threads(dcfg0.threads)
    data0 = task_data(task, dcfg0, pre, chars)
    teacher_model, _ = load_model(teacher_path)
    t_score = score_student(task, teacher_model, data0.val, pre, chars)
    print(f"teacher ({len(data0.val)} val samples): {_fmt(t_score, task)}", flush=True)
    results: dict[str, Any] = {"teacher": t_score, "variants": {}}
    for name in args.variants:
        desc, prune_over, distill_over = VARIANTS[task][name]
        pcfg = from_dict(PruneConfig, {**base_prune, **prune_over}, "prune")
        model, _ = load_model(teacher_path)
        c0 = time.process_time()
        model, report = make_student(model, task, pcfg, StudentConfig(), characters=chars, measure_onnx=False,
                                     pre=pre)
        prune_min = (time.process_time() - c0) / 60
        before = score_student(task, model, data0.val, pre, chars)
        print(f"{name}: params {report['params_after'] / 1e6:.2f}M, pruned: {_fmt(before, task)}  "
              f"[{prune_min:.1f} CPU min]", flush=True)
        section = {**base_distill[task], **distill_over}
        if args.steps is not None:
            section["steps"] = args.steps
        dcfg = from_dict(DistillConfig, {**base_distill, task: section, "seed": args.seed}, "distill")
        teacher = open_model(dcfg.task(task).teacher, task, threads=dcfg.threads)
        c0 = time.process_time()
        with tempfile.TemporaryDirectory() as tmp:
            data = task_data(task, dcfg, pre, chars)
            rep = distill(task, model, teacher, dcfg, data, Path(tmp) / "run", pre=pre, characters=chars,
                          progress=False)
        distill_min = (time.process_time() - c0) / 60
        after = rep["val"]
        row = {"description": desc, "params": report["params_after"], "params_teacher": report["params_before"],
               "macs": report["macs_after"], "macs_teacher": report["macs_before"], "prune_cpu_min": prune_min,
               "distill_cpu_min": distill_min, "steps": dcfg.task(task).steps, "before": before, "after": after}
        results["variants"][name] = row
        print(f"{name}: {desc}\n  params {row['params'] / 1e6:.2f}M (teacher {row['params_teacher'] / 1e6:.2f}M), "
              f"MACs {row['macs'] / 1e6:.0f}M (teacher {row['macs_teacher'] / 1e6:.0f}M)\n"
              f"  pruned: {_fmt(before, task)}  [{prune_min:.1f} CPU min]\n"
              f"  +{row['steps']} steps: {_fmt(after, task)}  [{distill_min:.1f} CPU min]", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
