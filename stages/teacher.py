"""Stage ``teacher``: import the teacher for one task as a PyTorch module.

Reads:  params.yaml:teacher, params.yaml:det|rec (the preprocessing keys only, carried with the model; the
        post-processing is attached by the export stage);
        the teacher's ONNX file inside its installed wheel (or teacher.det/rec = onnx:<path>).
Writes: artifacts/teacher/<task>.safetensors (weights + architecture spec, metadata).
"""

from __future__ import annotations

import sys
from pathlib import Path

from ocrslim.compress.teacher import import_teacher
from ocrslim.core.config import DetConfig, RecConfig, TeacherConfig, load_params, load_section
from ocrslim.models.io import save_model
from ocrslim.stage import run_main, task_stage_args


def main(argv: list[str] | None = None) -> int:
    args = task_stage_args(__doc__, argv, out="artifacts/teacher/{task}.safetensors")
    params = load_params(args.params)
    cfg = load_section(params, "teacher", TeacherConfig)
    module, meta = import_teacher(cfg, args.task, load_section(params, "det", DetConfig),
                                  load_section(params, "rec", RecConfig))
    out = Path(args.out)
    save_model(module, out, meta)
    n = sum(p.numel() for p in module.parameters())
    print(f"teacher {args.task}: {meta['source']} -> {out} ({n / 1e6:.2f} M params, native={meta['native']})")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
