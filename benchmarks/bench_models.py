"""Size, latency and peak memory of model variants on this host's CPU, as ratios to the teacher.

    python benchmarks/bench_models.py [--runs 20] [--threads 1 2]

Variants (measured in one run, same inputs): the default teacher (``TeacherConfig``, PP-OCRv4 mobile) in
PyTorch (native), ONNX Runtime and MNN FP32, plus whatever `dvc repro` has built (artifacts/onnx,
artifacts/mnn, artifacts/bundle). Inputs: det 1×3×L×L with L = ``det.limit_side_len``, rec one PP-OCR batch of
``rec.batch_size`` × 3 × ``rec.height`` × ``rec.min_width`` (the DetConfig / RecConfig defaults). Latency: median
and p90 over --runs calls after 3 warm-up calls; peak RSS: a fresh child process per variant that
imports ocrslim (torch included), opens the model and runs it 3 times — shown with what the model
and its inference add over the imports.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ocrslim.core.config import DetConfig, RecConfig, TeacherConfig
from ocrslim.eval.bench import file_mb, latency_ms, peak_rss_mb
from ocrslim.export.mnn import open_model_on, zoo_as_mnn
from ocrslim.models.registry import teacher_onnx_path

REPO = Path(__file__).resolve().parents[1]

_DET, _REC = DetConfig(), RecConfig()
SHAPES = {"det": (1, 3, _DET.limit_side_len, _DET.limit_side_len),
          "rec": (_REC.batch_size, 3, _REC.height, _REC.min_width)}


def variants(task: str) -> list[tuple[str, str, str | None, Path | None]]:
    """(label, spec, backend, file for size) for every variant available."""
    zoo = getattr(TeacherConfig(), task)
    out: list[tuple[str, str, str | None, Path | None]] = [
        ("teacher · torch", zoo, "torch", None),
        ("teacher · onnxruntime", zoo, "onnx", teacher_onnx_path(zoo)),
        ("teacher · mnn fp32", zoo, "mnn", zoo_as_mnn(zoo)),  # the cached FP32 conversion the CLI uses
    ]
    for label, path in (("dag teacher · onnx", REPO / f"artifacts/onnx/teacher_{task}.onnx"),
                        ("dag teacher · mnn fp32", REPO / f"artifacts/mnn/teacher_{task}.mnn"),
                        ("student · onnx", REPO / f"artifacts/onnx/student_{task}.onnx"),
                        ("student · mnn fp32", REPO / f"artifacts/mnn/student_{task}.mnn"),
                        ("bundle · mnn", REPO / f"artifacts/bundle/{task}.mnn")):
        if path.is_file():
            out.append((label, str(path), None, path))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--no-rss", action="store_true", help="skip the peak-memory child processes")
    args = p.parse_args()
    for task in ("det", "rec"):
        x = np.random.default_rng(0).uniform(-1, 1, size=SHAPES[task]).astype(np.float32)
        cols = " | ".join(f"p50/p90 ms ({t} thr)" for t in args.threads)
        print(f"\n### {task} {'x'.join(map(str, SHAPES[task]))}\n")
        print(f"| variant | size MB | {cols} | speed vs teacher torch ({args.threads[-1]} thr) "
              "| peak RSS MB (+ over imports) |")
        print("|---|---:|" + "---:|" * len(args.threads) + "---:|---:|")
        base = None
        for label, spec, backend, sized in variants(task):
            cells, last = [], None
            for t in args.threads:
                runner = open_model_on(spec, task, backend, threads=t).runner
                stats = latency_ms(lambda r=runner, x=x: r(x), runs=args.runs)
                cells.append(f"{stats['p50']:.1f} / {stats['p90']:.1f}")
                last = stats["p50"]
            base = base or last
            size = f"{file_mb(sized):.2f}" if sized else "–"
            rss = "–"
            if not args.no_rss:
                mem = peak_rss_mb(spec, task, SHAPES[task], backend, args.threads[-1])
                rss = f"{mem['peak_rss_mb']:.0f} (+{mem['peak_rss_mb'] - mem['import_rss_mb']:.0f})"
            print(f"| {label} | {size} | " + " | ".join(cells) + f" | {base / last:.2f}× | {rss} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
