"""Stage ``quantize``: MNN INT8 gated on accuracy vs MNN FP32, with layer repair and fallbacks.

Reads:  params.yaml:quantize; artifacts/onnx/<task>.onnx, artifacts/mnn/<task>.mnn (+ .mnn.json),
        calibration/<task>.quant.json and its images; the gate sets (quantize.gate_<task>).
Writes: artifacts/quant/<task>.mnn + <task>.mnn.json (precision, float layers, quant method);
        metrics/quantize_<task>.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ocrslim.config import QuantizeConfig, load_section  # noqa: E402
from ocrslim.fsutil import write_json  # noqa: E402
from ocrslim.quantize import quantize_metrics, quantize_task  # noqa: E402
from ocrslim.stage import run_main, stage_parser  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__)
    p.add_argument("--task", choices=("det", "rec"), required=True)
    p.add_argument("--onnx", default=None, help="default: artifacts/onnx/<task>.onnx")
    p.add_argument("--float-mnn", default=None, help="default: artifacts/mnn/<task>.mnn")
    p.add_argument("--calib", default=None, help="default: calibration/<task>.quant.json")
    p.add_argument("--out", default=None, help="default: artifacts/quant/<task>.mnn")
    p.add_argument("--metrics-out", default=None, help="default: metrics/quantize_<task>.json")
    args = p.parse_args(argv)
    cfg = load_section(args.params, "quantize", QuantizeConfig)
    t = args.task
    out = Path(args.out or f"artifacts/quant/{t}.mnn")
    report = quantize_task(
        t, args.onnx or f"artifacts/onnx/{t}.onnx", args.float_mnn or f"artifacts/mnn/{t}.mnn",
        args.calib or f"calibration/{t}.quant.json", out, cfg,
    )
    write_json(args.metrics_out or f"metrics/quantize_{t}.json", quantize_metrics(report))
    drops = ", ".join(f"{k} {v:+.2f}" for k, v in report["drop"].items() if v is not None)
    print(f"quantize {t}: {out} {report['precision']} {report['size_mb']} MB (fp32 {report['fp32_size_mb']} MB), "
          f"drop in points: {drops}, {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
