"""CI metrics diff: what a change did to size, speed and accuracy, compared like against like.

    python -m ocrslim.cidiff [--repo DIR] [--mode auto|base|remote|committed] [--base auto|REV|none]
                             [--remote NAME] [--committed] [--all] [--fail-on RULES] [--out FILE]
                             [--plots DIR] [--keep | --workdir DIR] [override ...]

Everything runs in temporary clones (the repo itself is never written). Modes (``auto`` picks the first that
applies and says which, on stderr and in the heading):

- ``remote`` (a DVC remote is configured: ``dvc remote default`` or ``--remote NAME``): HEAD's clone runs
  ``dvc repro --pull --allow-missing`` on the committed params (the default profile; ``override ...`` are
  composed first when given): only the stages the change touches rerun, pulling from the remote just the
  outputs they need; the workspace is diffed with the metrics committed at the base. When the remote is
  unreachable or lacks outputs of HEAD's ``dvc.lock``, ``auto`` falls back to ``base`` (the section says so).
- ``base`` (HEAD has a base: the merge base with ``main``, or HEAD's parent): the base and HEAD each get
  ``python -m ocrslim.compose profile=tiny <synthetic eval sets> bench.rss=true <override ...>`` and
  ``dvc repro``; HEAD's workspace is diffed with the base's reproduced metrics.
- ``committed``: HEAD reproduced under the tiny profile and diffed with the metrics committed at HEAD
  (which come from the default profile: this proves the DAG runs, not what the change did).

The section (headline table of the shipped bundle, the full ``dvc metrics diff --md`` folded, the plots that
changed) goes to stdout, ``--out`` and ``$GITHUB_STEP_SUMMARY``; ``--fail-on`` rules turn a moved metric
into exit code 3; a failed step exits with that step's code.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ocrslim.core.errors import OcrslimError, ToolError
from ocrslim.eval.diffreport import (
    Diff,
    PlotChange,
    check_rules,
    details,
    headline_table,
    parse_rules,
    plots_block,
    rule_hints,
    table_rows,
    thresholds_block,
)

# The data stage's synthetic test split stands in for the real dev sets (not in CI, and offline by design);
# peak RSS is measured (the tiny profile leaves it off to keep the test suite's DAG run short).
SYNTH_EVAL = ("eval.det_data=[data/synth/det/test]", "eval.rec_data=[data/synth/rec/test]")
TINY_OVERRIDES = ("profile=tiny", *SYNTH_EVAL, "bench.rss=true")
MODES = ("auto", "base", "remote", "committed")
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


class StepFailed(OcrslimError):
    """A pipeline step (compose, dvc repro, metrics diff) exited non-zero; its exit code is kept."""

    def __init__(self, step: str, code: int):
        super().__init__(f"{step}: exited with {code}; its output is above. Fix it, then re-run this script.")
        self.step, self.code = step, code


class RemoteUnusable(OcrslimError):
    """The DVC remote cannot stand in for the base: unreachable, or missing outputs of HEAD's dvc.lock."""


def run_logged(step: str, cmd: Sequence[str], cwd: Path, env: dict[str, str]) -> str:
    """Run ``cmd`` with its output on stderr (as it comes) and return that output; a non-zero exit raises
    :class:`StepFailed` named ``step``."""
    sys.stderr.flush()
    lines = []
    with subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace") as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stderr.write(line)
            lines.append(line)
    sys.stderr.flush()
    if proc.returncode != 0:
        raise StepFailed(step, proc.returncode)
    return "".join(lines)


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


def compose(work: Path, overrides: Sequence[str], env: dict[str, str]) -> None:
    """``python -m ocrslim.compose OVERRIDES`` in ``work`` (rewrites its params.yaml)."""
    run_logged("python -m ocrslim.compose", [sys.executable, "-m", "ocrslim.compose", *overrides], work, env)


def reproduce(repo: Path, work: Path, rev: str, overrides: Sequence[str], env: dict[str, str],
              committed: bool = True) -> str:
    """Clone ``repo`` at ``rev`` into ``work`` (plus uncommitted changes unless ``committed``), compose the
    overrides there and ``dvc repro``; return the commit's sha."""
    sha = clone_checkout(repo, work, committed=committed, rev=rev)
    link_neighbours(repo, work)
    what = "" if committed else " + uncommitted changes"
    print(f"cidiff: {repo.resolve()} at {sha[:7]}{what} -> {work}", file=sys.stderr)
    compose(work, overrides, env)
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
    """The base commit's sha: ``base`` as given (``auto``: the merge base with ``main``, or with ``origin/main``
    in a CI checkout without a local ``main``, when HEAD is on another branch; else HEAD's parent), or None
    when there is none (a root commit)."""
    if base == "auto":
        head = _git(repo, "rev-parse", "HEAD").strip()
        for main in ("main", "origin/main"):
            res = subprocess.run(["git", "-C", str(repo), "merge-base", "HEAD", main], capture_output=True, text=True)
            if res.returncode == 0 and res.stdout.strip():
                if res.stdout.strip() != head:
                    return res.stdout.strip()
                break  # HEAD is main's tip: its parent
        base = "HEAD~1"
    res = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "-q", f"{base}^{{commit}}"],
                         capture_output=True, text=True)
    return res.stdout.strip() or None


# ------------------------------------------------------------------------------------------- DVC remote
@dataclass(frozen=True)
class Remote:
    """A DVC remote of the repository: its name and URL (a local path resolved to an absolute one)."""

    name: str
    url: str


def find_remote(repo: Path, name: str | None = None) -> Remote | None:
    """The remote named ``name``, else the repo's default remote (``dvc remote default``), else None."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        dvc_repo = Repo(str(repo))
    except NotDvcRepoError:
        return None
    try:
        conf = dvc_repo.config
        remotes = conf.get("remote", {})
        chosen = name or conf.get("core", {}).get("remote")
        if not chosen:
            return None
        if chosen not in remotes:
            known = ", ".join(sorted(remotes)) or "none"
            raise OcrslimError(f"--remote {chosen}: {repo} has no such DVC remote (it has: {known}). Add it with "
                               "`dvc remote add`, or name one it has.")
        return Remote(chosen, str(remotes[chosen].get("url", "")))
    finally:
        dvc_repo.close()


def use_remote(repo: Path, work: Path, remote: Remote, env: dict[str, str]) -> None:
    """Make ``remote`` the clone's default remote, reachable from the clone as from the repo: the repo's
    ``.dvc/config.local`` (not in git: credentials, local remotes) is copied, and a local path, which DVC
    resolves against ``.dvc/``, is written absolute."""
    local = repo / ".dvc" / "config.local"
    if local.is_file():
        shutil.copy2(local, work / ".dvc" / "config.local")
    if "://" not in remote.url:
        run_logged("dvc remote modify", dvc_cmd("remote", "modify", "--local", remote.name, "url", remote.url),
                   work, env)
    run_logged("dvc remote default", dvc_cmd("remote", "default", "--local", remote.name), work, env)


def check_remote(work: Path, remote: Remote, env: dict[str, str]) -> None:
    """Raise :class:`RemoteUnusable` unless the remote is reachable and holds every cached output of the
    clone's ``dvc.lock`` (``dvc status --cloud``: ``missing`` = neither in the local cache nor the remote)."""
    res = subprocess.run(dvc_cmd("status", "--cloud", "--json"), cwd=work, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        msg = ([ln for ln in res.stderr.splitlines() if ln.strip()] or ["?"])[-1].strip()
        raise RemoteUnusable(f"DVC remote '{remote.name}' ({remote.url}) cannot be read: {msg}")
    status = json.loads(res.stdout or "{}")
    missing = sorted(p for p, s in status.items() if s == "missing")
    if missing:
        raise RemoteUnusable(f"DVC remote '{remote.name}' lacks {len(missing)} output(s) of HEAD's dvc.lock "
                             f"(e.g. {missing[0]}); run `dvc repro` and `dvc push` on main so the remote holds "
                             "the base's outputs")


_RAN = re.compile(r"^Running stage '([^']+)'", re.M)
_SKIPPED = re.compile(r"^Stage '([^']+)' didn't change, skipping", re.M)


def stages_of(repro_output: str) -> tuple[list[str], list[str]]:
    """(stages run, stages skipped as unchanged) from ``dvc repro`` output, in order."""
    return _RAN.findall(repro_output), _SKIPPED.findall(repro_output)


# -------------------------------------------------------------------------------------------- the diff
@dataclass
class DiffResult:
    """What :func:`ci_diff` found: the comparison made, dvc's table and parsed diff, the plots that changed."""

    mode: str
    heading: str
    table: str
    diff: Diff
    notes: list[str] = field(default_factory=list)
    plots: list[PlotChange] = field(default_factory=list)
    host_note: str = ""
    ran: list[str] | None = None  # remote mode: the stages rerun here

    def section(self, images: bool = True, plots_where: str = "", thresholds: str = "") -> str:
        """The Markdown section: heading, notes, headline table, the full diff folded, plots, thresholds."""
        parts = [self.heading, *self.notes]
        headline = headline_table(self.diff, host_note=self.host_note)
        if headline:
            parts.append(headline)
        rows = table_rows(self.table)
        if rows:
            parts.append(details(f"All changed metrics: <code>dvc metrics diff --md</code> ({rows} rows)",
                                 self.table))
        else:
            parts.append("No metric changed (`dvc metrics diff` is empty).")
        block = plots_block(self.plots, images, plots_where)
        if block:
            parts.append(block)
        if thresholds:
            parts.append(thresholds)
        return "\n\n".join(parts) + "\n"


def plots_changed(work: Path, rev: str, env: dict[str, str], dest: Path | None) -> tuple[list[PlotChange], str]:
    """Image plots (``dvc.yaml`` ``plots:``) that differ between ``rev`` and the workspace of ``work``, by
    ``dvc plots diff --json --out``; with ``dest``, each pair is copied there as ``<name>.before.png`` /
    ``<name>.after.png``. Returns the changes and a note (non-empty when dvc could not render them)."""
    render = work.parent / f"{work.name}-plots"
    res = subprocess.run(dvc_cmd("plots", "diff", rev, "--json", "--out", str(render)), cwd=work, env=env,
                         capture_output=True, text=True)
    if res.returncode != 0:
        sys.stderr.write(res.stdout + res.stderr)
        return [], f"`dvc plots diff` exited with {res.returncode}; its output is in the log."
    changes = []
    for path, items in sorted(json.loads(res.stdout or "{}").get("data", {}).items()):
        sides: dict[str, Path] = {}
        for item in items:
            if item.get("type") == "image" and item.get("url"):
                sides["after" if "workspace" in item.get("revisions", []) else "before"] = Path(item["url"])
        if not sides:
            continue  # vega plots (dvclive curves) are not in git, so they have no base side to compare
        before, after = sides.get("before"), sides.get("after")
        if before and after and before.read_bytes() == after.read_bytes():
            continue
        copied: dict[str, str | None] = {"before": None, "after": None}
        if dest is not None:
            dest.mkdir(parents=True, exist_ok=True)
            stem = re.sub(r"[^\w.-]+", "_", Path(path).with_suffix("").as_posix())
            for side, src in sides.items():
                target = dest / f"{stem}.{side}{src.suffix}"
                shutil.copy2(src, target)
                copied[side] = str(target)
        changes.append(PlotChange(path, copied["before"], copied["after"]))
    return changes, ""


def choose_mode(mode: str, base_sha: str | None, remote: Remote | None) -> tuple[str, str]:
    """The mode to run and why (``auto``: remote if configured, else base if there is one, else committed)."""
    if mode == "remote" and remote is None:
        raise OcrslimError("--mode remote: no DVC remote configured. Pass --remote NAME, or set one with "
                           "`dvc remote add -d NAME URL`.")
    if mode == "base" and base_sha is None:
        raise OcrslimError("--mode base: HEAD has no base commit (no parent, no merge base with main). Pass "
                           "--base REV, or --mode committed.")
    if mode != "auto":
        return mode, f"--mode {mode}"
    if remote is not None:
        return "remote", f"auto: DVC remote '{remote.name}' is configured"
    if base_sha is not None:
        return "base", "auto: no DVC remote configured, HEAD has a base commit"
    return "committed", "auto: no DVC remote configured and no base commit"


def ci_diff(repo: Path, work: Path, overrides: Sequence[str] = (), mode: str = "auto", committed: bool = False,
            all_metrics: bool = False, base: str | None = "auto", remote_name: str | None = None,
            plots_dir: Path | None = None) -> DiffResult:
    """Run the comparison of ``mode`` (see the module docstring) in clones under ``work``.

    ``overrides`` come after the tiny profile's in ``base``/``committed`` mode; in ``remote`` mode they are
    composed alone (none: the committed params.yaml as it is). ``base``: ``auto``, a revision, or None
    (compare with HEAD's committed metrics)."""
    env = tool_env()
    base_sha = resolve_base(repo, base) if base else None
    remote = find_remote(repo, remote_name) if mode in ("auto", "remote") else None
    mode_used, why = choose_mode(mode, base_sha, remote)
    print(f"cidiff: mode {mode_used} ({why})", file=sys.stderr)
    notes = [f"_Mode `{mode_used}` ({why})._"]
    if mode_used == "remote":
        assert remote is not None
        try:
            return _remote_diff(repo, work, overrides, remote, base_sha, env, committed, all_metrics, plots_dir,
                                notes)
        except RemoteUnusable as exc:
            if mode != "auto":
                raise
            mode_used = "base" if base_sha is not None else "committed"
            note = f"{exc}; fell back to mode `{mode_used}`."
            print(f"cidiff: {note}", file=sys.stderr)
            notes.append(note)
    return _reproduced_diff(repo, work, [*TINY_OVERRIDES, *overrides], base_sha if mode_used == "base" else None,
                            env, committed, all_metrics, plots_dir, notes)


def _finish(work: Path, rev: str, env: dict[str, str], all_metrics: bool, plots_dir: Path | None,
            result: DiffResult, name: str = "") -> DiffResult:
    """Diff ``work``'s workspace with ``rev`` (tagged ``name`` in the clone, so dvc's table names it)."""
    if name:
        _git(work, "tag", "-f", name, rev)
        rev = name
    result.table = metrics_diff(work, env, rev, all_metrics)
    result.diff = json.loads(metrics_diff(work, env, rev, True, "--json") or "{}")
    result.plots, plot_note = plots_changed(work, rev, env, plots_dir)
    if plot_note:
        result.notes.append(plot_note)
    print(f"cidiff: {result.heading.lstrip('# ')}", file=sys.stderr)
    return result


def _reproduced_diff(repo: Path, work: Path, overrides: Sequence[str], base_sha: str | None, env: dict[str, str],
                     committed: bool, all_metrics: bool, plots_dir: Path | None, notes: list[str]) -> DiffResult:
    """Modes ``base`` (``base_sha`` given) and ``committed``: both sides (or HEAD alone) reproduced here."""
    head_work = work / "head"
    if base_sha is not None:
        try:
            reproduce(repo, work / "base", base_sha, overrides, env)
        except StepFailed as exc:
            if exc.code < 0:  # killed by a signal (a cancelled job, the OOM killer): not the base's fault
                raise
            note = (f"The base {base_sha[:7]} did not reproduce under these overrides (`{exc.step}` exited with "
                    f"{exc.code}; its output is in the job log); fell back to mode `committed`: the metrics "
                    "committed at HEAD.")
            print(f"cidiff: {note}", file=sys.stderr)
            notes.append(note)
            base_sha = None
    sha = reproduce(repo, head_work, "HEAD", overrides, env, committed=committed)
    shown = f"`{' '.join(overrides)}` at {sha[:7]}"
    if base_sha is not None:
        rev = record_base(work / "base", head_work, env)
        heading = f"### Metrics diff, mode `base`: {shown} vs base {base_sha[:7]}, both reproduced here"
        host = "Both sides ran one after the other on this runner."
        return _finish(head_work, rev, env, all_metrics, plots_dir,
                       DiffResult("base", heading, "", {}, notes, host_note=host), f"base-{base_sha[:7]}")
    heading = f"### Metrics diff, mode `committed`: {shown} vs the metrics committed at HEAD"
    notes.append("The committed metrics come from the default profile, so every value differs from a tiny run: "
                 "this shows the DAG runs, not what the change did.")
    return _finish(head_work, "HEAD", env, all_metrics, plots_dir,
                   DiffResult("committed", heading, "", {}, notes, host_note="Before: where the metrics were made."))


def _remote_diff(repo: Path, work: Path, overrides: Sequence[str], remote: Remote, base_sha: str | None,
                 env: dict[str, str], committed: bool, all_metrics: bool, plots_dir: Path | None,
                 notes: list[str]) -> DiffResult:
    """Mode ``remote``: HEAD's clone reruns only the stages the change touches (``dvc repro --pull
    --allow-missing`` pulls just the outputs they need) and is diffed with the base's committed metrics."""
    head_work = work / "remote-head"
    sha = clone_checkout(repo, head_work, committed=committed)
    link_neighbours(repo, head_work)
    what = "" if committed else " + uncommitted changes"
    print(f"cidiff: {repo.resolve()} at {sha[:7]}{what} -> {head_work}", file=sys.stderr)
    use_remote(repo, head_work, remote, env)
    if overrides:
        compose(head_work, overrides, env)
    check_remote(head_work, remote, env)
    out = run_logged("dvc repro", dvc_cmd("repro", "--pull", "--allow-missing"), head_work, env)
    ran, skipped = stages_of(out)
    params = f"`{' '.join(overrides)}`" if overrides else "the committed params.yaml"
    against = f"base {base_sha[:7]}'s committed metrics" if base_sha else "the metrics committed at HEAD"
    heading = f"### Metrics diff, mode `remote`: {params} at {sha[:7]} vs {against}"
    notes.append(f"Stages rerun here: {', '.join(ran) or 'none'} ({len(ran)} of {len(ran) + len(skipped)}); "
                 f"unchanged, outputs from DVC remote `{remote.name}` where needed: {', '.join(skipped) or 'none'}.")
    host = "Before: measured where the base's metrics were made, after: here (for stages rerun here)."
    return _finish(head_work, base_sha or "HEAD", env, all_metrics, plots_dir,
                   DiffResult("remote", heading, "", {}, notes, host_note=host, ran=ran),
                   f"base-{base_sha[:7]}" if base_sha else "")


def _write(dest: str, text: str) -> None:
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "a", encoding="utf-8") as fh:
        fh.write(text + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ocrslim.cidiff", description=__doc__.strip().splitlines()[0])
    p.add_argument("overrides", nargs="*", help="Hydra overrides: after the tiny profile's (modes base, committed), "
                   "or alone (mode remote; none: the committed params.yaml)")
    p.add_argument("--repo", default=".", help="repository to test (default: .)")
    p.add_argument("--mode", choices=MODES, default="auto",
                   help="auto (default): remote if a DVC remote is configured, else base, else committed")
    p.add_argument("--base", default="auto",
                   help="commit to compare against (default auto: the merge base with main, or HEAD's parent on "
                        "main); 'none': HEAD's committed metrics")
    p.add_argument("--remote", help="DVC remote holding the base's outputs (default: `dvc remote default`)")
    p.add_argument("--committed", action="store_true", help="HEAD only: leave uncommitted changes out")
    p.add_argument("--all", action="store_true", help="list unchanged metrics too in the full table")
    p.add_argument("--fail-on", default="", help="fail (exit 3) when a metric moves past a limit, e.g. "
                   "'bundle.e2e_f1<-1pt,bundle.size_mb>+5%%' (off by default)")
    p.add_argument("--out", help="also write the Markdown section to this file (appended)")
    p.add_argument("--plots", help="copy the plots that changed here, linked from --out (default: "
                   "<out without .md>-plots/ next to it; without --out they are only named)")
    p.add_argument("--keep", action="store_true", help="keep the temporary clones (their path is printed)")
    p.add_argument("--workdir", help="clone here instead of a temporary folder (must not exist; kept)")
    args = p.parse_args(argv)
    rules = parse_rules(args.fail_on)
    if args.workdir and Path(args.workdir).exists():
        raise OcrslimError(f"{args.workdir}: already exists. Pass --workdir a new path.")
    plots_dir = Path(args.plots) if args.plots else (
        Path(args.out).with_name(Path(args.out).stem + "-plots") if args.out else None)
    tmp = None if args.workdir else Path(tempfile.mkdtemp(prefix="ocrslim-cidiff-"))
    work = Path(args.workdir) if args.workdir else tmp / "work"
    work.mkdir(parents=True)
    try:
        result = ci_diff(Path(args.repo), work, args.overrides, mode=args.mode, committed=args.committed,
                         all_metrics=args.all, base=None if args.base == "none" else args.base,
                         remote_name=args.remote, plots_dir=plots_dir.resolve() if plots_dir else None)
    except StepFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    finally:
        if tmp is not None and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"cidiff: clones kept in {work}", file=sys.stderr)
    broken = check_rules(result.diff, rules)
    hints = rule_hints(result.diff, rules)
    for hint in hints:
        print(f"cidiff: {hint}", file=sys.stderr)
    verdict = thresholds_block(args.fail_on, broken, hints, len(rules)) if rules else ""
    if args.out and plots_dir is not None:  # image links relative to the report file
        base_dir = Path(args.out).resolve().parent
        result.plots = [PlotChange(c.path, *(os.path.relpath(f, base_dir) if f else None for f in (c.before, c.after)))
                        for c in result.plots]
    where = f"`{plots_dir}`" if plots_dir is not None else ""
    section = result.section(images=False, plots_where=where, thresholds=verdict)
    print(section, end="")
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        _write(os.environ["GITHUB_STEP_SUMMARY"], section)
    if args.out:
        _write(args.out, result.section(images=plots_dir is not None, thresholds=verdict))
    if broken:
        print(f"error: {len(broken)} --fail-on rule(s) broken: {broken[0]}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    from ocrslim.stage import run_main

    sys.exit(run_main(main))
