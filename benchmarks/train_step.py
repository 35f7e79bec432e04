"""What a distillation step costs, before and after the step-cost work, measured in one process.

    python benchmarks/train_step.py rec [--steps 20] [--ratio 0.4]
    python benchmarks/train_step.py det [--steps 12]

Runs ``ocrslim.compress.distill.distill`` on the params' ``distill.<task>`` data for ``--steps`` steps in
four configurations and prints steps/s and the ratio against the first:

1. baseline: the teacher run on every batch, NCHW training, rec crops all at the widest width;
2. + width buckets (rec: each batch at one of ``distill.rec.widths``; det: unchanged);
3. + channels_last (NHWC) training;
4. + the teacher cache: a 2N-step run on a few samples per set, timed over its second N steps, where every
   (image, augmentation) pair's teacher targets are cached (what a run of more than one epoch sees from its
   second epoch on): its speed is N / (time of the 2N-step run − time of an N-step run).

The student is the teacher pruned uniformly by ``--ratio`` (no reconstruction: the cost of a step does
not depend on the weights). Needs ``dvc repro split data teacher``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from ocrslim.compress.distill import distill, task_data
from ocrslim.compress.prune import make_student
from ocrslim.core.config import DistillConfig, PruneConfig, StudentConfig, from_dict, load_section, to_dict
from ocrslim.infer.pipeline import open_model
from ocrslim.models.io import load_task_model


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("task", choices=["det", "rec"])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--ratio", type=float, default=0.4)
    p.add_argument("--params", default="params.yaml")
    args = p.parse_args()
    task = args.task
    base = to_dict(load_section(args.params, "distill", DistillConfig))
    model0, meta, pre = load_task_model(f"artifacts/teacher/{task}.safetensors", task)
    chars = meta.get("characters")
    prune = PruneConfig(ratio=args.ratio, rec_ratio=args.ratio, reconstruct=False)
    student, _ = make_student(model0, task, prune, StudentConfig(), characters=chars, measure_onnx=False, pre=pre)
    state = {k: v.clone() for k, v in student.state_dict().items()}
    section = {**base[task], "steps": args.steps, "max_val": 1}
    widest = [max(section["widths"])] if task == "rec" else None
    configs: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        ("baseline (teacher every step, NCHW, one width)",
         {"cache_teacher": False, **({"widths": widest} if widest else {})}, {"channels_last": False}),
        ("+ width buckets", {"cache_teacher": False}, {"channels_last": False}),
        ("+ channels_last", {"cache_teacher": False}, {"channels_last": True}),
        ("+ teacher cache (second pass)", {"cache_teacher": True}, {"channels_last": True}),
    ]
    torch.set_num_threads(base["threads"])
    print(f"{task}: {args.steps} steps per configuration, batch {section['batch_size']}, {base['threads']} threads")
    baseline = None
    for name, over, shared in configs:
        cfg = from_dict(DistillConfig, {**base, **shared, task: {**section, **over}}, "distill")
        teacher = open_model(cfg.task(task).teacher, task, threads=cfg.threads)
        cached = cfg.task(task).cache_teacher
        # the cached configuration trains on a few samples per set, so that the second half of a 2N-step run
        # revisits (image, augmentation) pairs whose targets the first half cached; its speed is that half's
        data = task_data(task, cfg, pre, chars, limit=max(2, cfg.task(task).batch_size // 2) if cached else None)
        times, reports = [], []
        for steps in ((args.steps, 2 * args.steps) if cached else (args.steps,)):
            run_cfg = from_dict(DistillConfig, {**to_dict(cfg), task: {**to_dict(cfg.task(task)), "steps": steps}},
                                "distill")
            student.load_state_dict(state)
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                reports.append(distill(task, student, teacher, run_cfg, data, Path(tmp) / "run", pre=pre,
                                       characters=chars, progress=False))
                times.append(time.perf_counter() - t0)
        if cached:
            steps_s = args.steps / (times[1] - times[0])
        else:
            steps_s = reports[0]["timing"]["steps_per_s"]
        baseline = baseline or steps_s
        print(f"  {name:<48} {steps_s:6.3f} steps/s  x{steps_s / baseline:.2f}  "
              f"(teacher forwards/reused: {reports[-1].get('teacher_cache')})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
