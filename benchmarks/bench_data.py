"""Synthetic data throughput: det pages and rec lines per second with 1 and 2 workers, and the ratio.

    python benchmarks/bench_data.py [--pages 24] [--lines 200]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

from ocrslim.core.config import DataConfig
from ocrslim.data.synthetic import generate_synthetic, make_context


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--pages", type=int, default=24)
    p.add_argument("--lines", type=int, default=200)
    args = p.parse_args()
    zero = {f"{t}_{s}": 0 for t in ("det", "rec") for s in ("train", "val", "test")}
    ctx = make_context(DataConfig())
    for what, key, n in (("pages", "det_train", args.pages), ("lines", "rec_train", args.lines)):
        rates = {}
        for workers in (1, 2):
            cfg = dataclasses.replace(DataConfig(), **{**zero, key: n}, workers=workers)
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                generate_synthetic(cfg, Path(tmp) / "synth", dataclasses.replace(ctx, cfg=cfg))
                rates[workers] = n / (time.perf_counter() - t0)
        ratio = rates[2] / rates[1]
        print(f"{what}: 1 worker {rates[1]:.1f} img/s, 2 workers {rates[2]:.1f} img/s, ratio {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
