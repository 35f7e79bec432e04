"""Stage ``qat``: quantization-aware fine-tuning of a student into an MNN INT8 model with learnt scales.

Reads:  params.yaml:qat and distill (the task's data, loss and shared schedule keys; its teacher with
        ``qat.teacher: teacher``, else the FP32 student is the KD target);
        artifacts/student/<task>.safetensors (--model); artifacts/mnn/student_<task>.mnn.json (--float-sidecar: the
        configuration and dictionary the INT8 model carries, as the FP32 one does).
Writes: artifacts/qat/<task>/ (--out): ``model.mnn`` + ``model.mnn.json`` (precision int8, quant method QAT, the
        layers MNN keeps float), or only ``skipped.json`` when ``<task>`` is not in ``qat.tasks``;
        metrics/qat_<task>.json; runs/qat/<task>/ (checkpoints: a killed run resumes).
The quantize stage gates ``model.mnn`` after post-training INT8.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from ocrslim.compress.distill import task_data
from ocrslim.compress.qat_train import qat_finetune
from ocrslim.core.artifacts import preprocessing, read_sidecar, sidecar_path
from ocrslim.core.config import DistillConfig, QatConfig, load_params, load_section
from ocrslim.core.errors import ArtifactError
from ocrslim.core.fsutil import atomic_path, write_json
from ocrslim.infer.pipeline import open_model
from ocrslim.models.io import load_model
from ocrslim.stage import run_main, task_stage_args


def main(argv: list[str] | None = None) -> int:
    args = task_stage_args(__doc__, argv, model="artifacts/student/{task}.safetensors",
                           float_sidecar="artifacts/mnn/student_{task}.mnn.json", out="artifacts/qat/{task}",
                           metrics="metrics/qat_{task}.json", run_dir="runs/qat/{task}")
    params = load_params(args.params)
    qcfg = load_section(params, "qat", QatConfig)
    cfg = load_section(params, "distill", DistillConfig)
    out = Path(args.out)
    if args.task not in qcfg.tasks:
        with atomic_path(out) as tmp:
            tmp.mkdir()
            write_json(tmp / "skipped.json", {"reason": f"{args.task} is not in qat.tasks"})
        # the run directory is a DVC output either way: a note instead of checkpoints
        write_json(Path(args.run_dir) / "skipped.json", {"reason": f"{args.task} is not in qat.tasks"})
        write_json(args.metrics, {"mode": "skipped"})
        print(f"qat {args.task}: skipped ({args.task} is not in qat.tasks {list(qcfg.tasks)})")
        return 0
    student, meta = load_model(args.model)
    float_meta = read_sidecar(Path(args.float_sidecar).with_suffix(""))
    if not float_meta:
        raise ArtifactError(f"{args.float_sidecar}: not found. Run dvc repro convert first.")
    det_cfg, rec_cfg = preprocessing(meta)
    pre = det_cfg if args.task == "det" else rec_cfg
    chars = meta.get("characters")
    # KD target: the FP32 student (what the gate compares the INT8 model with) or the distillation teacher
    spec = args.model if qcfg.teacher == "student" else cfg.teacher(args.task)
    teacher = open_model(spec, args.task, threads=cfg.threads) if spec else None
    data = task_data(args.task, cfg, pre, chars)
    work = Path(args.run_dir) / "export"
    work.mkdir(parents=True, exist_ok=True)
    report = qat_finetune(args.task, student, teacher, cfg, qcfg, data, args.run_dir, work / "model.mnn", pre=pre,
                          characters=chars)
    if report["mnn"] is None:
        return 0  # DDP: rank 0 writes the outputs
    kept = sorted(report["plan"]["kept_float"])
    with atomic_path(out) as tmp:
        tmp.mkdir()
        shutil.copyfile(work / "model.mnn", tmp / "model.mnn")
        write_json(sidecar_path(tmp / "model.mnn"),
                   {**float_meta, "precision": "int8", "quant_method": "QAT", "float_layers": kept,
                    "fixed_input_shape": None})
    val = report["distill"]["val"]
    metrics = {"mode": "qat", "steps": report["distill"]["fit"]["end_step"],
               "quantized_layers": report["plan"]["quantized_layers"], "float_layers": len(kept),
               "int8_ops": report["mnn"]["int8_ops"], "mnn_bytes": report["mnn"]["mnn_bytes"],
               **{f"val_{k}": v for k, v in val.items() if isinstance(v, (int, float))}}
    write_json(args.metrics, metrics)
    print(f"qat {args.task}: {out / 'model.mnn'} ({metrics['int8_ops']} int8 ops, {len(kept)} float layers, "
          f"{metrics['mnn_bytes'] / 2**20:.2f} MB) after {metrics['steps']} steps")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
