"""Whole pages, end to end: what a page costs each reader, and what the reader finds on it.

A *reader* turns a page file into text lines: decode → detection at the page's own size (the det input
policy of its models) → every line crop → recognition (batched) → text. Readers are ocrslim pipelines over
a bundle or a det + rec pair (any model spec :func:`ocrslim.infer.pipeline.open_model` opens), or the peers
RapidOCR v4 (``rapidocr_onnxruntime==1.4.4``) and v6 (``rapidocr==3.10.0``) through their own packages, angle
classifier off (ocrslim has none).

Each (reader, page set, thread count) is measured in a fresh process, so its peak RSS (VmHWM) is its own —
imports, models, buffers — and a hung reader is stopped by a timeout::

    python -m ocrslim.eval.pages --name bundle --bundle artifacts/bundle --pages ../shared/data/sroie_dev \\
        --limit 60 --threads 2

prints one JSON object: per-page wall times (after ``--warmup`` untimed pages), the lines read on every page,
start-up and model-open times, peak RSS. The parent (:func:`bench_pages`) scores the lines with the evaluate
stage's matching (ICDAR 2015 det hmean and end-to-end F1, :mod:`ocrslim.eval.metrics`) — outside the
measured process — and assembles ``metrics/bench.json``::

    {reader: {"size_mb": 3.1,                                  # det + rec model files (not for the peers)
              set: {"pages": 60, "lines_per_page": 42.1, "det_hmean": 0.93, "e2e_f1": 0.81,
                    "det_hmean_vs_teacher": -0.4, "e2e_f1_vs_teacher": -1.2,            # points
                    "t2": {"p50_ms": 930.0, "p90_ms": 1210.0, "pages_per_s": 1.02, "peak_rss_mb": 572.0,
                           "startup_s": 0.4, "open_s": 0.2, "speedup_vs_teacher": 1.47,
                           "speedup_vs_rapidocr_v4": 1.9}}}}

Accuracy is that of the lines each reader returns (after its confidence drop, ``rec.drop_score`` for
ocrslim), so readers compare alike; the evaluate stage scores the detector's raw boxes instead. The teacher
of the ratios is ``teacher_mnn`` (the teacher in MNN FP32, the runtime the bundle uses); a speedup is the
teacher's p50 over the reader's, at the same set and thread count, measured in the same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ocrslim.core.errors import ConfigError, OcrslimError, ToolError

__all__ = ["PEERS", "TEACHER", "ReaderSpec", "bench_pages", "measure", "open_reader", "pages_table", "run_reader",
           "score_pages"]

PEERS = ("rapidocr_v4", "rapidocr_v6")
TEACHER = "teacher_mnn"  # ratios are against it (and against PEERS[0] when it was measured)
PEER = PEERS[0]

Lines = list[tuple[np.ndarray, str]]
Reader = Callable[[np.ndarray], Lines]


@dataclasses.dataclass(frozen=True)
class ReaderSpec:
    """What a reader opens: a bundle directory, a det + rec pair (model specs), or a peer (``name`` in PEERS).

    ``overrides`` change the models' pre/post-processing for this reader (``det.limit_side_len=960``,
    ``rec.batch_size=12``): the det input policy and rec batching as measured knobs.
    """

    name: str
    bundle: str | None = None
    det: str | None = None
    rec: str | None = None
    overrides: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        peer = self.name in PEERS
        if peer and (self.bundle or self.det or self.rec or self.overrides):
            raise ConfigError(f"reader {self.name}: a peer opens its own models. Give it no bundle, models or "
                              "overrides.")
        if not peer and not self.bundle and not (self.det and self.rec):
            raise ConfigError(f"reader {self.name}: no models. Give a bundle directory or a det and a rec model "
                              f"(or use a peer: {', '.join(PEERS)}).")

    def args(self) -> list[str]:
        """This spec as command-line arguments of ``python -m ocrslim.eval.pages``."""
        out = ["--name", self.name]
        for key in ("bundle", "det", "rec"):
            if getattr(self, key):
                out += [f"--{key}", str(getattr(self, key))]
        for o in self.overrides:
            out += ["--set", o]
        return out

    def size_mb(self) -> float | None:
        """Size of the det + rec model files (MiB), when they are files on disk (``None`` otherwise: a missing
        bundle is for its measuring process to report)."""
        if self.bundle:
            from ocrslim.core.artifacts import read_manifest

            try:
                manifest = read_manifest(self.bundle, verify=False)
            except OcrslimError:
                return None
            files = [manifest["det"]["path"], manifest["rec"]["path"]]
        else:
            files = [Path(p) for p in (self.det, self.rec) if p]
        if len(files) != 2 or not all(f.is_file() for f in files):
            return None
        return round(sum(f.stat().st_size for f in files) / 2**20, 3)


# ------------------------------------------------------------------------------------------ readers
def _apply_overrides(model: Any, overrides: Sequence[str]) -> Any:
    """``model`` with ``det.KEY=VALUE`` / ``rec.KEY=VALUE`` applied to its det_cfg / rec_cfg (validated)."""
    from ocrslim.core.config import with_overrides

    field = f"{model.task}_cfg"
    cfg = getattr(model, field)
    new = with_overrides(cfg, model.task, overrides)
    return model if new is cfg else dataclasses.replace(model, **{field: new})


def open_reader(spec: ReaderSpec, threads: int) -> Reader:
    """``read(bgr image) -> [(4x2 box, text)]`` for one reader, its runtimes on ``threads`` intra-op threads."""
    if spec.name == "rapidocr_v4":
        from rapidocr_onnxruntime import RapidOCR

        engine = RapidOCR(intra_op_num_threads=threads, inter_op_num_threads=1, use_cls=False, print_verbose=False)

        def read_v4(img: np.ndarray) -> Lines:
            result, _ = engine(img)
            return [(np.asarray(r[0], dtype=np.float32), str(r[1])) for r in result or []]

        return read_v4
    if spec.name == "rapidocr_v6":
        from rapidocr import RapidOCR as RapidOCR6

        engine6 = RapidOCR6(params={"Global.use_cls": False, "Global.log_level": "error",
                                    "EngineConfig.onnxruntime.intra_op_num_threads": threads,
                                    "EngineConfig.onnxruntime.inter_op_num_threads": 1})

        def read_v6(img: np.ndarray) -> Lines:
            out: Any = engine6(img)
            boxes = out.boxes if out.boxes is not None else []
            return [(np.asarray(b, dtype=np.float32), str(t)) for b, t in zip(boxes, out.txts or ())]

        return read_v6
    from ocrslim.infer.pipeline import OCR, open_bundle, open_model

    if spec.bundle:
        det, rec = open_bundle(spec.bundle, threads=threads)
    else:
        det, rec = open_model(str(spec.det), "det", threads=threads), open_model(str(spec.rec), "rec", threads=threads)
    ocr = OCR(_apply_overrides(det, spec.overrides), _apply_overrides(rec, spec.overrides))
    drop = rec.rec_cfg.drop_score

    def read(img: np.ndarray) -> Lines:
        return [(ln.box, ln.text) for ln in ocr.read(img) if ln.score >= drop and ln.text.strip()]

    return read


def measure(read: Reader, images: Sequence[str | Path], runs: int = 1, warmup: int = 1) -> dict[str, Any]:
    """Time ``read`` on every page, decoding included; return ``{"times_ms", "lines", "unreadable"}``.

    ``warmup`` pages are read first, untimed (first-call allocations, shape planning). Each of ``runs`` passes
    times every page; ``lines`` are the first pass's (``None`` for a page that cannot be decoded).
    """
    from ocrslim.infer.preprocess import read_image

    for path in list(images)[:warmup]:
        img = read_image(path)
        if img is not None:
            read(img)
    times: list[float] = []
    lines: list[list[list[Any]] | None] = []
    for run in range(runs):
        for path in images:
            t0 = time.perf_counter()
            img = read_image(path)
            out = read(img) if img is not None else None
            if img is not None:
                times.append((time.perf_counter() - t0) * 1000.0)
            if run == 0:
                lines.append(None if out is None else [[np.round(b, 1).tolist(), t] for b, t in out])
    return {"times_ms": times, "lines": lines, "unreadable": sum(x is None for x in lines)}


def score_pages(samples: Sequence[Any], lines: Sequence[Sequence[Any] | None]) -> dict[str, Any]:
    """Det hmean, end-to-end F1 and lines per page of the lines read on each det sample (evaluate's matching)."""
    from ocrslim.eval.metrics import DetMetric, E2EMetric

    det, e2e, count, pages = DetMetric(), E2EMetric(), 0, 0
    for s, page in zip(samples, lines, strict=True):
        if page is None:
            continue
        boxes = [np.asarray(b, dtype=np.float32) for b, _ in page]
        det.update(s.polys, s.ignore, boxes)
        e2e.update(s.polys, s.texts, s.ignore, boxes, [t for _, t in page])
        count += len(page)
        pages += 1
    return {"pages": pages, "lines_per_page": round(count / pages, 2) if pages else None,
            "det_hmean": det.summary()["hmean"], "e2e_f1": e2e.summary()["f1"]}


# ------------------------------------------------------------------------------------------ child process
def _child(argv: list[str] | None = None) -> int:
    from ocrslim.eval.rss_child import hwm_mb

    p = argparse.ArgumentParser(description="Read a page set with one reader and print the measurement as JSON.")
    p.add_argument("--name", required=True)
    p.add_argument("--bundle")
    p.add_argument("--det")
    p.add_argument("--rec")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="det.KEY=VALUE")
    p.add_argument("--pages", required=True, help="a det set (any layout ocrslim reads)")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--spawned", type=float, default=None, help=argparse.SUPPRESS)  # parent's time.time()
    args = p.parse_args(argv)
    from ocrslim.data.datasets import load_det_dataset

    if args.name not in PEERS:
        import ocrslim.infer.pipeline  # noqa: F401  (start-up: the imports before any model is opened)
    started = time.time()
    samples = load_det_dataset(args.pages, args.limit)
    spec = ReaderSpec(args.name, args.bundle, args.det, args.rec, tuple(args.overrides))
    t0 = time.perf_counter()
    read = open_reader(spec, args.threads)
    open_s = time.perf_counter() - t0
    res = measure(read, [s.image for s in samples], args.runs, args.warmup)
    res.update(open_s=round(open_s, 3), peak_rss_mb=round(hwm_mb(), 1),
               startup_s=round(started - args.spawned, 3) if args.spawned else None)
    sys.stdout.write(json.dumps(res) + "\n")
    return 0


def run_reader(spec: ReaderSpec, pages: str | Path, limit: int | None, threads: int, runs: int = 1,
               warmup: int = 1, timeout: float | None = None) -> dict[str, Any]:
    """:func:`measure` ``spec`` on a page set in a fresh process (``python -m ocrslim.eval.pages``).

    Raises:
        ToolError: the process failed (its last error line) or gave no result within ``timeout`` seconds.
    """
    what = f"{spec.name} on {pages} ({threads} thread{'s' if threads > 1 else ''})"
    cmd = [sys.executable, "-m", "ocrslim.eval.pages", *spec.args(), "--pages", str(pages), "--threads",
           str(threads), "--runs", str(runs), "--warmup", str(warmup), "--spawned", repr(time.time())]
    if limit is not None:
        cmd += ["--limit", str(limit)]
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ToolError(f"{what}: no result within {timeout:g} s (bench.timeout). Raise the timeout or lower "
                        "the page limit.") from None
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ToolError(f"{what}: the measuring process failed (exit {out.returncode}): {last}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ the benchmark
def _set_key(path: str | Path) -> str:
    from ocrslim.eval.evaluate import set_name

    return set_name(path)


def _timing(res: dict[str, Any]) -> dict[str, Any]:
    ms = np.asarray(res["times_ms"], dtype=np.float64)
    if ms.size == 0:
        return {}
    row: dict[str, Any] = {"p50_ms": round(float(np.percentile(ms, 50)), 1),
                           "p90_ms": round(float(np.percentile(ms, 90)), 1),
                           "pages_per_s": round(ms.size / (ms.sum() / 1000.0), 3)}
    for key in ("peak_rss_mb", "startup_s", "open_s"):
        if res.get(key) is not None:
            row[key] = res[key]
    return row


def _add_ratios(result: dict[str, Any]) -> None:
    """Speedups (p50 ratio) against the teacher and the peer, accuracy differences (points) against the teacher."""
    for name, entry in result.items():
        for set_key, rows in entry.items():
            if not isinstance(rows, dict):
                continue
            for metric in ("det_hmean", "e2e_f1"):
                ref = result.get(TEACHER, {}).get(set_key, {}).get(metric)
                if name != TEACHER and ref is not None and rows.get(metric) is not None:
                    rows[f"{metric}_vs_teacher"] = round(100 * (rows[metric] - ref), 2)
            for tkey, row in rows.items():
                if not isinstance(row, dict) or "p50_ms" not in row:
                    continue
                for other, label in ((TEACHER, "teacher"), (PEER, PEER)):
                    ref_row = result.get(other, {}).get(set_key, {}).get(tkey, {})
                    if name != other and ref_row.get("p50_ms"):
                        row[f"speedup_vs_{label}"] = round(ref_row["p50_ms"] / row["p50_ms"], 3)


def bench_pages(readers: Mapping[str, ReaderSpec] | Sequence[ReaderSpec], cfg: Any, keep_going: bool = False,
                log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure every reader on every page set at every thread count; the ``metrics/bench.json`` dict.

    Args:
        readers: the readers, by name (``{"bundle": ReaderSpec("bundle", bundle="artifacts/bundle"), ...}``).
        cfg: a :class:`ocrslim.core.config.BenchConfig` (pages, limit, threads, runs, warmup, rss, timeout).
            ``rss`` false measures in this process (no peak RSS, no timeout): quick, for the tiny profile.
        keep_going: report a reader that fails through ``log`` and go on (benchmark scripts); else raise.
        log: progress lines (default: stderr).

    Returns:
        ``{reader: {"size_mb", set: {"pages", "lines_per_page", "det_hmean", "e2e_f1", ..., "t<N>": {...}}}}``
        (module docstring); a number that was not measured is absent.
    """
    from ocrslim.data.datasets import load_det_dataset

    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    specs = dict(readers) if isinstance(readers, Mapping) else {s.name: s for s in readers}
    result: dict[str, Any] = {}
    for name, spec in specs.items():
        size = spec.size_mb()
        result[name] = {"size_mb": size} if size is not None else {}
    for pages in cfg.pages:
        samples = load_det_dataset(pages, cfg.limit)
        key = _set_key(pages)
        for threads in cfg.threads:
            for name, spec in specs.items():
                try:
                    if cfg.rss:
                        res = run_reader(spec, pages, cfg.limit, threads, cfg.runs, cfg.warmup, cfg.timeout)
                    else:
                        res = measure(open_reader(spec, threads), [s.image for s in samples], cfg.runs, cfg.warmup)
                except ToolError as exc:
                    if not keep_going:
                        raise
                    say(f"  {exc}")
                    continue
                rows = result[name].setdefault(key, {})
                if "pages" not in rows:  # accuracy: the first thread count's lines (threads do not change them)
                    rows.update({k: v for k, v in score_pages(samples, res["lines"]).items() if v is not None})
                rows[f"t{threads}"] = _timing(res)
                e2e = rows.get("e2e_f1")
                say(f"  {name} {key} x{threads}: {rows[f't{threads}'].get('p50_ms', '–')} ms/page p50, "
                    f"e2e F1 {'–' if e2e is None else f'{e2e:.3f}'}")
    _add_ratios(result)
    return result


def pages_table(result: dict[str, Any]) -> str:
    """Markdown table of a :func:`bench_pages` result: one row per reader, set and thread count."""
    def f(v: Any, fmt: str) -> str:
        return "–" if v is None else format(v, fmt)

    lines = ["| reader | pages | threads | p50 ms | p90 ms | pages/s | peak RSS MB | lines/page | det hmean | e2e F1 "
             "| speedup vs teacher MNN | vs RapidOCR v4 |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, entry in result.items():
        for key, rows in entry.items():
            if not isinstance(rows, dict):
                continue
            for tkey, r in rows.items():
                if not isinstance(r, dict):
                    continue
                lines.append(
                    f"| {name} | {key} ({rows.get('pages', '–')}) | {tkey[1:]} | {f(r.get('p50_ms'), '.0f')} | "
                    f"{f(r.get('p90_ms'), '.0f')} | {f(r.get('pages_per_s'), '.2f')} | "
                    f"{f(r.get('peak_rss_mb'), '.0f')} | {f(rows.get('lines_per_page'), '.1f')} | "
                    f"{f(rows.get('det_hmean'), '.3f')} | {f(rows.get('e2e_f1'), '.3f')} | "
                    f"{f(r.get('speedup_vs_teacher'), '.2f')} | {f(r.get(f'speedup_vs_{PEER}'), '.2f')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The measuring child: a user error is one line on stderr (``run_reader`` reports it) and exit code 1."""
    try:
        return _child(argv)
    except OcrslimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
