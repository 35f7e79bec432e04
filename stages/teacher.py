"""Stage ``teacher``: import the teacher for one task as a PyTorch module.

Reads:  params.yaml:teacher, params.yaml:det|rec (pre/post-processing carried with the model);
        the teacher's ONNX file inside its installed wheel (or teacher.det/rec = onnx:<path>).
Writes: artifacts/teacher/<task>.pt (whole module + metadata).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ocrslim.config import DetConfig, RecConfig, TeacherConfig, load_params, load_section  # noqa: E402
from ocrslim.models.io import save_model  # noqa: E402
from ocrslim.stage import run_main, stage_parser  # noqa: E402
from ocrslim.teacher import import_teacher  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__)
    p.add_argument("--task", choices=("det", "rec"), required=True)
    p.add_argument("--out", default=None, help="default: artifacts/teacher/<task>.pt")
    args = p.parse_args(argv)
    params = load_params(args.params)
    cfg = load_section(params, "teacher", TeacherConfig)
    module, meta = import_teacher(cfg, args.task, load_section(params, "det", DetConfig),
                                  load_section(params, "rec", RecConfig))
    out = Path(args.out or f"artifacts/teacher/{args.task}.pt")
    save_model(module, out, meta)
    n = sum(p.numel() for p in module.parameters())
    print(f"teacher {args.task}: {meta['source']} -> {out} ({n / 1e6:.2f} M params, native={meta['native']})")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
