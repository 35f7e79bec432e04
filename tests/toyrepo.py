"""Toy git + DVC projects for the tests of what drives DVC (select, the CI diff, scale-out): one stage that
writes ``metrics/summary.json`` from params, reproduced and committed, in seconds."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from .conftest import REPO


def toy_env() -> dict[str, str]:
    """dvc/git environment for toy repos: offline, a git identity, ocrslim importable from any cwd."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "DO_NOT_TRACK": "1", "PYTHONPATH": path,
            "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def sh(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``cmd`` in ``cwd`` with :func:`toy_env` (``dvc`` as this interpreter's module); fail with its output."""
    if cmd[0] == "dvc":
        cmd = [sys.executable, "-m", "dvc", *cmd[1:]]
    res = subprocess.run(cmd, cwd=cwd, env=toy_env(), capture_output=True, text=True, timeout=120)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)}: {res.returncode}\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return res


def one_stage_dvc_yaml(name: str, script: str, params: Sequence[str], outs: Sequence[str] = ()) -> str:
    """dvc.yaml of one stage ``python <script>`` that depends on ``script`` and ``params`` and writes the
    (uncached) ``metrics/summary.json`` besides ``outs``."""
    lines = ["stages:", f"  {name}:", f"    cmd: python {script}", f"    deps: [{script}]",
             f"    params: [{', '.join(params)}]"]
    if outs:
        lines.append(f"    outs: [{', '.join(outs)}]")
    lines += ["    metrics:", "      - metrics/summary.json:", "          cache: false", ""]
    return "\n".join(lines)


def init_toy_repo(root: Path, files: Mapping[str, str], setup: Sequence[list[str]] = (),
                  message: str = "toy") -> Path:
    """Write ``files`` (relative path → text) under ``root``, ``git init`` + ``dvc init``, run the ``setup``
    commands (e.g. composing params.yaml), ``dvc repro`` and commit everything. Returns ``root``."""
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    sh(["git", "-c", "init.defaultBranch=main", "init", "-q"], root)
    sh(["dvc", "init", "-q"], root)
    for cmd in setup:
        sh(cmd, root)
    sh(["dvc", "repro", "-q"], root)
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", message], root)
    return root
