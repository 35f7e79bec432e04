"""Helpers shared by the DVC stage entry points in ``stages/``.

Only stages read ``params.yaml`` and ``sys.argv``; everything they call lives in the library.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator

from ocrslim.core.errors import OcrslimError

# No stage talks to the network: keep DVC/dvclive usage reporting off whatever the user config says.
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

# Threads of every stage process, whatever the host's core count: float sums split over threads (torch's
# intra-op reductions, LAPACK, OpenMP in child tools) would otherwise give other bytes on another machine.
# A stage whose params set its own thread count (distill.threads, eval.threads, quantize.threads,
# bench.threads) applies that inside this one; the count is then part of its params.
STAGE_THREADS = 2
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@contextlib.contextmanager
def fixed_threads(n: int = STAGE_THREADS) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads: OpenMP/MKL/OpenBLAS (this process's libraries loaded later,
    and child processes such as MNN's converter and quantizer), torch (if imported, or when it is) and OpenCV;
    the previous settings come back afterwards."""
    env = {k: os.environ.get(k) for k in THREAD_ENV}
    os.environ.update({k: str(n) for k in THREAD_ENV})
    torch = sys.modules.get("torch")
    cv2 = sys.modules.get("cv2")
    torch_before = torch.get_num_threads() if torch is not None else None
    cv2_before = cv2.getNumThreads() if cv2 is not None else None
    if torch is not None:
        torch.set_num_threads(n)
    if cv2 is not None:
        cv2.setNumThreads(n)
    try:
        yield
    finally:
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if torch_before is not None:
            torch.set_num_threads(torch_before)
        if cv2_before is not None:
            cv2.setNumThreads(cv2_before)


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None,
             threads: int | None = STAGE_THREADS) -> int:
    """Run ``main``; an :class:`OcrslimError` becomes one line on stderr and exit code 1.

    Run as a program (``argv`` None: a stage process started by DVC), the block runs under
    :func:`fixed_threads` ``(threads)``, so its results do not depend on the host's core count; ``threads=None``
    (the ``ocrslim`` CLI, which has ``--threads``) or an explicit ``argv`` (a caller in this process, e.g. a
    test) leaves the thread settings alone.
    """
    fix = fixed_threads(threads) if threads is not None and argv is None else contextlib.nullcontext()
    try:
        with fix:
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
