"""DAG timings in a temporary clone: cold ``dvc repro`` per stage, no-op ``dvc repro``, and one experiment's reruns.

    python benchmarks/bench_dag.py [--repo DIR] [--rev HEAD] [--profile tiny|default] [--set prune.ratio=0.3]
                                   [--eval synth|real] [--workdir DIR] [--cache DIR] [--no-exp]
                                   [--out reports/bench_dag.json] [--keep]

Clones the repo at a commit (HEAD; uncommitted changes are left out), composes ``profile=<profile>`` with the data
stage's synthetic test split as evaluation sets (no network, no ../shared), then times: a cold ``dvc repro``,
a second ``dvc repro`` (should run nothing), and ``dvc exp run -S <set>`` (which stages rerun, and for how
long). ``--profile tiny`` takes minutes; ``--profile default`` is the full-size DAG, about 30 min on 2 cores.
A stage's time runs from its "Running stage" line to its "Updating lock file" line (or the next stage's
line), so it includes dvc hashing and caching the stage's outputs.

``--eval real`` keeps the configured dev sets (``../shared``, linked beside the clone, as the training
sets are). ``--cache DIR`` points the clone's DVC cache there (e.g. the repo's ``.dvc/cache``): a later
``dvc checkout`` in the repo, with the clone's ``dvc.lock``, then restores the benchmarked run's outputs.
``--no-exp`` skips the experiment run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ocrslim.cidiff import SYNTH_EVAL, clone_checkout, dvc_cmd, tool_env
from ocrslim.core.errors import ConfigError, ToolError
from ocrslim.stage import run_main

_RUNNING = re.compile(r"^Running stage '([^']+)'")
_SKIPPED = re.compile(r"^Stage '([^']+)' (?:didn't change|is cached)")
_LOCKED = re.compile(r"^(?:Updating|Generating) lock file")


def timed_dvc(args: list[str], cwd: Path, env: dict[str, str], log: Path, label: str) -> dict:
    """Run ``dvc ARGS``; return total seconds, per-stage seconds (in run order) and the stages skipped."""
    stages: dict[str, float] = {}
    skipped: list[str] = []
    current, started = None, 0.0
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.Popen(dvc_cmd(*args), cwd=cwd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        assert proc.stdout is not None
        for line in proc.stdout:
            now = time.perf_counter()
            fh.write(line)
            run, skip, locked = _RUNNING.match(line), _SKIPPED.match(line), _LOCKED.match(line)
            if (run or skip or locked) and current is not None:
                stages[current] = now - started
                current = None
            if run:
                current, started = run.group(1), now
                print(f"  [{label}] {current}", file=sys.stderr)
            elif skip:
                skipped.append(skip.group(1))
        rc = proc.wait()
    end = time.perf_counter()
    if current is not None:
        stages[current] = end - started
    if rc != 0:
        sys.stderr.writelines(log.read_text(encoding="utf-8").splitlines(keepends=True)[-30:])
        raise ToolError(f"dvc {args[0]}: exited with {rc}; its last lines are above, the whole log is {log}. "
                        "Fix the stage, commit, and re-run.")
    return {"total_s": round(end - t0, 2), "stages": {k: round(v, 2) for k, v in stages.items()},
            "skipped": skipped}


def bench(repo: Path, work: Path, profile: str, sets: list[str], rev: str = "HEAD", *, real_eval: bool = False,
          cache: Path | None = None, exp: bool = True) -> dict:
    """Clone, compose and time the three runs; the result is what ``--out`` writes."""
    env = tool_env()
    sha = clone_checkout(repo, work, committed=True, rev=rev)
    if cache is not None:
        subprocess.run(dvc_cmd("cache", "dir", str(cache.resolve())), cwd=work, env=env, check=True)
    overrides = [f"profile={profile}", *([] if real_eval else SYNTH_EVAL)]
    if not (work.parent / "shared").exists() and (repo.parent / "shared").is_dir():
        # the training sets (split stage) and, with --eval real, the dev sets are read by path from ../shared
        (work.parent / "shared").symlink_to(repo.parent / "shared")
    res = subprocess.run([sys.executable, "-m", "ocrslim.compose", *overrides], cwd=work, env=env,
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise ToolError(f"ocrslim.compose {' '.join(overrides)}: {res.stderr.strip()[-500:]}. Check conf/.")
    logs = work.parent
    print(f"bench_dag: {repo} at {sha[:7]}, profile {profile}, in {work}", file=sys.stderr)
    cold = timed_dvc(["repro"], work, env, logs / "cold.log", "cold")
    noop = timed_dvc(["repro"], work, env, logs / "noop.log", "no-op")
    # DVC composes params.yaml from conf/ for an experiment: repeat the profile's overrides, then the change.
    exp_args = ["exp", "run", *[a for o in [*overrides, *sets] for a in ("-S", o)]]
    exp_run = timed_dvc(exp_args, work, env, logs / "exp.log", "exp") if exp else {"total_s": 0.0, "stages": {}}
    dvc_version = subprocess.run(dvc_cmd("--version"), capture_output=True, text=True, env=env).stdout.strip()
    return {
        "repo": str(repo), "commit": sha, "profile": profile, "overrides": overrides, "set": sets,
        "dvc": dvc_version, "python": platform.python_version(), "cpus": os.cpu_count(),
        "cold": cold, "noop": noop, "exp": exp_run, "cpu_minutes_cold": _cpu_minutes(work),
    }


def _cpu_minutes(work: Path) -> dict[str, float]:
    """CPU minutes of the training stages, from the untracked timing logs the distill/qat stages write."""
    out = {}
    for f in sorted((work / "logs").glob("*.json")):
        try:
            cpu = json.loads(f.read_text(encoding="utf-8")).get("cpu_seconds")
        except (OSError, ValueError):
            continue
        if isinstance(cpu, (int, float)):
            out[f.stem] = round(cpu / 60, 2)
    return out


def table(result: dict) -> str:
    """Per-stage cold and rerun times, then the totals."""
    cold, exp = result["cold"]["stages"], result["exp"]["stages"]
    names = list(cold) + [s for s in exp if s not in cold]
    width = max([len(n) for n in names] + [5])
    change = " ".join(result["set"])
    lines = [f"{'stage':{width}s}  {'cold s':>8s}  {'exp s':>8s}", "-" * (width + 20)]
    for n in names:
        c = f"{cold[n]:8.1f}" if n in cold else f"{'-':>8s}"
        e = f"{exp[n]:8.1f}" if n in exp else f"{'-':>8s}"
        lines.append(f"{n:{width}s}  {c}  {e}")
    noop_ran = list(result["noop"]["stages"])
    lines += [
        "",
        f"cold dvc repro:  {result['cold']['total_s']:8.1f} s  ({len(cold)} stages)",
        f"no-op dvc repro: {result['noop']['total_s']:8.1f} s  "
        + (f"(reran {', '.join(noop_ran)}!)" if noop_ran else "(nothing ran)"),
    ]
    if result["set"]:
        lines.append(f"dvc exp run -S {change}: {result['exp']['total_s']:.1f} s, reran {len(exp)} stage(s): "
                     + (", ".join(exp) or "none"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]), help="repository (its HEAD)")
    p.add_argument("--rev", default="HEAD", help="commit to clone (default HEAD)")
    p.add_argument("--profile", default="tiny", help="conf/profile to compose: tiny (minutes) or default (~30 min)")
    p.add_argument("--set", action="append", dest="sets", help="the experiment's change (default prune.ratio=0.3)")
    p.add_argument("--out", help="write the results as JSON here (e.g. reports/bench_dag.json)")
    p.add_argument("--keep", action="store_true", help="keep the temporary clone and the dvc logs")
    p.add_argument("--eval", choices=("synth", "real"), default="synth",
                   help="evaluation sets: the synthetic test split (default) or the configured dev sets")
    p.add_argument("--workdir", help="an empty folder to clone into (kept); beside the repo for --eval real")
    p.add_argument("--cache", help="the clone's DVC cache directory (e.g. the repo's .dvc/cache)")
    p.add_argument("--no-exp", action="store_true", help="skip the experiment run")
    args = p.parse_args(argv)
    if args.workdir:
        tmp = Path(args.workdir).resolve()
        if tmp.exists() and any(tmp.iterdir()):
            raise ConfigError(f"--workdir {tmp}: not empty. Pass a new or empty folder (the clone goes inside).")
        tmp.mkdir(parents=True, exist_ok=True)
    else:
        tmp = Path(tempfile.mkdtemp(prefix="ocrslim-bench-dag-"))
    keep = args.keep or bool(args.workdir)
    sets = [] if args.no_exp else (args.sets or ["prune.ratio=0.3"])
    try:
        result = bench(Path(args.repo).resolve(), tmp / "repo", args.profile, sets, args.rev,
                       real_eval=args.eval == "real", cache=Path(args.cache) if args.cache else None,
                       exp=not args.no_exp)
    except ToolError:
        keep = True  # the clone and its logs explain the failure
        raise
    finally:
        if keep:
            print(f"bench_dag: clone and logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(table(result))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
