"""Command line: ``ocrslim read``, ``ocrslim eval``, ``ocrslim zoo``, ``ocrslim select``.

A model argument is a registered teacher name, ``onnx:<path>``, or a .safetensors / .onnx / .mnn file; the
runner follows from it. User mistakes print one line and exit 1; bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ocrslim.core.errors import OcrslimError, ToolError
from ocrslim.stage import run_main


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", help="bundle directory with manifest.json (e.g. artifacts/mnn)")
    p.add_argument("--det", help="detection model: zoo name, onnx:<path>, .safetensors, .onnx or .mnn")
    p.add_argument("--rec", help="recognition model: zoo name, onnx:<path>, .safetensors, .onnx or .mnn")
    p.add_argument("--dict", dest="dict_path", help="character list for a recogniser without one (one per line)")
    p.add_argument(
        "--backend", choices=("onnx", "torch", "mnn"), help="runtime for zoo names (default onnx = ONNX Runtime)"
    )
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: the runtime's)")


def _open(args: argparse.Namespace, need_det: bool, need_rec: bool):  # -> OCR
    from ocrslim.core.errors import ArtifactError
    from ocrslim.infer.pipeline import OCR, open_bundle

    if args.bundle:
        if args.det or args.rec:
            raise ArtifactError("--bundle and --det/--rec are exclusive. Pass one or the other.")
        det, rec = open_bundle(args.bundle, threads=args.threads)
        return OCR(det, rec)
    if need_det and not args.det:
        raise ArtifactError("no detection model. Pass --det MODEL (e.g. ppocrv4_mobile_det) or --bundle DIR.")
    if need_rec and not args.rec:
        raise ArtifactError("no recognition model. Pass --rec MODEL (e.g. ppocrv4_mobile_rec) or --bundle DIR.")
    if not args.det and not args.rec:
        raise ArtifactError("no model given. Pass --bundle DIR, or --det and/or --rec.")
    det = _open_one(args.det, "det", args) if args.det else None
    rec = _open_one(args.rec, "rec", args) if args.rec else None
    return OCR(det, rec)


def _open_one(spec: str, task: str, args: argparse.Namespace):  # -> Model
    if args.backend == "mnn":  # a registered teacher in MNN: converted once, cached
        from ocrslim.export.mnn import open_model_on
    else:
        from ocrslim.infer.pipeline import open_model as open_model_on  # the inference core alone

    return open_model_on(spec, task, backend=args.backend, dict_path=args.dict_path if task == "rec" else None,
                         threads=args.threads)


def _draw(img: np.ndarray, lines: Sequence[tuple[np.ndarray, str]], out: Path) -> None:
    canvas = img.copy()
    for i, (box, _) in enumerate(lines):
        pts = np.round(box).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(canvas, [pts], True, (0, 0, 255), 2)
        cv2.putText(canvas, str(i), tuple(int(v) for v in box[0]), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 0, 0), 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), canvas):
        from ocrslim.core.errors import ArtifactError

        raise ArtifactError(f"{out}: could not write the drawing. Use a .png or .jpg path in a writable folder.")


def expand_images(specs: Sequence[str]) -> list[tuple[str, str | None]]:
    """Image arguments → ``(path, problem)`` in argument order.

    A directory gives its images (sorted by name), a glob (``pages/*.jpg``, ``**`` recursive) the images it
    matches (sorted); any other argument stays as given (an unreadable one is reported when read). ``problem``
    is set when a directory or glob gives no image.
    """
    import glob

    from ocrslim.data.datasets import IMAGE_SUFFIXES

    def images(paths: Sequence[Path]) -> list[str]:
        return sorted(str(f) for f in paths if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)

    out: list[tuple[str, str | None]] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = images(list(path.iterdir()))
            out += [(f, None) for f in found] or [(spec, "no images in this directory")]
        elif not path.exists() and any(c in spec for c in "*?["):
            found = images([Path(f) for f in glob.glob(spec, recursive=True)])
            out += [(f, None) for f in found] or [(spec, "no image matches this pattern")]
        else:
            out.append((spec, None))
    return out


def _lines_of(ocr, img: np.ndarray, keep_all: bool) -> list[tuple[np.ndarray, str, float]]:
    """(box, text, score) of one image: full OCR, detection only, or the whole image as one line."""
    if ocr.det is not None and ocr.rec is not None:
        drop = 0.0 if keep_all else ocr.rec.rec_cfg.drop_score
        return [(ln.box, ln.text, ln.score) for ln in ocr.read(img) if ln.score >= drop and ln.text.strip()]
    if ocr.det is not None:
        boxes, scores = ocr.detect(img)
        return [(b, "", s) for b, s in zip(boxes, scores)]
    (text, score), = ocr.recognize([img])  # a recogniser alone reads the whole image as one text line
    h, w = img.shape[:2]
    return [(np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float32), text, score)]


def cmd_read(args: argparse.Namespace) -> int:
    import time

    from tqdm import tqdm

    from ocrslim.infer.preprocess import read_image_checked

    items = expand_images(args.images)
    ocr = _open(args, need_det=False, need_rec=False)
    many = len(items) > 1
    records, unreadable = [], 0
    bar = tqdm(total=len(items), desc="read", unit="page", file=sys.stderr, disable=not many, leave=False)
    start = time.perf_counter()
    for i, (name, problem) in enumerate(items):
        img, problem = read_image_checked(name) if problem is None else (None, problem)
        if img is None:
            problem = problem or "unreadable image"
            tqdm.write(f"{name}: {problem}, skipped.", file=sys.stderr)
            unreadable += 1
            if args.jsonl:
                tqdm.write(json.dumps({"image": str(name), "error": problem}, ensure_ascii=False), file=sys.stdout)
            bar.update(1)
            continue
        lines = _lines_of(ocr, img, args.all)
        record = {"image": str(name), "lines": [
            {"box": np.round(b).astype(int).tolist(), "text": t, "score": round(float(s), 4)} for b, t, s in lines]}
        if args.jsonl:
            tqdm.write(json.dumps(record, ensure_ascii=False), file=sys.stdout)
        elif args.json:
            records.append(record)
        else:
            tqdm.write(f"== {name}: {len(lines)} line(s)", file=sys.stdout)
            for b, t, s in lines:
                coords = " ".join(f"{int(round(x))},{int(round(y))}" for x, y in b)
                tqdm.write(f"{coords}\t{s:.3f}\t{t}", file=sys.stdout)
        if args.draw:
            out = Path(args.draw)
            if many:
                out = out.with_name(f"{out.stem}_{i:03d}_{Path(name).stem}{out.suffix or '.png'}")
            _draw(img, [(b, t) for b, t, _ in lines], out)
        bar.update(1)
    elapsed = time.perf_counter() - start
    bar.close()
    read = len(items) - unreadable
    if args.json:
        print(json.dumps(records if len(records) != 1 else records[0], ensure_ascii=False, indent=2))
    if many or unreadable:
        speed = f", {read / elapsed:.2f} pages/s ({1000 * elapsed / read:.0f} ms/page)" if read else ""
        print(f"{read} pages{speed}, {unreadable} unreadable", file=sys.stderr)
    return 0 if read or not items else 1


def cmd_eval(args: argparse.Namespace) -> int:
    from ocrslim.core.errors import ArtifactError
    from ocrslim.core.fsutil import write_json
    from ocrslim.eval.evaluate import evaluate

    if not args.det_data and not args.rec_data:
        raise ArtifactError("no data given. Pass --det-data DIR and/or --rec-data DIR (e.g. ../shared/data/sroie_dev).")
    ocr = _open(args, need_det=bool(args.det_data), need_rec=bool(args.rec_data))
    results = evaluate(ocr, args.det_data or (), args.rec_data or (), limit=args.limit, progress=not args.quiet)
    # One set per task: the flat shape {"det", "rec", "e2e"}; several per task: keyed by set name.
    single = len(args.det_data or ()) <= 1 and len(args.rec_data or ()) <= 1
    out: dict = {}
    if single:
        for res in results.values():
            out.update({k: v for k, v in res.items() if k != "skipped"})
            if res.get("skipped"):
                out["skipped"] = out.get("skipped", 0) + res["skipped"]
    else:
        out = results
    text = json.dumps(out, indent=2)
    if args.json:
        write_json(args.json, out)
    print(text)
    return 0


def cmd_zoo(args: argparse.Namespace) -> int:
    from ocrslim.models import seed  # noqa: F401  (registers the student components; needs torch)
    from ocrslim.models.registry import REGISTRY, teacher_onnx_path

    for name, entry in REGISTRY.items():
        if entry.kind == "teacher":
            try:
                where = str(teacher_onnx_path(name))
            except OcrslimError as exc:
                where = f"unavailable: {exc}"
            print(f"{name:22s} {entry.task}  teacher  {'native' if entry.native else 'onnx  '}  {where}")
        elif entry.kind == "student":
            parts = ", ".join(f"{k} {v['name']}" for k, v in (entry.spec or {}).items())
            print(f"{name:22s} {entry.task}  student  scratch  {parts}")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from ocrslim.eval.report import eval_table, max_spread

    names = args.names.split(",") if args.names else None
    if names and len(names) != len(args.files):
        from ocrslim.core.errors import ConfigError

        raise ConfigError(f"--names: {len(names)} names for {len(args.files)} files. Give one name per file.")
    print(eval_table(args.files, names))
    if len(args.files) > 1:
        print(f"\nlargest difference between variants: {max_spread(args.files):.2f} points")
    return 0


def cmd_samples(args: argparse.Namespace) -> int:
    from ocrslim.core.config import DataConfig
    from ocrslim.data.fonts import DEFAULT_FONT, discover_fonts
    from ocrslim.eval.report import sample_sheet

    fonts = [f for f in discover_fonts(DataConfig().fonts, DataConfig().font_exclude) if f.cjk]
    font = fonts[0].path if fonts and fonts[0].path != DEFAULT_FONT else None
    out = sample_sheet(args.det_data, args.rec_data, args.out, pages=args.pages, lines=args.lines, font_path=font)
    print(f"wrote {out}")
    return 0


def cmd_select(args: argparse.Namespace) -> int:
    from ocrslim.core.errors import ConfigError
    from ocrslim.eval import select as sl

    if args.max_drop < 0:
        raise ConfigError(f"--max-drop {args.max_drop:g}: negative. Pass the allowed drop in points, e.g. 1.0.")
    rows = sl.exp_rows(args.repo, args.all_commits)
    sel = sl.choose(rows, args.metric, args.objective, args.max_drop)
    print(json.dumps(sl.selection_json(sel), indent=2) if args.json else sl.format_selection(sel))
    if args.plot:
        print(f"Pareto plot: {sl.pareto_plot(sel, args.plot)}")
    if sel.pick is None:
        raise ConfigError(sl.no_fit_message(sel))
    if args.apply:
        if sel.pick.row.kind == "baseline":
            print(f"{sel.pick.row.name} is the committed baseline, not an experiment: nothing to apply.")
        else:
            sl.exp_apply(sel.pick.row.name, args.repo)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from ocrslim.export.bundle import describe_bundle

    info = describe_bundle(args.bundle)
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return 0
    print(f"{info['bundle']}: verified ({info['format']}), target {info.get('target') or 'unspecified'}")
    for task in ("det", "rec"):
        m = info[task]
        floats = m["float_layers"]
        print(f"  {task}: {m['file']} {m['size_mb']} MB, {m['precision']}"
              + (f" ({m['quant_method']})" if m.get("quant_method") else "")
              + (f", {len(floats)} layer group(s) float" if floats else "")
              + (f", {m['classes']} classes" if m.get("classes") else ""))
        for k, v in (m.get("shipped_with") or {}).items():
            print(f"      shipped with {k}: {v}")
    return 0


def cmd_convert_model(args: argparse.Namespace) -> int:
    from ocrslim.models.io import convert_pickle_model

    out = convert_pickle_model(args.src, args.dst)
    print(f"wrote {out} (safetensors weights + architecture spec); {args.src} was unpickled: only for trusted files")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ocrslim", description="Mobile OCR compression pipeline tools.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("read", help="read text in images: boxes and text")
    p.add_argument("images", nargs="+", help="image files, directories (their images) or globs ('pages/*.jpg')")
    _add_model_args(p)
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print JSON instead of text (one document at the end)")
    out.add_argument("--jsonl", action="store_true",
                     help='print JSON Lines as each image is read: {"image", "lines"} or {"image", "error"}')
    p.add_argument("--draw", help="write the image with boxes drawn (OUT.png; numbered per image if several)")
    p.add_argument("--all", action="store_true", help="also print lines below rec.drop_score confidence")
    p.set_defaults(func=cmd_read)

    p = sub.add_parser("eval", help="evaluate on detection and/or recognition sets")
    _add_model_args(p)
    p.add_argument("--det-data", action="append", help="detection set (ICDAR layout, or PaddleOCR label file)")
    p.add_argument("--rec-data", action="append", help="recognition set (images/+labels.tsv, or PaddleOCR labels)")
    p.add_argument("--json", help="write the metrics to this JSON file")
    p.add_argument("--limit", type=int, default=None, help="first N samples of each set")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("table", help="Markdown table of evaluation metrics files (one variant per file)")
    p.add_argument("files", nargs="+", help="metrics JSON files (metrics/*.json, ocrslim eval --json)")
    p.add_argument("--names", help="comma-separated row names, one per file (default: file stems)")
    p.set_defaults(func=cmd_table)

    p = sub.add_parser("samples", help="PNG contact sheet of a det set (GT drawn) and a rec set (labels)")
    p.add_argument("--det-data", required=True)
    p.add_argument("--rec-data", required=True)
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--pages", type=int, default=3)
    p.add_argument("--lines", type=int, default=12)
    p.set_defaults(func=cmd_samples)

    p = sub.add_parser("select", help="pick the fastest/smallest DVC experiment within an accuracy budget")
    p.add_argument("--max-drop", type=float, default=1.0, help="allowed drop below the teacher, points (default 1.0)")
    p.add_argument("--objective", choices=("latency", "size"), default="latency",
                   help="minimise bundle latency_ms or size_mb (tie: higher metric)")
    p.add_argument("--metric", choices=("e2e_f1", "det_hmean", "rec_acc"), default="e2e_f1",
                   help="accuracy metric of metrics/summary.json (default e2e_f1)")
    p.add_argument("--apply", action="store_true", help="dvc exp apply the pick (overwrites workspace changes)")
    p.add_argument("--json", action="store_true", help="print the selection as JSON")
    p.add_argument("--repo", default=".", help="DVC repository (default: .)")
    p.add_argument("--all-commits", action="store_true", help="experiments of every commit (dvc exp show -A)")
    p.add_argument("--plot", default=None, metavar="PNG",
                   help="write every experiment's bundle objective vs metric, Pareto front and pick marked")
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("zoo", help="list the registered teachers and student architectures")
    p.set_defaults(func=cmd_zoo)

    p = sub.add_parser("verify", help="check a bundle against its manifest (sha256, sizes) and print what it holds")
    p.add_argument("bundle", help="bundle directory (manifest.json)")
    p.add_argument("--json", action="store_true", help="print the description as JSON")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("convert-model", help="convert an old ocrslim .pt pickle you trust to .safetensors")
    p.add_argument("src", help="the .pt file (it is unpickled: it can run code, so only convert files you trust)")
    p.add_argument("dst", help="the .safetensors file to write")
    p.set_defaults(func=cmd_convert_model)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ModuleNotFoundError as exc:
        root = (exc.name or "").split(".")[0]
        if not root or root == "ocrslim":
            raise
        # A runtime-only install (`pip install ocrslim`) reads and verifies bundles; the rest needs the pipeline.
        raise ToolError(f"ocrslim {args.command}: needs {root}, which is not installed. Install the pipeline "
                        "extra: pip install 'ocrslim[pipeline]'.") from None


def entry() -> None:
    """Console-script entry point (the runtimes' own thread defaults, or --threads)."""
    sys.exit(run_main(main, threads=None))
