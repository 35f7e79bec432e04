"""Stage ``prune``: L1-norm structured channel pruning of one task's teacher (torch-pruning DepGraph).

Reads:  params.yaml:prune; artifacts/teacher/<task>.pt (or --model).
Writes: artifacts/pruned/<task>.pt (whole module; the teacher's metadata plus a ``prune`` report);
        metrics/prune_<task>.json (params, MACs and ONNX bytes before and after).
Fails (writing nothing) when an ignore pattern matches no module or, at ratio > 0, the ONNX file
does not shrink. The pruned model is not recovered yet: the distill stage trains it.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ocrslim.config import PruneConfig, load_section  # noqa: E402
from ocrslim.errors import ArtifactError  # noqa: E402
from ocrslim.fsutil import write_json  # noqa: E402
from ocrslim.models.io import load_model, save_model  # noqa: E402
from ocrslim.prune import example_input, prune_metrics, prune_model  # noqa: E402
from ocrslim.stage import run_main, stage_parser  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__)
    p.add_argument("--task", choices=("det", "rec"), required=True)
    p.add_argument("--model", default=None, help="default: artifacts/teacher/<task>.pt")
    p.add_argument("--out", default=None, help="default: artifacts/pruned/<task>.pt")
    p.add_argument("--metrics", default=None, help="default: metrics/prune_<task>.json")
    args = p.parse_args(argv)
    cfg = load_section(args.params, "prune", PruneConfig)
    src = Path(args.model or f"artifacts/teacher/{args.task}.pt")
    model, meta = load_model(src)
    if meta.get("task") not in (None, args.task):
        raise ArtifactError(f"{src}: is a {meta['task']} model, not {args.task}. Check dvc.yaml's prune stage.")
    report = prune_model(model, args.task, cfg, example_input(args.task, cfg))
    out = Path(args.out or f"artifacts/pruned/{args.task}.pt")
    save_model(model, out, {**meta, "prune": {**report, "source": str(src)}})
    write_json(args.metrics or f"metrics/prune_{args.task}.json", prune_metrics(report))
    r = report
    print(
        f"prune {args.task}: {out} params {r['params_before'] / 1e6:.2f} -> {r['params_after'] / 1e6:.2f} M, "
        f"MACs {r['macs_before'] / 1e6:.0f} -> {r['macs_after'] / 1e6:.0f} M, "
        f"ONNX {r['onnx_bytes_before'] / 2**20:.2f} -> {r['onnx_bytes_after'] / 2**20:.2f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
