"""Stage ``targets``: export targets beside the MNN bundle, from its manifest, each checked on real pages.

Reads:  params.yaml:targets (parity pages, gate), params.yaml:export (probe shapes and tolerances of the
        eager-vs-traced gate); artifacts/bundle (manifest: pre/post-processing, dictionary; the reference output),
        artifacts/onnx/student_{det,rec}.onnx, artifacts/student/{det,rec}.safetensors.
Writes: artifacts/bundle_onnx/ (det.onnx, rec.onnx, dict.txt, manifest.json: ONNX Runtime, the x86/server
        target; ``ocrslim read --bundle artifacts/bundle_onnx``), artifacts/torchscript/ (det.pt, rec.pt traced
        from the native students, dict.txt, manifest.json), metrics/targets.json (parity against the MNN bundle:
        line and text agreement, box IoU, max |diff| of det maps and rec probabilities).
Each directory is written atomically, and not at all when its parity gate fails.
"""

from __future__ import annotations

import sys

from ocrslim.core.config import ExportConfig, TargetsConfig, load_params, load_section
from ocrslim.core.fsutil import write_json
from ocrslim.data.datasets import load_det_dataset
from ocrslim.export.targets import build_onnx_bundle, build_torchscript
from ocrslim.stage import run_main, stage_parser


def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__)
    p.add_argument("--bundle", default="artifacts/bundle")
    p.add_argument("--onnx", nargs=2, default=["artifacts/onnx/student_det.onnx", "artifacts/onnx/student_rec.onnx"],
                   metavar=("DET", "REC"))
    p.add_argument("--student", nargs=2, metavar=("DET", "REC"),
                   default=["artifacts/student/det.safetensors", "artifacts/student/rec.safetensors"])
    p.add_argument("--out-onnx", default="artifacts/bundle_onnx")
    p.add_argument("--out-torchscript", default="artifacts/torchscript")
    p.add_argument("--metrics", default="metrics/targets.json")
    args = p.parse_args(argv)
    params = load_params(args.params)
    cfg = load_section(params, "targets", TargetsConfig)
    pages = [s.image for path in cfg.pages for s in load_det_dataset(path, cfg.limit)]
    (det_onnx, rec_onnx), (det_student, rec_student) = args.onnx, args.student
    onnx = build_onnx_bundle(args.bundle, det_onnx, rec_onnx, args.out_onnx, pages, cfg)
    ts = build_torchscript(args.bundle, det_student, rec_student, args.out_torchscript, pages, cfg,
                           load_section(params, "export", ExportConfig))
    report = {"onnx": onnx["parity"], "torchscript": {**ts["parity"], "trace_max_abs_diff": ts["trace_max_abs_diff"]}}
    write_json(args.metrics, report)
    for name, r in report.items():
        print(f"targets {name}: {r['lines_matched']}/{r['lines_reference']} lines matched "
              f"(agreement {r['line_agreement']:.3f}), text agreement {r.get('text_agreement', '–')}, "
              f"max |det map diff| {r['det_map_max_abs_diff']:.2e}, max |rec diff| {r['rec_max_abs_diff']:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
