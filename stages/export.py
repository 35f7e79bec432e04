"""Stage ``export``: torch → ONNX (dynamic axes, onnxsim), gated on parity with torch.

Reads:  params.yaml:export; artifacts/teacher/<task>.pt.
Writes: artifacts/onnx/<task>.onnx; metrics/export_<task>.json (size, params, max |diff|).
Fails (writing nothing) when max |torch − onnx| over the probe shapes exceeds the tolerance.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ocrslim.config import ExportConfig, load_section  # noqa: E402
from ocrslim.export.steps import export_model  # noqa: E402
from ocrslim.fsutil import write_json  # noqa: E402
from ocrslim.stage import run_main, stage_parser  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__)
    p.add_argument("--task", choices=("det", "rec"), required=True)
    p.add_argument("--model", default=None, help="default: artifacts/teacher/<task>.pt")
    p.add_argument("--out", default=None, help="default: artifacts/onnx/<task>.onnx")
    p.add_argument("--metrics", default=None, help="default: metrics/export_<task>.json")
    args = p.parse_args(argv)
    cfg = load_section(args.params, "export", ExportConfig)
    out = Path(args.out or f"artifacts/onnx/{args.task}.onnx")
    report = export_model(args.model or f"artifacts/teacher/{args.task}.pt", out, args.task, cfg)
    write_json(args.metrics or f"metrics/export_{args.task}.json", report)
    print(f"export {args.task}: {out} {report['onnx_mb']} MB, max |torch-onnx| = {report['max_abs_diff']:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
