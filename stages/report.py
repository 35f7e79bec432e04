"""Stage ``report``: reports/summary.md (variant | size | latency | peak memory | accuracy) and plots.

Reads:  metrics/teacher_{torch,onnx,mnn}.json (evaluate), metrics/bench.json, metrics/prune_*.json.
Writes: reports/summary.md, reports/size_vs_accuracy.png, reports/latency_vs_accuracy.png.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ocrslim.report import summary_report  # noqa: E402
from ocrslim.stage import run_main, stage_parser  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__)
    p.add_argument("--out", default="reports")
    args = p.parse_args(argv)
    evals = {v: f"metrics/{v}.json" for v in ("teacher_torch", "teacher_onnx", "teacher_mnn")}
    prune = {t: f"metrics/prune_{t}.json" for t in ("det", "rec")}
    path = summary_report(evals, "metrics/bench.json", prune, args.out)
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
