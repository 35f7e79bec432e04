"""Helpers shared by the DVC stage entry points in ``stages/``.

Only stages read ``params.yaml`` and ``sys.argv``; everything they call lives in the library.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from ocrslim.core.errors import OcrslimError

# No stage talks to the network: keep DVC/dvclive usage reporting off whatever the user config says.
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run ``main``; an :class:`OcrslimError` becomes one line on stderr and exit code 1."""
    try:
        return main(argv)
    except OcrslimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `ocrslim read ... | head`: the reader left, nothing to report
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def stage_parser(description: str | None) -> argparse.ArgumentParser:
    """Argument parser with the options every stage takes (paths only; settings come from params)."""
    p = argparse.ArgumentParser(description=(description or "").strip().splitlines()[0] if description else None)
    p.add_argument("--params", default="params.yaml", help="composed params file (default: params.yaml)")
    return p


def task_stage_args(description: str | None, argv: list[str] | None, **paths: str) -> argparse.Namespace:
    """Parse a per-task stage's arguments: ``--params``, ``--task det|rec`` and one ``--<name>`` path per keyword.

    Each keyword is the default of that path and may hold ``{task}``; the parsed namespace has every path
    resolved (``args.model`` is ``artifacts/pruned/det.safetensors`` for ``model="artifacts/pruned/{task}..."``).
    """
    p = stage_parser(description)
    p.add_argument("--task", choices=("det", "rec"), required=True)
    for name, default in paths.items():
        shown = default.replace("{task}", "<task>")
        p.add_argument(f"--{name.replace('_', '-')}", default=None, help=f"default: {shown}")
    args = p.parse_args(argv)
    for name, default in paths.items():
        if getattr(args, name) is None:
            setattr(args, name, default.format(task=args.task))
    return args
