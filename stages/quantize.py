"""Stage ``quantize``: MNN INT8 gated on accuracy vs MNN FP32, with layer repair and fallbacks.

Reads:  params.yaml:quantize; artifacts/onnx/<task>.onnx, artifacts/mnn/<task>.mnn (+ .mnn.json),
        calibration/<task>.quant.json and its images; the gate sets (quantize.gate_<task>).
Writes: artifacts/quant/<task>.mnn + <task>.mnn.json (precision, float layers, quant method);
        metrics/quantize_<task>.json.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ocrslim.config import QuantizeConfig, load_params, load_section  # noqa: E402
from ocrslim.fsutil import write_json  # noqa: E402
from ocrslim.quantize import quantize_task  # noqa: E402
from ocrslim.stage import run_main, stage_parser  # noqa: E402


def flat_metrics(report: dict[str, Any]) -> dict[str, Any]:
    """The metrics file: flat keys first (``shipped_<set>_<metric>`` is the chosen model's number, of
    the ``precision`` it has; ``float_layers`` counts the ops it keeps float), then the attempts and repairs."""
    metric = report["metric"]
    flat: dict[str, Any] = {
        "precision": report["precision"],
        "method": report["method"],
        "size_mb": report["size_mb"],
        "fp32_size_mb": report["fp32_size_mb"],
        "float_layers": sum(len(layer["ops"]) for layer in report["float_layers"]),
        "fixed_input_shape": report["fixed_input_shape"],
    }
    for name in report["fp32"]:
        flat[f"fp32_{name}_{metric}"] = report["fp32"][name]
        flat[f"shipped_{name}_{metric}"] = report["final"].get(name)
        flat[f"drop_{name}"] = report["drop"].get(name)
    flat["max_drop"] = report["max_drop"]
    # no wall times: the metrics file stays identical when the same inputs are quantized again
    flat["attempts"] = [{k: v for k, v in a.items() if k != "seconds"} for a in report["attempts"]]
    flat["repair"] = report["repair"]  # every group a repair kept float (ops counted), also when INT8 lost
    return flat


def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__)
    p.add_argument("--task", choices=("det", "rec"), required=True)
    p.add_argument("--onnx", default=None, help="default: artifacts/onnx/<task>.onnx")
    p.add_argument("--float-mnn", default=None, help="default: artifacts/mnn/<task>.mnn")
    p.add_argument("--calib", default=None, help="default: calibration/<task>.quant.json")
    p.add_argument("--out", default=None, help="default: artifacts/quant/<task>.mnn")
    p.add_argument("--metrics-out", default=None, help="default: metrics/quantize_<task>.json")
    args = p.parse_args(argv)
    cfg = load_section(load_params(args.params), "quantize", QuantizeConfig)
    t = args.task
    out = Path(args.out or f"artifacts/quant/{t}.mnn")
    report = quantize_task(
        t, args.onnx or f"artifacts/onnx/{t}.onnx", args.float_mnn or f"artifacts/mnn/{t}.mnn",
        args.calib or f"calibration/{t}.quant.json", out, cfg,
    )
    write_json(args.metrics_out or f"metrics/quantize_{t}.json", flat_metrics(report))
    drops = ", ".join(f"{k} {v:+.2f}" for k, v in report["drop"].items() if v is not None)
    print(f"quantize {t}: {out} {report['precision']} {report['size_mb']} MB (fp32 {report['fp32_size_mb']} MB), "
          f"drop in points: {drops}, {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
