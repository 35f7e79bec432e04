"""Stage ``bench``: whole pages, end to end, per reader on this host's CPU — speed, memory and accuracy side by side.

Reads:  params.yaml:bench; the page sets (bench.pages: SROIE dev and the synthetic test pages, which stand in
        for scene images); the bundle, the teacher's MNN FP32 and ONNX builds and the student's MNN FP32 build,
        as built by the DAG (bench.readers picks among them; rapidocr_v4 / rapidocr_v6 add the peers).
Writes: metrics/bench.json = {reader: {size_mb, <set>: {pages, lines_per_page, det_hmean, e2e_f1, *_vs_teacher,
        t<threads>: {p50_ms, p90_ms, pages_per_s, peak_rss_mb, startup_s, open_s, speedup_vs_*}}}}.
Each reader, set and thread count is measured in a fresh process (bench.rss) with a timeout (bench.timeout).
Host-CPU figures: phones (ARM, int8 dot products) behave differently; see the README.
"""

from __future__ import annotations

import sys

from ocrslim.core.config import BenchConfig, load_section
from ocrslim.core.errors import ConfigError
from ocrslim.core.fsutil import write_json
from ocrslim.eval.pages import PEERS, ReaderSpec, bench_pages, pages_table
from ocrslim.stage import run_main, stage_parser

READERS = {
    "bundle": ReaderSpec("bundle", bundle="artifacts/bundle"),
    "teacher_mnn": ReaderSpec("teacher_mnn", det="artifacts/mnn/teacher_det.mnn", rec="artifacts/mnn/teacher_rec.mnn"),
    "teacher_onnx": ReaderSpec("teacher_onnx", det="artifacts/onnx/teacher_det.onnx",
                               rec="artifacts/onnx/teacher_rec.onnx"),
    "student_mnn": ReaderSpec("student_mnn", det="artifacts/mnn/student_det.mnn", rec="artifacts/mnn/student_rec.mnn"),
    **{name: ReaderSpec(name) for name in PEERS},
}


def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__)
    p.add_argument("--out", default="metrics/bench.json")
    args = p.parse_args(argv)
    cfg = load_section(args.params, "bench", BenchConfig)
    unknown = [r for r in cfg.readers if r not in READERS]
    if unknown:
        raise ConfigError(f"params.yaml: bench.readers has {unknown}, not readers the bench stage knows "
                          f"({', '.join(READERS)}). Fix conf/ or dvc exp run -S bench.readers=[...].")
    results = bench_pages({name: READERS[name] for name in cfg.readers}, cfg)
    write_json(args.out, results)
    print(pages_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
