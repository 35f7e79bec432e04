"""Stage ``calibrate``: the INT8 calibration images and mnnquant configs for det and rec.

Reads:  params.yaml:calibrate, det (mean/std, limit_side_len), rec (mean/std, height, min_width, min_side);
        the training pool data/synth/{det,rec}/train (or calibrate.source, your own folder with det/ and rec/).
Writes: calibration/{det,rec}/, calibration/manifest.json, calibration/{det,rec}.quant.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ocrslim.core.config import CalibrateConfig, DetConfig, RecConfig, load_params, load_section
from ocrslim.data.calibration import build_calibration
from ocrslim.stage import run_main, stage_parser


def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__)
    p.add_argument("--out", default=None, help="default: calibrate.out (calibration)")
    args = p.parse_args(argv)
    params = load_params(args.params)
    cfg = load_section(params, "calibrate", CalibrateConfig)
    out = Path(args.out or cfg.out)
    manifest = build_calibration(cfg, load_section(params, "det", DetConfig), load_section(params, "rec", RecConfig),
                                 out)  # writes out/ atomically
    for task, info in manifest["tasks"].items():
        skipped = f", {info['unreadable_skipped']} unreadable skipped" if info["unreadable_skipped"] else ""
        print(f"calibrate {task}: {info['count']} of {info['pool_size']} images, "
              f"{len(info['buckets'])} buckets{skipped} -> {out / task}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
