"""CI metrics diff: the change and its base reproduced under the same (tiny) profile, then ``dvc metrics diff``.

    python -m ocrslim.cidiff [--repo DIR] [--base auto|REV|none] [--committed] [--all] [--fail-on RULES]
                             [--out FILE] [--keep | --workdir DIR] [override ...]

In temporary clones (the repo itself is never written): the base commit (``auto``: the merge base with
``main``, or HEAD's parent on main) and HEAD (plus uncommitted changes unless ``--committed``) each get
``python -m ocrslim.compose profile=tiny <synthetic eval sets> <override ...>`` and ``dvc repro``; the
base's metrics are committed in its clone and fetched into HEAD's, and ``dvc metrics diff --md`` compares
HEAD's workspace with them — like against like. With ``--base none``, or when the base does not reproduce
under these overrides (the section says so), HEAD's workspace is compared with the metrics committed at HEAD.
The section goes to stdout, ``--out`` and ``$GITHUB_STEP_SUMMARY``; ``--fail-on`` rules turn a moved metric
into exit code 3; a failed step exits with that step's code.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def link_neighbours(repo: Path, work: Path) -> list[str]:
    """Give the clone the source repo's neighbours that params.yaml points at (``../shared/data/...``), as
    symlinks beside it, so relative data paths resolve in the temporary folder as they do in the repo."""
    params = repo / "params.yaml"
    names = sorted(set(re.findall(r"(?<![\w.])\.\./([^/\s'\"\],]+)", params.read_text()))) if params.is_file() else []
    linked = []
    for name in names:
        src, dst = repo.resolve().parent / name, work.resolve().parent / name
        if src.exists() and not dst.exists():
            dst.symlink_to(src, target_is_directory=src.is_dir())
            linked.append(name)
    return linked


def reproduce(repo: Path, work: Path, rev: str, overrides: Sequence[str], env: dict[str, str],
              committed: bool = True) -> str:
    """Clone ``repo`` at ``rev`` into ``work`` (plus uncommitted changes unless ``committed``), compose the
    overrides there and ``dvc repro``; return the commit's sha."""
    sha = clone_checkout(repo, work, committed=committed, rev=rev)
    link_neighbours(repo, work)
    what = "" if committed else " + uncommitted changes"
    print(f"cidiff: {repo.resolve()} at {sha[:7]}{what} -> {work}", file=sys.stderr)
    run_logged("python -m ocrslim.compose", [sys.executable, "-m", "ocrslim.compose", *overrides], work, env)
    run_logged("dvc repro", dvc_cmd("repro"), work, env)
    return sha


def record_base(base: Path, head: Path, env: dict[str, str]) -> str:
    """Commit the base clone's reproduced metrics and fetch that commit into the head clone; return its sha
    (what ``dvc metrics diff`` compares the head workspace against)."""
    for cmd in (["add", "-A"], ["commit", "-q", "--allow-empty", "-m", "cidiff: base metrics, same profile"]):
        res = subprocess.run(["git", "-C", str(base), *cmd], capture_output=True, text=True, env=env)
        if res.returncode != 0:
            raise ToolError(f"{base}: git {cmd[0]} failed: {res.stderr.strip()}")
    sha = _git(base, "rev-parse", "HEAD").strip()
    res = subprocess.run(["git", "-C", str(head), "fetch", "-q", str(base.resolve()), sha], capture_output=True,
                         text=True, env=env)
    if res.returncode != 0:
        raise ToolError(f"{head}: git fetch of the base metrics failed: {res.stderr.strip()}")
    return sha


@dataclass
class DiffResult:
    """What :func:`ci_diff` found: the Markdown section, the parsed diff and which comparison it made."""

    section: str
    diff: dict[str, dict[str, dict[str, Any]]]
    mode: str


def format_summary(table: str, sha: str, overrides: Sequence[str], against: str = "HEAD",
                   note: str = "") -> str:
    """Markdown section: a heading naming the commits and the overrides, a note, then dvc's table (or a line
    if it is empty)."""
    head = f"### Metrics: `{' '.join(overrides)}` at {sha[:7]} vs {against}"
    body = table.strip() or f"No metric changed against {against}."
    return f"{head}\n\n{note + chr(10) + chr(10) if note else ''}{body}\n"


def metrics_diff(work: Path, env: dict[str, str], rev: str = "HEAD", all_metrics: bool = False,
                 fmt: str = "--md") -> str:
    """``dvc metrics diff <fmt> <rev>`` in ``work`` (the workspace against ``rev``'s metrics)."""
    cmd = dvc_cmd("metrics", "diff", fmt, *(["--all"] if all_metrics else []), rev)
    res = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        sys.stderr.write(res.stdout + res.stderr)
        raise StepFailed("dvc metrics diff", res.returncode)
    return res.stdout


def resolve_base(repo: Path, base: str) -> str | None:
    """The base commit's sha: ``base`` as given (``auto``: the merge base with ``main`` when HEAD is on
    another branch, else HEAD's parent), or None when there is none (a root commit)."""
    if base == "auto":
        main = subprocess.run(["git", "-C", str(repo), "merge-base", "HEAD", "main"], capture_output=True, text=True)
        head = _git(repo, "rev-parse", "HEAD").strip()
        if main.returncode == 0 and main.stdout.strip() and main.stdout.strip() != head:
            return main.stdout.strip()
        base = "HEAD~1"
    res = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "-q", f"{base}^{{commit}}"],
                         capture_output=True, text=True)
    return res.stdout.strip() or None


def ci_diff(repo: Path, work: Path, overrides: Sequence[str], committed: bool = False,
            all_metrics: bool = False, base: str | None = "auto") -> DiffResult:
    """Reproduce the change (and, with ``base``, its base commit) under the same overrides and diff them.

    Modes: ``base``: both sides reproduced here, the head workspace diffed against the base's reproduced
    metrics (like against like: a change that alters no behaviour shows no accuracy or size change);
    ``committed``: the head reproduced and diffed against the metrics committed at HEAD (no base given, or
    the base would not reproduce under these overrides — the section says so)."""
    env = tool_env()
    base_sha = resolve_base(repo, base) if base else None
    note, against, mode = "", "HEAD (committed metrics)", "committed"
    head_work = work / "head"
    if base_sha is not None:
        try:
            reproduce(repo, work / "base", base_sha, overrides, env)
        except StepFailed as exc:
            note = (f"The base {base_sha[:7]} did not reproduce under these overrides ({exc}); compared "
                    "against the metrics committed at HEAD instead.")
            print(f"cidiff: {note}", file=sys.stderr)
            base_sha = None
    sha = reproduce(repo, head_work, "HEAD", overrides, env, committed=committed)
    rev = "HEAD"
    if base_sha is not None:
        rev = record_base(work / "base", head_work, env)
        against, mode = f"base {base_sha[:7]} (same overrides, reproduced here)", "base"
    table = metrics_diff(head_work, env, rev, all_metrics)
    diff = json.loads(metrics_diff(head_work, env, rev, True, "--json") or "{}")
    print(f"cidiff: mode {mode}: {sha[:7]} vs {against}", file=sys.stderr)
    return DiffResult(format_summary(table, sha, overrides, against, note), diff, mode)


_RULE = re.compile(r"^\s*([^<>\s]+)\s*([<>])\s*([+-]?\d+(?:\.\d+)?)(%?)\s*$")


def parse_rules(text: str) -> list[tuple[str, str, float, bool]]:
    """``--fail-on`` rules, comma-separated: ``<metric glob><op><change>[%]``, e.g.
    ``bundle.e2e_f1<-0.01`` (fail when it drops by more than 0.01) or ``bundle.size_mb>+5%`` (fail when it
    grows by more than 5%). The glob matches ``<metric>`` or ``<file>:<metric>`` of the diff."""
    rules = []
    for item in filter(None, (x.strip() for x in text.split(","))):
        m = _RULE.match(item)
        if not m:
            raise OcrslimError(f"--fail-on: {item!r} is not '<metric><op><change>[%]' (e.g. bundle.e2e_f1<-0.01 or "
                               "bundle.size_mb>+5%). Fix the rule.")
        rules.append((m.group(1), m.group(2), float(m.group(3)), m.group(4) == "%"))
    return rules


def check_rules(diff: dict[str, dict[str, dict[str, Any]]], rules: Sequence[tuple[str, str, float, bool]]
                ) -> list[str]:
    """The rules ``diff`` (``dvc metrics diff --json``) breaks, one line each."""
    broken = []
    for glob, op, limit, pct in rules:
        for path, metrics in diff.items():
            for name, row in metrics.items():
                if not (fnmatch.fnmatchcase(name, glob) or fnmatch.fnmatchcase(f"{path}:{name}", glob)):
                    continue
                old, new = row.get("old"), row.get("new")
                if not isinstance(old, (int, float)) or not isinstance(new, (int, float)):
                    continue
                change = round((new - old) / abs(old) * 100 if pct else new - old, 9)  # no float-noise breaks
                if pct and old == 0:
                    continue
                if (op == "<" and change < limit) or (op == ">" and change > limit):
                    unit = "%" if pct else ""
                    broken.append(f"{path}:{name} {old} -> {new} (change {change:+.4g}{unit}) breaks "
                                  f"{glob}{op}{limit:+g}{unit}")
    return broken


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ocrslim.cidiff", description=__doc__.strip().splitlines()[0])
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides after the defaults (later ones win)")
    p.add_argument("--repo", default=".", help="repository to test (default: .)")
    p.add_argument("--base", default="auto",
                   help="commit to compare against, reproduced under the same overrides (default auto: the merge "
                        "base with main, or HEAD's parent on main); 'none': HEAD's committed metrics")
    p.add_argument("--committed", action="store_true", help="HEAD only: leave uncommitted changes out")
    p.add_argument("--all", action="store_true", help="list unchanged metrics too")
    p.add_argument("--fail-on", default="", help="fail when a metric moves past a limit, e.g. "
                   "'bundle.e2e_f1<-0.01,bundle.size_mb>+5%%' (off by default)")
    p.add_argument("--out", help="also write the Markdown section to this file")
    p.add_argument("--keep", action="store_true", help="keep the temporary clones (their path is printed)")
    p.add_argument("--workdir", help="clone here instead of a temporary folder (must not exist; kept)")
    args = p.parse_args(argv)
    rules = parse_rules(args.fail_on)
    overrides = [*TINY_OVERRIDES, *args.overrides]
    if args.workdir and Path(args.workdir).exists():
        raise OcrslimError(f"{args.workdir}: already exists. Pass --workdir a new path.")
    tmp = None if args.workdir else Path(tempfile.mkdtemp(prefix="ocrslim-cidiff-"))
    work = Path(args.workdir) if args.workdir else tmp / "work"
    work.mkdir(parents=True)
    try:
        result = ci_diff(Path(args.repo), work, overrides, committed=args.committed, all_metrics=args.all,
                         base=None if args.base == "none" else args.base)
    except StepFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    finally:
        if tmp is not None and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp is not None or args.workdir:
            print(f"cidiff: clones kept in {work}", file=sys.stderr)
    broken = check_rules(result.diff, rules)
    section = result.section
    if rules:
        verdict = "\n".join(f"- FAIL {b}" for b in broken) or f"- all {len(rules)} --fail-on rules hold"
        section += f"\n**Thresholds** (`{args.fail_on}`):\n\n{verdict}\n"
    print(section, end="")
    for dest in filter(None, (os.environ.get("GITHUB_STEP_SUMMARY"), args.out)):
        with open(dest, "a", encoding="utf-8") as fh:
            fh.write(section + "\n")
    if broken:
        print(f"error: {len(broken)} --fail-on rule(s) broken: {broken[0]}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    from ocrslim.stage import run_main

    sys.exit(run_main(main))
