"""Ordered parallel map over forked worker processes that inherit the parent's state instead of unpickling it.

The synthetic data's state (a 450k-word corpus, font tables) costs seconds to pickle per task; forked
workers share it copy-on-write. The state is handed over through this module's ``_WORK`` slot, set in the
parent just before the fork and cleared after, so nothing else reads it.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import cv2
from tqdm import tqdm

__all__ = ["imap_forked"]

J = TypeVar("J")
R = TypeVar("R")

_WORK: tuple[Callable[[Any, Any], Any], Any] | None = None


def _one_thread() -> None:
    cv2.setNumThreads(1)  # one process per core: OpenCV's own threads would oversubscribe


def _call(job: Any) -> Any:
    assert _WORK is not None  # set in the parent before the fork
    fn, state = _WORK
    return fn(state, job)


def imap_forked(fn: Callable[[Any, J], R], state: Any, jobs: Sequence[J], workers: int, desc: str) -> Iterator[R]:
    """``fn(state, job)`` for each job, results in job order, on ``workers`` forked processes (with a progress bar).

    With one worker (or one job) everything runs in this process.
    """
    global _WORK
    workers = min(workers, max(1, len(jobs)))
    bar = tqdm(total=len(jobs), desc=desc, unit="img", leave=False, mininterval=1.0)
    try:
        if workers == 1:
            _one_thread()
            for job in jobs:
                yield fn(state, job)
                bar.update()
            return
        _WORK = (fn, state)
        with multiprocessing.get_context("fork").Pool(workers, _one_thread) as pool:
            for res in pool.imap(_call, jobs, chunksize=8):
                yield res
                bar.update()
    finally:
        _WORK = None
        bar.close()
