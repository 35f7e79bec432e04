"""Stage ``prune``: the student's starting point — the teacher with L1-norm structured channel pruning
(torch-pruning DepGraph), or, with ``student.<task>`` set to a seed architecture, that model built from
scratch (random init, for GPU training).

Reads:  params.yaml:prune, params.yaml:student; artifacts/teacher/<task>.safetensors (or --model).
Writes: artifacts/pruned/<task>.safetensors (weights + architecture spec; the teacher's metadata plus a
        ``prune`` report);
        metrics/prune_<task>.json (params, MACs and ONNX bytes before and after).
Fails (writing nothing) when an ignore pattern matches no module or, at ratio > 0, the ONNX file
does not shrink. The pruned model is not recovered yet: the distill stage trains it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ocrslim.compress.prune import make_student, prune_metrics
from ocrslim.core.artifacts import preprocessing
from ocrslim.core.config import PruneConfig, StudentConfig, load_section
from ocrslim.core.errors import ArtifactError
from ocrslim.core.fsutil import write_json
from ocrslim.models.io import load_model, save_model
from ocrslim.stage import run_main, task_stage_args


def main(argv: list[str] | None = None) -> int:
    args = task_stage_args(__doc__, argv, model="artifacts/teacher/{task}.safetensors",
                           out="artifacts/pruned/{task}.safetensors", metrics="metrics/prune_{task}.json")
    cfg = load_section(args.params, "prune", PruneConfig)
    student = load_section(args.params, "student", StudentConfig)
    src = Path(args.model)
    model, meta = load_model(src)
    if meta.get("task") not in (None, args.task):
        raise ArtifactError(f"{src}: is a {meta['task']} model, not {args.task}. Check dvc.yaml's prune stage.")
    det_cfg, rec_cfg = preprocessing(meta)
    model, report = make_student(model, args.task, cfg, student, characters=meta.get("characters"),
                                 pre=det_cfg if args.task == "det" else rec_cfg)
    if "characters" in report:  # prune.charset: the student reads a smaller dictionary
        meta = {**meta, "characters": report.pop("characters")}
    out = Path(args.out)
    seconds = report.pop("seconds", None)  # wall time: logged, not in the outputs (a rerun writes the same bytes)
    save_model(model, out, {**meta, "prune": {**report, "source": str(src)}})
    write_json(args.metrics, prune_metrics(report))
    write_json(Path("logs") / f"prune_{args.task}.json", {"seconds": seconds})
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
