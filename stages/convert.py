"""Stage ``convert``: ONNX → MNN FP32 with MNN's converter, gated on parity with ONNX Runtime.

Reads:  params.yaml:convert, params.yaml:export (probe shapes); artifacts/onnx/<task>.onnx.
Writes: artifacts/mnn/<task>.mnn + <task>.mnn.json (dictionary, pre/post-processing);
        metrics/convert_<task>.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ocrslim.config import ConvertConfig, ExportConfig, load_params, load_section  # noqa: E402
from ocrslim.export.steps import convert_model  # noqa: E402
from ocrslim.fsutil import write_json  # noqa: E402
from ocrslim.stage import run_main, stage_parser  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__)
    p.add_argument("--task", choices=("det", "rec"), required=True)
    p.add_argument("--model", default=None, help="default: artifacts/onnx/<task>.onnx")
    p.add_argument("--out", default=None, help="default: artifacts/mnn/<task>.mnn")
    p.add_argument("--metrics", default=None, help="default: metrics/convert_<task>.json")
    args = p.parse_args(argv)
    params = load_params(args.params)
    cfg = load_section(params, "convert", ConvertConfig)
    out = Path(args.out or f"artifacts/mnn/{args.task}.mnn")
    report = convert_model(args.model or f"artifacts/onnx/{args.task}.onnx", out, args.task, cfg,
                           load_section(params, "export", ExportConfig))
    write_json(args.metrics or f"metrics/convert_{args.task}.json", report)
    print(f"convert {args.task}: {out} {report['mnn_mb']} MB, max |onnx-mnn| = {report['max_abs_diff']:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
