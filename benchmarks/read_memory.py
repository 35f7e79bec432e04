"""Peak memory of reading one page: ``ocrslim read --bundle B PAGE`` in a fresh process per page.

    python benchmarks/read_memory.py [--bundle artifacts/bundle] [--pages ../shared/data/sroie_train] [--limit 12]
        [--threads 2] [--python INTERPRETER] [--json reports/read_memory.json]

Each page is read by its own ``python -m ocrslim read --bundle B PAGE --json --threads N`` child process, and its
peak resident set (``ru_maxrss`` of that child, from ``os.wait4``) and wall time are reported: what a user pays
for reading one image with the command line, imports and model loading included. The runtime issue's memory
target is for exactly this (one SROIE page, fresh process); :mod:`ocrslim.eval.pages` measures many pages in one
process instead (the ``bench`` stage), where MNN keeps its buffers at the largest shapes seen.

``--python`` runs the children with another interpreter, e.g. a runtime-only install (what a user who reads with a
bundle installs, ``pip install ocrslim``: no torch, and OpenCV's headless build)::

    python -m venv /tmp/rt && /tmp/rt/bin/pip install -c constraints.txt -e .
    python benchmarks/read_memory.py --python /tmp/rt/bin/python ...

The development install pays more for the same read: the pipeline extra's RapidOCR wheels pull the GUI build of
OpenCV (Qt, X11 libraries), which shadows the headless one. The report records which build the children import.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ocrslim.core.fsutil import write_json
from ocrslim.data.datasets import image_files


def read_one(bundle: str, page: Path, threads: int, python: str = sys.executable) -> dict[str, Any]:
    """Read ``page`` with ``bundle`` in a fresh ``python`` process: its peak RSS (MB), wall seconds, output bytes."""
    cmd = [python, "-m", "ocrslim", "read", "--bundle", bundle, str(page), "--json", "--threads", str(threads)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = proc.stdout.read() if proc.stdout is not None else b""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"error: {page}: ocrslim read exited with {code}: {' '.join(cmd)}")
    return {"page": page.name, "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "wall_s": round(wall, 3),
            "bytes_out": len(out)}


_PROBE = (
    "import importlib.util, json, cv2; "
    "gui = any('libQt' in line for line in open('/proc/self/maps')); "
    "print(json.dumps({'opencv': cv2.__version__ + (' (GUI build: Qt loaded)' if gui else ' (headless)'), "
    "'torch': importlib.util.find_spec('torch') is not None}))"
)


def child_install(python: str) -> dict[str, Any]:
    """What the child interpreter has: the OpenCV build ``import cv2`` loads, and whether torch is installed."""
    try:
        out = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=120)
    except OSError as e:
        raise SystemExit(f"error: --python {python}: cannot run it ({e.strerror}). Pass a Python interpreter.") from e
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"error: --python {python}: cannot import cv2 ({last}). "
                         f"Pass an interpreter with ocrslim installed.")
    return {"python": python, **json.loads(out.stdout)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--bundle", default="artifacts/bundle")
    p.add_argument("--pages", default="../shared/data/sroie_train", help="a det set (images/ + gt/) or directory")
    p.add_argument("--limit", type=int, default=12)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--python", default=sys.executable,
                   help="interpreter of the child processes (default: this one), e.g. a runtime-only venv's")
    p.add_argument("--json", help="write the per-page figures and the summary here")
    args = p.parse_args(argv)
    env = child_install(args.python)
    pages = image_files(args.pages)[: args.limit]
    if not pages:
        raise SystemExit(f"error: {args.pages}: no images. Pass --pages a det set or an image directory.")
    rows = []
    for page in pages:
        row = read_one(args.bundle, page, args.threads, args.python)
        rows.append(row)
        print(f"{row['page']}: peak RSS {row['peak_rss_mb']:.0f} MB, {row['wall_s']:.2f} s", flush=True)
    peaks = [r["peak_rss_mb"] for r in rows]
    summary = {"pages": len(rows), "peak_rss_mb_max": max(peaks), "peak_rss_mb_median": statistics.median(peaks),
               "wall_s_median": statistics.median(r["wall_s"] for r in rows)}
    print(f"\n{args.bundle}, {len(rows)} pages of {args.pages}, one fresh `ocrslim read` each: peak RSS median "
          f"{summary['peak_rss_mb_median']:.0f} MB, max {summary['peak_rss_mb_max']:.0f} MB; wall median "
          f"{summary['wall_s_median']:.2f} s ({env['python']}: {env['opencv']}, torch "
          f"{'installed' if env['torch'] else 'not installed'})")
    if args.json:
        write_json(Path(args.json), {"bundle": args.bundle, "pages_from": args.pages, "threads": args.threads,
                                     "install": env, "summary": summary, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
