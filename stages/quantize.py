"""Stage ``quantize``: MNN INT8 gated on accuracy vs MNN FP32, with layer repair and fallbacks.

Reads:  params.yaml:quantize; artifacts/onnx/<task>.onnx, artifacts/mnn/<task>.mnn (+ .mnn.json),
        calibration/<task>.quant.json and its images; the gate sets (quantize.gate_<task>).
Writes: artifacts/quant/<task>.mnn + <task>.mnn.json (precision, float layers, quant method);
        metrics/quantize_<task>.json.
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
                           metrics_out="metrics/quantize_{task}.json")
    cfg = load_section(args.params, "quantize", QuantizeConfig)
    t = args.task
    out = Path(args.out)
    report = quantize_task(
        t, args.onnx, args.float_mnn, args.calib, out, cfg,
    )
    write_json(args.metrics_out, quantize_metrics(report))
    drops = ", ".join(f"{k} {v:+.2f}" for k, v in report["drop"].items() if v is not None)
    print(f"quantize {t}: {out} {report['precision']} {report['size_mb']} MB (fp32 {report['fp32_size_mb']} MB), "
          f"drop in points: {drops}, {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
