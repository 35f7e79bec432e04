"""Stage ``convert``: ONNX → MNN FP32 with MNN's converter, gated on parity with ONNX Runtime.

Reads:  params.yaml:convert, params.yaml:export (probe shapes); artifacts/onnx/<task>.onnx.
Writes: artifacts/mnn/<task>.mnn + <task>.mnn.json (dictionary, pre/post-processing);
        metrics/convert_<task>.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ocrslim.core.config import ConvertConfig, ExportConfig, load_params, load_section
from ocrslim.core.fsutil import write_json
from ocrslim.export.steps import convert_model
from ocrslim.stage import run_main, task_stage_args


def main(argv: list[str] | None = None) -> int:
    args = task_stage_args(__doc__, argv, model="artifacts/onnx/{task}.onnx", out="artifacts/mnn/{task}.mnn",
                           metrics="metrics/convert_{task}.json")
    params = load_params(args.params)
    cfg = load_section(params, "convert", ConvertConfig)
    out = Path(args.out)
    report = convert_model(args.model, out, args.task, cfg,
                           load_section(params, "export", ExportConfig))
    write_json(args.metrics, report)
    print(f"convert {args.task}: {out} {report['mnn_mb']} MB, max |onnx-mnn| = {report['max_abs_diff']:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
