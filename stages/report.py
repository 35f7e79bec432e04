"""Stage ``report``: reports/summary.md (variant | params | size | latency | peak memory | accuracy), plots,
and metrics/summary.json (flat per-variant numbers for ``dvc metrics diff`` and ``ocrslim select``).

Reads:  metrics/eval_{teacher,pruned,student,bundle}.json (evaluate), metrics/bench.json,
        metrics/{prune,distill,quantize}_{det,rec}.json.
Writes: reports/summary.md, reports/size_vs_accuracy.png, reports/latency_vs_accuracy.png,
        metrics/summary.json.
"""

from __future__ import annotations

import sys

from ocrslim.eval.report import summary_report
from ocrslim.stage import run_main, stage_parser

TASKS = ("det", "rec")


def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__)
    p.add_argument("--out", default="reports")
    p.add_argument("--summary", default="metrics/summary.json")
    args = p.parse_args(argv)
    path = summary_report(
        {v: f"metrics/eval_{v}.json" for v in ("teacher", "pruned", "student", "bundle")},
        "metrics/bench.json",
        {t: f"metrics/prune_{t}.json" for t in TASKS},
        args.out,
        distill_files={t: f"metrics/distill_{t}.json" for t in TASKS},
        quant_files={t: f"metrics/quantize_{t}.json" for t in TASKS},
        summary_json=args.summary,
    )
    print(f"report: {path}, {args.summary}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
