"""Stage ``data``: synthetic Chinese/English detection pages and recognition lines, and the real training sets.

Reads:  params.yaml:data (sizes, seed, workers, fonts, dictionary, extra_train); the student dictionary
        (zoo ONNX metadata); system fonts under /usr/share/fonts; jieba's and english-words' word lists.
Writes: data/synth/{det,rec}/{train,val,test}/ and data/synth/manifest.json (see ocrslim/data/synthetic.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ocrslim.config import DataConfig, load_params, load_section  # noqa: E402
from ocrslim.data.synthetic import generate_synthetic  # noqa: E402
from ocrslim.stage import run_main, stage_parser  # noqa: E402


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
    for entry in manifest["extra_train"]:
        for task in ("det", "rec"):
            if task in entry:
                print(entry[task]["summary"])
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
