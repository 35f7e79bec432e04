"""Stage ``prune``: the student's starting point — the teacher with L1-norm structured channel pruning
(torch-pruning DepGraph), or, with ``student.<task>`` set to a seed architecture, that model built from
scratch (random init, for GPU training).

Reads:  params.yaml:prune, params.yaml:student; artifacts/teacher/<task>.pt (or --model).
Writes: artifacts/pruned/<task>.pt (whole module; the teacher's metadata plus a ``prune`` report);
        metrics/prune_<task>.json (params, MACs and ONNX bytes before and after).
Fails (writing nothing) when an ignore pattern matches no module or, at ratio > 0, the ONNX file
does not shrink. The pruned model is not recovered yet: the distill stage trains it.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ocrslim.config import PruneConfig, StudentConfig, load_section  # noqa: E402
from ocrslim.errors import ArtifactError  # noqa: E402
from ocrslim.fsutil import write_json  # noqa: E402
from ocrslim.models.io import load_model, save_model  # noqa: E402
from ocrslim.prune import make_student, prune_metrics  # noqa: E402
from ocrslim.stage import run_main, stage_parser  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__)
    p.add_argument("--task", choices=("det", "rec"), required=True)
    p.add_argument("--model", default=None, help="default: artifacts/teacher/<task>.pt")
    p.add_argument("--out", default=None, help="default: artifacts/pruned/<task>.pt")
    p.add_argument("--metrics", default=None, help="default: metrics/prune_<task>.json")
    args = p.parse_args(argv)
    cfg = load_section(args.params, "prune", PruneConfig)
    student = load_section(args.params, "student", StudentConfig)
    src = Path(args.model or f"artifacts/teacher/{args.task}.pt")
    model, meta = load_model(src)
    if meta.get("task") not in (None, args.task):
        raise ArtifactError(f"{src}: is a {meta['task']} model, not {args.task}. Check dvc.yaml's prune stage.")
    model, report = make_student(model, args.task, cfg, student, characters=meta.get("characters"))
    if "characters" in report:  # prune.charset: the student reads a smaller dictionary
        meta = {**meta, "characters": report.pop("characters")}
    out = Path(args.out or f"artifacts/pruned/{args.task}.pt")
    save_model(model, out, {**meta, "prune": {**report, "source": str(src)}})
    write_json(args.metrics or f"metrics/prune_{args.task}.json", prune_metrics(report))
    r = report
    what = "pruned" if student.name(args.task) == "pruned" else f"{student.name(args.task)} (from scratch)"
    print(
        f"prune {args.task}: {what} {out} params {r['params_before'] / 1e6:.2f} -> {r['params_after'] / 1e6:.2f} M, "
        f"MACs {r['macs_before'] / 1e6:.0f} -> {r['macs_after'] / 1e6:.0f} M, "
        f"ONNX {r['onnx_bytes_before'] / 2**20:.2f} -> {r['onnx_bytes_after'] / 2**20:.2f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
