"""Stage ``bench``: size, latency (p50/p90) and peak RSS of every model variant, on this host's CPU.

Reads:  params.yaml:bench; the teacher's .safetensors, .onnx and .mnn files, the student's MNN FP32 build and
        the bundle's models, as built by the DAG.
Writes: metrics/bench.json = {variant: {det|rec: {size_mb, p50_ms, p90_ms, peak_rss_mb}}}.
Host-CPU figures: phones (ARM, int8 dot products) behave differently; see the README.
"""

from __future__ import annotations

import sys

from ocrslim.core.config import BenchConfig, load_section
from ocrslim.core.fsutil import write_json
from ocrslim.eval.bench import bench_variants
from ocrslim.stage import run_main, stage_parser

VARIANTS = {
    "teacher_torch": {"det": "artifacts/teacher/det.safetensors", "rec": "artifacts/teacher/rec.safetensors"},
    "teacher_onnx": {"det": "artifacts/onnx/teacher_det.onnx", "rec": "artifacts/onnx/teacher_rec.onnx"},
    "teacher_mnn": {"det": "artifacts/mnn/teacher_det.mnn", "rec": "artifacts/mnn/teacher_rec.mnn"},
    "student_mnn": {"det": "artifacts/mnn/student_det.mnn", "rec": "artifacts/mnn/student_rec.mnn"},
    "bundle": {"det": "artifacts/bundle/det.mnn", "rec": "artifacts/bundle/rec.mnn"},
}


def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__)
    p.add_argument("--out", default="metrics/bench.json")
    args = p.parse_args(argv)
    cfg = load_section(args.params, "bench", BenchConfig)
    results = bench_variants(VARIANTS, cfg)
    write_json(args.out, results)
    for name, tasks in results.items():
        for task, m in tasks.items():
            print(f"bench {name} {task}: " + ", ".join(f"{k}={v}" for k, v in m.items()))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
