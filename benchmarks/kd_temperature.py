"""How much of a softened CTC teacher distribution the top class keeps, per temperature.

    python benchmarks/kd_temperature.py [--teacher ppocrv4_mobile_rec] [--samples 32] [--temps 1 2 4 6]

With thousands of classes (PP-OCRv4: 6,625) the tail of many tiny probabilities dominates once
softened: ``p^(1/T)`` lifts every 1e-8 class to 0.05 at T=6. This prints the mean top-class mass on
character frames and blank frames of the teacher's own output on the synthetic validation crops
(needs ``data/synth``; ``dvc repro data``), the figure behind ``distill.temperature``'s default.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from ocrslim.data.datasets import load_rec_dataset, read_sample_image
from ocrslim.infer.pipeline import open_model
from ocrslim.infer.preprocess import rec_preprocess


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--teacher", default="ppocrv4_mobile_rec")
    p.add_argument("--data", default="data/synth/rec/val")
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--temps", type=float, nargs="+", default=[1, 2, 4, 6])
    args = p.parse_args()
    model = open_model(args.teacher, "rec", threads=2)
    crops = [read_sample_image(s) for s in load_rec_dataset(args.data, args.samples)]
    probs = model.runner(rec_preprocess([c for c in crops if c is not None], model.rec_cfg))
    logp = np.log(np.maximum(probs, 1e-30))
    char = probs.argmax(-1) != 0
    print(f"{args.teacher}: {probs.shape[2]} classes, {int(char.sum())} character frames, "
          f"{int((~char).sum())} blank frames")
    print("| T | top-class mass, character frames | top-class mass, blank frames |")
    print("|---:|---:|---:|")
    for t in args.temps:
        q = np.exp(logp / t)
        q /= q.sum(-1, keepdims=True)
        top = q.max(-1)
        print(f"| {t:g} | {top[char].mean():.3f} | {top[~char].mean():.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
