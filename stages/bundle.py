"""Stage ``bundle``: the deployable directory artifacts/bundle/ (det.mnn, rec.mnn, dict.txt, manifest.json).

Reads:  artifacts/quant/{det,rec}.mnn and their .mnn.json sidecars (precision, float layers,
        pre/post-processing, dictionary); metrics/quantize_{det,rec}.json (the gate results).
Writes: artifacts/bundle/ atomically. ``ocrslim read --bundle artifacts/bundle IMAGE`` runs it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ocrslim.export.bundle import build_bundle
from ocrslim.stage import run_main, stage_parser


def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__)
    p.add_argument("--det", default="artifacts/quant/det.mnn")
    p.add_argument("--rec", default="artifacts/quant/rec.mnn")
    p.add_argument("--reports", nargs=2, default=["metrics/quantize_det.json", "metrics/quantize_rec.json"],
                   metavar=("DET_JSON", "REC_JSON"))
    p.add_argument("--out", default="artifacts/bundle")
    args = p.parse_args(argv)
    reports = {t: json.loads(Path(f).read_text(encoding="utf-8"))
               for t, f in zip(("det", "rec"), args.reports) if Path(f).is_file()}
    manifest = build_bundle(args.det, args.rec, args.out, reports)
    for task in ("det", "rec"):
        e = manifest[task]
        print(f"bundle {task}: {args.out}/{e['file']} {e['precision']}, {e['size_bytes'] / 2**20:.2f} MB, "
              f"{len(e.get('float_layers', []))} float layer(s)")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
