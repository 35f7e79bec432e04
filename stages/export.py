"""Stage ``export``: torch → ONNX (dynamic axes, onnxsim), gated on parity with torch.

Reads:  params.yaml:export, params.yaml:det|rec (the post-processing the ONNX file carries from here on: DB
        thresholds, unclip, rec batch size, drop score); artifacts/teacher/<task>.safetensors.
Writes: artifacts/onnx/<task>.onnx (with its metadata: task, pre/post-processing, dictionary);
        metrics/export_<task>.json (size, params, max |diff|).
Fails (writing nothing) when max |torch − onnx| over the probe shapes exceeds the tolerance.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ocrslim.core.config import DetConfig, ExportConfig, RecConfig, load_params, load_section
from ocrslim.core.fsutil import write_json
from ocrslim.export.steps import export_model
from ocrslim.stage import run_main, task_stage_args


def main(argv: list[str] | None = None) -> int:
    args = task_stage_args(__doc__, argv, model="artifacts/teacher/{task}.safetensors",
                           out="artifacts/onnx/{task}.onnx", metrics="metrics/export_{task}.json")
    params = load_params(args.params)
    cfg = load_section(params, "export", ExportConfig)
    post = load_section(params, args.task, DetConfig if args.task == "det" else RecConfig)
    out = Path(args.out)
    report = export_model(args.model, out, args.task, cfg, post)
    write_json(args.metrics, report)
    print(f"export {args.task}: {out} {report['onnx_mb']} MB, max |torch-onnx| = {report['max_abs_diff']:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
