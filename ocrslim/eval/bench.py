"""Measure, don't guess: model file size, one model's latency on fixed tensors (warm-up, median/p90) and peak memory.

The bench stage times whole pages instead (:mod:`ocrslim.eval.pages`); these per-model figures serve
``benchmarks/bench_models.py``. Latency is measured in-process (the caller compares variants measured in the
same run, as ratios); peak RSS is measured in a fresh child process so one model's allocations do not hide
another's. These are host-CPU figures: phone ARM cores with int8 dot-product instructions behave
differently (see the README for benchmarking on a device with MNN's own tool).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def file_mb(path: str | Path) -> float:
    """Size of a model file in MiB."""
    return Path(path).stat().st_size / 2**20


def latency_ms(fn: Callable[[], Any], runs: int = 20, warmup: int = 3) -> dict[str, float]:
    """Median, p90, min and mean wall time of ``fn()`` in milliseconds after ``warmup`` calls.

    >>> stats = latency_ms(lambda: sum(range(1000)), runs=5, warmup=1)
    >>> sorted(stats)
    ['mean', 'min', 'p50', 'p90', 'runs']
    """
    if runs < 1:
        raise ValueError("runs must be >= 1")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    arr = np.asarray(times)
    return {
        "p50": float(np.median(arr)),
        "p90": float(np.percentile(arr, 90)),
        "min": float(arr.min()),
        "mean": float(arr.mean()),
        "runs": float(runs),
    }


def peak_rss_mb(spec: str, task: str, shape: Sequence[int], backend: str | None = None, threads: int = 1,
                runs: int = 3) -> dict[str, float]:
    """Peak resident memory (MiB) of a fresh process that loads ``spec`` and runs it ``runs`` times.

    ``import_rss_mb`` is the peak before the model is opened (Python + numpy + ocrslim imports),
    so ``peak_rss_mb - import_rss_mb`` approximates what the model and its inference add.
    """
    arg = json.dumps([spec, task, backend, threads, list(shape), runs])
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run([sys.executable, "-m", "ocrslim.eval.rss_child", arg], capture_output=True, text=True,
                         env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"peak-RSS child failed for {spec}: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
