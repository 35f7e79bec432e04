"""Stage ``data``: synthetic Chinese/English detection pages and recognition lines.

Reads:  params.yaml:data (sizes, seed, workers, fonts, dictionary); the student dictionary
        (zoo ONNX metadata); the fonts conf/fonts.lock lists (sha256-checked); jieba's and english-words' word lists.
Writes: data/synth/{det,rec}/{train,val,test}/ and data/synth/manifest.json (see ocrslim/data/synthetic.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

from ocrslim.core.config import DataConfig, load_params, load_section
from ocrslim.data.synthetic import generate_synthetic
from ocrslim.stage import run_main, stage_parser


def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__)
    p.add_argument("--out", default=None, help="default: data.out (data/synth)")
    args = p.parse_args(argv)
    cfg = load_section(load_params(args.params), "data", DataConfig)
    out = Path(args.out or cfg.out)
    manifest = generate_synthetic(cfg, out)  # writes out/ atomically, manifest included
    det, rec = manifest["counts"]["det"], manifest["counts"]["rec"]
    cov = manifest["coverage"]["rec/train"]
    print(f"data: {sum(det.values())} det pages, {sum(rec.values())} rec lines -> {out} "
          f"({len(manifest['fonts'])} fonts, rec/train covers {cov['chars_seen']}/{cov['dictionary_size']} chars)")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
