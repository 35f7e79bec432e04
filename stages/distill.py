"""Stage ``distill``: recover a pruned student by KD from a frozen teacher plus ground truth (or fine-tune).

Reads:  params.yaml:distill.<task> and the shared distill keys (and the student's preprocessing from its meta);
        artifacts/pruned/<task>.safetensors (or --model); the teacher ``distill.<task>.teacher`` (zoo name run by
        ONNX Runtime, or a .safetensors/.onnx/.mnn file); ``distill.<task>.train_data`` / ``val_data``;
        artifacts/teacher/<task>.safetensors (--hint-teacher, when ``distill.<task>.hint_weight`` > 0).
Writes: artifacts/student/<task>.safetensors (weights + architecture spec; the student's metadata plus a
        ``distill`` report);
        metrics/distill_<task>.json (validation metrics, final loss, data counts);
        runs/distill/<task>/ (ckpt/last.safetensors and dvclive/; kept between runs so a killed run resumes).
``distill.<task>.alpha: 0`` fine-tunes on the labels only and opens no teacher. A student the prune stage left
unpruned (its task's ratio 0) is copied without training (``mode: skipped`` in the metrics). Launch with
``torchrun --nproc_per_node N stages/distill.py --task rec`` for DDP.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ocrslim.compress.distill import distill, distill_log, distill_metrics, model_record, task_data
from ocrslim.core.artifacts import preprocessing
from ocrslim.core.config import DistillConfig, load_section
from ocrslim.core.errors import ArtifactError
from ocrslim.core.fsutil import write_json, write_text
from ocrslim.infer.pipeline import open_model
from ocrslim.models.io import load_model, save_model
from ocrslim.stage import run_main, task_stage_args


def main(argv: list[str] | None = None) -> int:
    args = task_stage_args(__doc__, argv, model="artifacts/pruned/{task}.safetensors",
                           out="artifacts/student/{task}.safetensors", metrics="metrics/distill_{task}.json",
                           run_dir="runs/distill/{task}", hint_teacher="artifacts/teacher/{task}.safetensors")
    cfg = load_section(args.params, "distill", DistillConfig)
    src = Path(args.model)
    student, meta = load_model(src)
    if meta.get("task") not in (None, args.task):
        raise ArtifactError(f"{src}: is a {meta['task']} model, not {args.task}. Check dvc.yaml's distill stage.")
    out = Path(args.out)
    prune = meta.get("prune") or {}
    if prune and prune.get("config", {}).get("init") != "scratch" \
            and prune.get("params_after") == prune.get("params_before"):
        # nothing was pruned for this task: the student is the teacher, nothing to recover.
        save_model(student, out, {**meta, "distill": {"mode": "skipped", "reason": "not pruned", "source": str(src)}})
        write_json(args.metrics, {"mode": "skipped", "steps": 0})
        # the run directory's DVC outputs exist either way: a note instead of checkpoints, an empty curve
        run_dir = Path(args.run_dir)
        write_json(run_dir / "ckpt" / "skipped.json", {"reason": "not pruned (ratio 0)", "source": str(src)})
        write_text(run_dir / "dvclive" / "plots" / "metrics" / "train" / "loss.tsv", "step\tloss\n")
        print(f"distill {args.task}: {src} was not pruned (ratio 0); copied to {out} without training")
        return 0
    det_cfg, rec_cfg = preprocessing(meta)
    pre = det_cfg if args.task == "det" else rec_cfg
    chars = meta.get("characters")
    if args.task == "rec" and not chars:
        raise ArtifactError(f"{src}: no 'characters' in its meta. Re-run the teacher and prune stages.")
    spec = cfg.teacher(args.task)
    teacher = open_model(spec, args.task, threads=cfg.threads) if spec else None
    data = task_data(args.task, cfg, pre, chars)
    task_cfg = cfg.task(args.task)
    hint_teacher = load_model(args.hint_teacher)[0] if task_cfg.hint_weight > 0 else None
    report = distill(args.task, student, teacher, cfg, data, args.run_dir, pre=pre, characters=chars,
                     hint_teacher=hint_teacher)
    if report["fit"]["rank"] != 0:
        return 0  # DDP: rank 0 (the one that validated) writes the outputs
    if task_cfg.steps == 0:  # no optimizer step, so no checkpoint: the DVC output gets a note instead
        write_json(Path(args.run_dir) / "ckpt" / "skipped.json", {"reason": f"distill.{args.task}.steps is 0"})
    save_model(student, out, {**meta, "distill": {**model_record(report), "source": str(src)}})
    metrics = distill_metrics(report)
    write_json(args.metrics, metrics)
    timing = distill_log(report)
    write_json(Path("logs") / f"distill_{args.task}.json", timing)  # untracked: times, losses, cache hits
    val = {k: v for k, v in metrics.items() if k.startswith("val_") and isinstance(v, float) and "/" not in k}
    print(f"distill {args.task} ({report['mode']}): {out} after {metrics['steps']} steps "
          f"({timing.get('steps_per_s')} steps/s, {timing.get('cpu_seconds', 0) / 60:.1f} CPU min), "
          + ", ".join(f"{k} {v:.4f}" for k, v in val.items()))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
