"""The input size as a compression knob: det input policies and rec batching, accuracy against page latency.

    python benchmarks/det_policy.py [--bundle artifacts/bundle | --det MODEL --rec MODEL]
        [--pages data/splits/sroie_train/det/val.split.json] [--limit 60] [--threads 2]
        [--policies min:736 min:640 max:960 max:1280 max:1600] [--max-side-len 2000]
        [--tiles 320:64 512:64] [--rec-batch 1 6 12 24] [--rec-min-width 160 320]
        [--combo det.tile_height=256,det.tile_overlap=32,rec.batch_size=1] [--json reports/det_policy.json]

Each row reads the pages end to end (:mod:`ocrslim.eval.pages`, a fresh process per row: its peak RSS is its
own) with the models' pre/post-processing except the knob it names:

- ``own``: the policy the models carry (bundle manifest, sidecar or model metadata) — the baseline;
- ``det TYPE:SIDE``: ``det.limit_type`` / ``det.limit_side_len`` ("min": the short side is scaled *up* to SIDE,
  what PP-OCR does; "max": the long side is scaled *down* to SIDE), with ``det.max_side_len`` (``--max-side-len``,
  or ``TYPE:SIDE:CAP`` per policy) capping the page first — detection and crops both work on the capped page;
- ``det tiles H:O``: ``det.tile_height`` / ``det.tile_overlap`` — the detector reads strips H rows tall with O rows
  of context at each inner edge (its memory follows the strip, not the page);
- ``rec batch N`` / ``rec min_width W``: ``rec.batch_size`` (crops per forward, sorted by aspect ratio) and
  ``rec.min_width`` (the narrowest padded width);
- ``--combo K=V,K=V``: several ``det.*`` / ``rec.*`` keys changed together (a candidate default).

Reported per row: det hmean and e2e F1 of the lines read (evaluate's matching), p50 / p90 ms per page, pages/s,
peak RSS, and the differences to ``own`` (points, p50 ratio). The policy chosen goes into ``det.*`` / ``rec.*``
in conf/ (it travels to the bundle manifest, which the runtime reads); nothing here changes a model. Choose on the
training side's validation pages (the default ``--pages``), never on the dev sets the evaluate stage reports.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ocrslim.core.config import BenchConfig, DetConfig, RecConfig, with_overrides
from ocrslim.core.errors import ConfigError
from ocrslim.core.fsutil import write_json
from ocrslim.eval.evaluate import set_name
from ocrslim.eval.pages import ReaderSpec, bench_pages
from ocrslim.stage import run_main

OWN = "own"


def policy_overrides(policy: str, max_side_len: int | None) -> tuple[str, ...]:
    """``"max:1280"`` / ``"min:736:2000"`` → det overrides (limit_type, limit_side_len, max_side_len)."""
    parts = policy.split(":")
    if len(parts) not in (2, 3) or parts[0] not in ("min", "max") or not all(p.isdigit() for p in parts[1:]):
        raise ConfigError(f"--policies {policy!r}: expected TYPE:SIDE or TYPE:SIDE:CAP with TYPE min or max "
                          "(e.g. max:1280, min:736:2000).")
    out = [f"det.limit_type={parts[0]}", f"det.limit_side_len={parts[1]}"]
    cap = parts[2] if len(parts) == 3 else max_side_len
    if cap is not None:
        out.append(f"det.max_side_len={cap}")
    return tuple(out)


def tile_overrides(tile: str) -> tuple[str, ...]:
    """``"320:64"`` → (det.tile_height=320, det.tile_overlap=64); ``"0"`` → the whole page at once."""
    height, _, overlap = tile.partition(":")
    if not height.isdigit() or (overlap and not overlap.isdigit()):
        raise ConfigError(f"--tiles {tile!r}: expected HEIGHT:OVERLAP in rows (e.g. 320:64), or 0 for the whole page.")
    return (f"det.tile_height={height}", *([f"det.tile_overlap={overlap}"] if overlap else []))


def variants(base: ReaderSpec, policies: list[str], max_side_len: int | None, rec_batch: list[int],
             rec_min_width: list[int], tiles: Sequence[str] = (), combos: Sequence[str] = ()) -> dict[str, ReaderSpec]:
    """The rows: the models' own settings first, then one knob changed per row, then each combination."""
    rows = {OWN: base}
    for policy in policies:
        rows[f"det {policy}"] = ReaderSpec(f"det {policy}", base.bundle, base.det, base.rec,
                                           policy_overrides(policy, max_side_len))
    for tile in tiles:
        rows[f"det tiles {tile}"] = ReaderSpec(f"det tiles {tile}", base.bundle, base.det, base.rec,
                                               tile_overrides(tile))
    for n in rec_batch:
        rows[f"rec batch {n}"] = ReaderSpec(f"rec batch {n}", base.bundle, base.det, base.rec, (f"rec.batch_size={n}",))
    for w in rec_min_width:
        rows[f"rec min_width {w}"] = ReaderSpec(f"rec min_width {w}", base.bundle, base.det, base.rec,
                                                (f"rec.min_width={w}",))
    for combo in combos:
        keys = tuple(k.strip() for k in combo.split(",") if k.strip())
        try:  # checked here, with the runtime's own override parser, not in each measuring process
            if not keys:
                raise ConfigError("no KEY=VALUE given")
            with_overrides(DetConfig(), "det", keys)
            with_overrides(RecConfig(), "rec", keys)
        except ConfigError as e:
            raise ConfigError(f"--combo {combo!r}: {e} Pairs are separated by commas "
                              "(e.g. det.tile_height=256,rec.batch_size=1).") from None
        rows[combo] = ReaderSpec(combo, base.bundle, base.det, base.rec, keys)
    return rows


def table(result: dict[str, Any], key: str, threads: int) -> str:
    """Markdown: one row per variant, differences to ``own``."""
    def f(v: Any, fmt: str) -> str:
        return "–" if v is None else format(v, fmt)

    own = result.get(OWN, {}).get(key, {})
    own_p50 = own.get(f"t{threads}", {}).get("p50_ms")
    lines = ["| variant | det hmean | e2e F1 | Δ e2e F1 (points) | p50 ms | p90 ms | pages/s | peak RSS MB | "
             "lines/page | p50 vs own |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, entry in result.items():
        rows = entry.get(key)
        if not rows:
            continue
        t = rows.get(f"t{threads}", {})
        d_f1 = 100 * (rows["e2e_f1"] - own["e2e_f1"]) if "e2e_f1" in rows and "e2e_f1" in own else None
        speed = own_p50 / t["p50_ms"] if own_p50 and t.get("p50_ms") else None
        lines.append(f"| {name} | {f(rows.get('det_hmean'), '.3f')} | {f(rows.get('e2e_f1'), '.3f')} | "
                     f"{f(d_f1, '+.1f')} | {f(t.get('p50_ms'), '.0f')} | {f(t.get('p90_ms'), '.0f')} | "
                     f"{f(t.get('pages_per_s'), '.2f')} | {f(t.get('peak_rss_mb'), '.0f')} | "
                     f"{f(rows.get('lines_per_page'), '.1f')} | {f(speed, '.2f')}× |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--bundle", help="bundle directory (manifest.json)")
    p.add_argument("--det", help="det model (zoo name, .onnx, .mnn) instead of a bundle")
    p.add_argument("--rec", help="rec model (zoo name, .onnx, .mnn) instead of a bundle")
    p.add_argument("--pages", default="data/splits/sroie_train/det/val.split.json",
                   help="a det set with transcriptions (default: the SROIE training set's validation pages)")
    p.add_argument("--limit", type=int, default=60)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--policies", nargs="*", default=["min:736", "min:640", "max:960", "max:1280", "max:1600"])
    p.add_argument("--max-side-len", type=int, default=None, help="det.max_side_len for every policy (default: own)")
    p.add_argument("--tiles", nargs="*", default=[], help="det strips HEIGHT:OVERLAP to sweep (e.g. 320:64 512:64)")
    p.add_argument("--rec-batch", type=int, nargs="*", default=[], help="rec.batch_size values to sweep")
    p.add_argument("--rec-min-width", type=int, nargs="*", default=[], help="rec.min_width values to sweep")
    p.add_argument("--combo", nargs="*", default=[], help="det./rec. KEY=VALUE,KEY=VALUE: keys changed together")
    p.add_argument("--timeout", type=float, default=BenchConfig().timeout, help="seconds per measuring process")
    p.add_argument("--json", help="write the result (bench.json shape, one entry per variant) here")
    args = p.parse_args(argv)
    if bool(args.bundle) == bool(args.det and args.rec):
        p.error("give --bundle DIR, or --det MODEL and --rec MODEL")
    base = ReaderSpec(OWN, bundle=args.bundle, det=args.det, rec=args.rec)
    specs = variants(base, args.policies, args.max_side_len, args.rec_batch, args.rec_min_width, args.tiles,
                     args.combo)
    cfg = BenchConfig(pages=(args.pages,), limit=args.limit, threads=(args.threads,), timeout=args.timeout)
    result = bench_pages(specs, cfg, keep_going=True)
    print(f"\n{args.pages}: first {args.limit} pages, {args.threads} thread(s), "
          f"{args.bundle or f'{args.det} + {args.rec}'}\n")
    print(table(result, set_name(args.pages), args.threads))
    if args.json:
        write_json(Path(args.json), result)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, threads=None))  # a user error is one line; the measuring processes set their threads
