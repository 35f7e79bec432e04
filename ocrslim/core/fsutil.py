"""Atomic file writes: a killed stage leaves either the old file or the new one, never half."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _remove_stale_temps(dest: Path) -> None:
    """Remove what a killed earlier write of ``dest`` left beside it (``.<name>.<8 random chars>.tmp``): a
    SIGKILL skips the ``finally`` below. Only one process writes a given output at a time (DVC's lock)."""
    stale = re.compile(rf"\.{re.escape(dest.name)}\.[a-z0-9_]{{8}}\.tmp")
    for old in dest.parent.iterdir():
        if stale.fullmatch(old.name) and old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` if the block succeeds.

    Works for files and directories (the block creates whatever it wants at the yielded path).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(dest)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    tmp = tmp_dir / dest.name
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{tmp}: the block did not write its output")
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def write_text(dest: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``dest`` atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(dest: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically."""
    write_text(dest, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes (bundle manifests, integrity checks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
