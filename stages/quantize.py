"""Stage ``quantize``: MNN INT8 gated on accuracy vs MNN FP32, with layer repair and fallbacks.

Reads:  params.yaml:quantize; artifacts/onnx/<task>.onnx, artifacts/mnn/<task>.mnn (+ .mnn.json),
        calibration/<task>.quant.json and its images; the gate sets (quantize.gate_<task>); det: the FP32
        recogniser artifacts/mnn/student_rec.mnn (--rec-mnn) that reads the boxes for the gate's e2e F1;
        artifacts/qat/<task>/model.mnn (--qat), the qat stage's INT8 model, when it made one.
Writes: artifacts/quant/<task>.mnn + <task>.mnn.json (precision, float layers, quant method, target);
        metrics/quantize_<task>.json (every attempt with its drops and their intervals; the shipped file's sha256).
"""

from __future__ import annotations

import sys
from pathlib import Path

from ocrslim.core.config import QuantizeConfig, load_section
from ocrslim.core.fsutil import write_json
from ocrslim.quantize import quantize_metrics, quantize_task
from ocrslim.stage import run_main, task_stage_args


def main(argv: list[str] | None = None) -> int:
    args = task_stage_args(__doc__, argv, onnx="artifacts/onnx/{task}.onnx", float_mnn="artifacts/mnn/{task}.mnn",
                           calib="calibration/{task}.quant.json", out="artifacts/quant/{task}.mnn",
                           metrics_out="metrics/quantize_{task}.json", rec_mnn="artifacts/mnn/student_rec.mnn",
                           qat="artifacts/qat/{task}/model.mnn")
    cfg = load_section(args.params, "quantize", QuantizeConfig)
    t = args.task
    out = Path(args.out)
    qat = Path(args.qat)
    report = quantize_task(t, args.onnx, args.float_mnn, args.calib, out, cfg,
                           rec_mnn=args.rec_mnn if t == "det" else None, qat_mnn=qat if qat.is_file() else None)
    write_json(args.metrics_out, quantize_metrics(report))
    drops = ", ".join(f"{s}/{m} {d['drop']:+.2f} (<= {'?' if d['hi'] is None else format(d['hi'], '+.2f')})"
                      for s, ms in report["drop"].items() for m, d in ms.items() if d.get("drop") is not None)
    print(f"quantize {t}: {out} {report['precision']} ({report['method']}) {report['size_mb']} MB "
          f"(fp32 {report['fp32_size_mb']} MB), drop in points [95% upper bound]: {drops}, {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
