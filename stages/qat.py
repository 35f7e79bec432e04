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

import sys
from pathlib import Path

from ocrslim.compress.qat_train import qat_stage
from ocrslim.core.config import DistillConfig, QatConfig, load_params, load_section
from ocrslim.core.fsutil import write_json
from ocrslim.stage import run_main, task_stage_args


def main(argv: list[str] | None = None) -> int:
    args = task_stage_args(__doc__, argv, model="artifacts/student/{task}.safetensors",
                           float_sidecar="artifacts/mnn/student_{task}.mnn.json", out="artifacts/qat/{task}",
                           metrics="metrics/qat_{task}.json", run_dir="runs/qat/{task}")
    params = load_params(args.params)
    qcfg = load_section(params, "qat", QatConfig)
    metrics = qat_stage(args.task, args.model, args.float_sidecar, args.out, args.run_dir, qcfg,
                        load_section(params, "distill", DistillConfig))
    if metrics is None:
        return 0  # DDP: rank 0 writes the outputs
    write_json(args.metrics, metrics)
    if metrics["mode"] == "skipped":
        print(f"qat {args.task}: skipped ({args.task} is not in qat.tasks {list(qcfg.tasks)})")
    else:
        print(f"qat {args.task}: {Path(args.out) / 'model.mnn'} ({metrics['int8_ops']} int8 ops, "
              f"{metrics['float_layers']} float layers, {metrics['mnn_bytes'] / 2**20:.2f} MB) after "
              f"{metrics['steps']} steps")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
