"""CI metrics diff: the tiny DAG reproduced in a temporary clone, then ``dvc metrics diff --md`` against HEAD.

    python -m ocrslim.cidiff [--repo DIR] [--committed] [--all] [--keep | --workdir DIR] [override ...]

In a clone of the checkout (HEAD plus uncommitted changes unless ``--committed``; the repo itself is never
written): ``python -m ocrslim.compose profile=tiny <synthetic eval sets> <override ...>``, ``dvc repro``, and
``dvc metrics diff --md HEAD``. The table goes to stdout and is appended to ``$GITHUB_STEP_SUMMARY`` when set;
dvc's progress goes to stderr. A failed step exits with that step's code.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ocrslim.core.errors import OcrslimError, ToolError

# The data stage's synthetic test split stands in for the real dev sets (not in CI, and offline by design).
SYNTH_EVAL = ("eval.det_data=[data/synth/det/test]", "eval.rec_data=[data/synth/rec/test]")
TINY_OVERRIDES = ("profile=tiny", *SYNTH_EVAL)
_GIT_ID = {"GIT_AUTHOR_NAME": "ocrslim-ci", "GIT_AUTHOR_EMAIL": "ci@ocrslim.invalid",
           "GIT_COMMITTER_NAME": "ocrslim-ci", "GIT_COMMITTER_EMAIL": "ci@ocrslim.invalid"}


def tool_env() -> dict[str, str]:
    """Environment for dvc/git children: no usage reporting, unbuffered output, a git identity if none is set."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DO_NOT_TRACK": "1", "PYTHONUNBUFFERED": "1"}
    has_id = subprocess.run(["git", "config", "user.email"], capture_output=True, text=True).stdout.strip()
    if not has_id:
        env = {**_GIT_ID, **env}
    return env


def dvc_cmd(*args: str) -> list[str]:
    """``dvc ARGS`` run by this interpreter (no need for a ``dvc`` script on PATH)."""
    return [sys.executable, "-m", "dvc", *args]


def _git(repo: Path, *args: str) -> str:
    res = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if res.returncode != 0:
        msg = (res.stderr.strip().splitlines() or ["?"])[-1]
        raise ToolError(f"{repo}: git {args[0]} failed: {msg}. Pass --repo the root of a git repository.")
    return res.stdout


def clone_checkout(repo: str | Path, dest: str | Path, committed: bool = False, rev: str = "HEAD") -> str:
    """Clone ``repo`` at ``rev`` into ``dest``, plus its uncommitted changes (unless ``committed``); return the sha."""
    repo, dest = Path(repo).resolve(), Path(dest)
    sha = _git(repo, "rev-parse", "--verify", f"{rev}^{{commit}}").strip()
    _git(repo, "clone", "-q", "--no-checkout", str(repo), str(dest.resolve()))
    _git(dest, "checkout", "-q", "--detach", sha)
    if not committed:
        deleted = set(_git(repo, "ls-files", "-z", "--deleted").split("\0")) - {""}
        changed = set(_git(repo, "ls-files", "-z", "--modified", "--others", "--exclude-standard").split("\0"))
        for rel in deleted:
            (dest / rel).unlink(missing_ok=True)
        for rel in sorted(changed - deleted - {""}):
            if (repo / rel).is_file():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(repo / rel, dest / rel)
    return sha


def run_logged(step: str, cmd: Sequence[str], cwd: Path, env: dict[str, str]) -> None:
    """Run ``cmd`` with its output on stderr; a non-zero exit raises :class:`StepFailed` named ``step``."""
    sys.stderr.flush()
    rc = subprocess.run(list(cmd), cwd=cwd, env=env, stdout=sys.stderr, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise StepFailed(step, rc)


class StepFailed(OcrslimError):
    """A pipeline step (compose, dvc repro, metrics diff) exited non-zero; its exit code is kept."""

    def __init__(self, step: str, code: int):
        super().__init__(f"{step}: exited with {code}; its output is above. Fix it, then re-run this script.")
        self.code = code


def format_summary(table: str, sha: str, overrides: Sequence[str]) -> str:
    """Markdown section: a heading naming HEAD and the overrides, then dvc's table (or a line if it is empty)."""
    head = f"### Metrics: `{' '.join(overrides)}` vs HEAD ({sha[:7]})"
    body = table.strip() or "No metric changed against HEAD."
    return f"{head}\n\n{body}\n"


def metrics_diff(work: Path, env: dict[str, str], all_metrics: bool = False) -> str:
    """``dvc metrics diff --md HEAD`` in ``work`` (workspace against HEAD's committed metrics)."""
    cmd = dvc_cmd("metrics", "diff", "--md", *(["--all"] if all_metrics else []), "HEAD")
    res = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        sys.stderr.write(res.stdout + res.stderr)
        raise StepFailed("dvc metrics diff", res.returncode)
    return res.stdout


def ci_diff(repo: Path, work: Path, overrides: Sequence[str], committed: bool = False,
            all_metrics: bool = False) -> str:
    """Clone, compose, ``dvc repro`` and diff; return the Markdown section."""
    env = tool_env()
    sha = clone_checkout(repo, work, committed=committed)
    what = "" if committed else " + uncommitted changes"
    print(f"cidiff: {repo.resolve()} at {sha[:7]}{what} -> {work}", file=sys.stderr)
    run_logged("python -m ocrslim.compose", [sys.executable, "-m", "ocrslim.compose", *overrides], work, env)
    run_logged("dvc repro", dvc_cmd("repro"), work, env)
    return format_summary(metrics_diff(work, env, all_metrics), sha, overrides)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ocrslim.cidiff", description=__doc__.strip().splitlines()[0])
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides after the defaults (later ones win)")
    p.add_argument("--repo", default=".", help="repository to test (default: .)")
    p.add_argument("--committed", action="store_true", help="HEAD only: leave uncommitted changes out")
    p.add_argument("--all", action="store_true", help="list unchanged metrics too")
    p.add_argument("--keep", action="store_true", help="keep the temporary clone (its path is printed)")
    p.add_argument("--workdir", help="clone here instead of a temporary folder (must not exist; kept)")
    args = p.parse_args(argv)
    overrides = [*TINY_OVERRIDES, *args.overrides]
    if args.workdir and Path(args.workdir).exists():
        raise OcrslimError(f"{args.workdir}: already exists. Pass --workdir a new path.")
    tmp = None if args.workdir else Path(tempfile.mkdtemp(prefix="ocrslim-cidiff-"))
    work = Path(args.workdir) if args.workdir else tmp / "repo"
    try:
        section = ci_diff(Path(args.repo), work, overrides, committed=args.committed, all_metrics=args.all)
    except StepFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    finally:
        if tmp is not None and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp is not None or args.workdir:
            print(f"cidiff: clone kept at {work}", file=sys.stderr)
    print(section, end="")
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as fh:
            fh.write(section + "\n")
    return 0


if __name__ == "__main__":
    from ocrslim.stage import run_main

    sys.exit(run_main(main))
