"""Stage ``evaluate``: OCR metrics of one model variant on the configured evaluation sets.

Reads:  params.yaml:eval; the variant's det and rec models (a .safetensors, .onnx or .mnn pair, or a bundle
        directory with its manifest.json).
Writes: metrics/<name>.json = {set: {"det": {precision, recall, hmean, images},
        "rec": {accuracy, accuracy_ci_alnum, one_minus_ned, cer, samples, and per script of the label:
        accuracy_cjk, one_minus_ned_cjk, samples_cjk, accuracy_latin, ...}, "e2e": {f1, ...}}}.
"""

from __future__ import annotations

import sys

from ocrslim.core.config import EvalConfig, load_section
from ocrslim.core.errors import ConfigError
from ocrslim.core.fsutil import write_json
from ocrslim.eval.evaluate import evaluate
from ocrslim.infer.pipeline import OCR, open_bundle, open_model
from ocrslim.stage import run_main, stage_parser


def main(argv: list[str] | None = None) -> int:
    p = stage_parser(__doc__)
    p.add_argument("--name", required=True, help="variant name, e.g. teacher_torch")
    p.add_argument("--det", default=None, help="detection model file")
    p.add_argument("--rec", default=None, help="recognition model file")
    p.add_argument("--bundle", default=None, help="a bundle directory (manifest.json), instead of --det/--rec")
    p.add_argument("--out", default=None, help="default: metrics/<name>.json")
    p.add_argument("--baseline", action="store_true",
                   help="a reference variant that reads little (pruned, no KD): evaluate eval.pruned_limit samples")
    args = p.parse_args(argv)
    cfg = load_section(args.params, "eval", EvalConfig)
    limit = cfg.limit
    if args.baseline and cfg.pruned_limit is not None:
        limit = min(cfg.pruned_limit, limit or cfg.pruned_limit)
    if args.bundle:
        ocr = OCR(*open_bundle(args.bundle, threads=cfg.threads))
    elif args.det and args.rec:
        ocr = OCR(open_model(args.det, "det", threads=cfg.threads), open_model(args.rec, "rec", threads=cfg.threads))
    else:
        raise ConfigError("evaluate: give --bundle DIR, or both --det and --rec. See dvc.yaml's evaluate stage.")
    results = evaluate(ocr, cfg.det_data, cfg.rec_data, limit=limit, progress=sys.stderr.isatty(), by_script=True)
    write_json(args.out or f"metrics/{args.name}.json", results)
    for name, res in results.items():
        for task, m in res.items():
            if isinstance(m, dict):
                print(f"{args.name} {name} {task}: " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                                                 for k, v in m.items()))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
