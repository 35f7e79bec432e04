"""Stage ``split``: validation splits carved from the user's training sets (nothing copied).

Reads:  params.yaml:split (the training sets, val_fraction, seed), data.dictionary (for the coverage report);
        the sets themselves, by path (../shared/data/sroie_train, ../shared/data/ic15_words_train).
Writes: data/splits/<set>/<task>/{train,val}.split.json and data/splits/manifest.json (counts, coverage).
"""

from __future__ import annotations

import sys

from ocrslim.core.config import DataConfig, SplitConfig, load_params, load_section
from ocrslim.data.splits import make_splits
from ocrslim.data.text import load_charset
from ocrslim.stage import run_main, stage_parser


def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__)
    p.add_argument("--out", default=None, help="default: split.out (data/splits)")
    args = p.parse_args(argv)
    params = load_params(args.params)
    cfg = load_section(params, "split", SplitConfig)
    manifest = make_splits(cfg, load_charset(load_section(params, "data", DataConfig).dictionary), args.out)
    for name, counts in manifest["sets"].items():
        print(f"split {name}: {counts['train']} train / {counts['val']} val ({counts['val_groups']} of "
              f"{counts['groups']} groups held out)")
    for entry in manifest["coverage"]:
        for task in ("det", "rec"):
            if task in entry:
                print(entry[task]["summary"])
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
