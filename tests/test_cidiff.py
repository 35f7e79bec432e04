"""scripts/ci_metrics_diff.sh on a toy Hydra + DVC repo: the Markdown table, $GITHUB_STEP_SUMMARY, failures.

The toy repo has the real repo's shape (conf/ with a tiny profile and eval sets, composed params.yaml,
committed metrics) and a one-stage pipeline, so the script's clone → compose → repro → diff path runs in
seconds. The real tiny DAG is exercised by tests/test_dag.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ocrslim.cidiff import TINY_OVERRIDES, check_rules, format_summary, parse_rules

from .conftest import REPO
from .test_select import sh, toy_env

CONFIG = """\
defaults:
  - _self_
  - profile: default
data:
  n: 1000
eval:
  det_data: [../shared/data/sroie_dev]
  rec_data: [../shared/data/ic15_words_dev]
toy:
  fail: false
"""
TINY = "# @package _global_\ndata:\n  n: 4\n"
STAGE = """\
import json, pathlib, sys, yaml
p = yaml.safe_load(open("params.yaml"))
if p["toy"]["fail"]:
    sys.exit("toy.fail: stage failed on purpose")
assert p["eval"]["det_data"] == ["data/synth/det/test"] or p["data"]["n"] == 1000, p["eval"]
pathlib.Path("metrics").mkdir(exist_ok=True)
OFFSET = 0.0
m = {"bundle": {"e2e_f1": round(0.5 + p["data"]["n"] / 10000 + OFFSET, 4), "size_mb": 3.0}}
pathlib.Path("metrics/summary.json").write_text(json.dumps(m))
"""
DVC_YAML = """\
stages:
  toy:
    cmd: python stage.py
    deps: [stage.py]
    params: [data, eval, toy]
    metrics:
      - metrics/summary.json:
          cache: false
"""


@pytest.fixture
def toy(tmp_path) -> Path:
    root = tmp_path / "toy"
    (root / "conf" / "profile").mkdir(parents=True)
    (root / "conf" / "config.yaml").write_text(CONFIG)
    (root / "conf" / "profile" / "default.yaml").write_text("# @package _global_\n")
    (root / "conf" / "profile" / "tiny.yaml").write_text(TINY)
    (root / "stage.py").write_text(STAGE)
    (root / "dvc.yaml").write_text(DVC_YAML)
    (root / "scripts").mkdir()
    shutil.copy2(REPO / "scripts" / "ci_metrics_diff.sh", root / "scripts")
    sh(["git", "-c", "init.defaultBranch=main", "init", "-q"], root)
    sh(["dvc", "init", "-q"], root)
    sh([sys.executable, "-m", "ocrslim.compose"], root)
    sh(["dvc", "repro", "-q"], root)
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", "toy"], root)
    return root


def run_script(root: Path, *args: str, summary: Path | None = None) -> subprocess.CompletedProcess:
    env = {**toy_env(), "PYTHON": sys.executable}
    env.pop("GITHUB_STEP_SUMMARY", None)
    if summary is not None:
        env["GITHUB_STEP_SUMMARY"] = str(summary)
    return subprocess.run(["bash", str(root / "scripts" / "ci_metrics_diff.sh"), *args], cwd=root.parent, env=env,
                          capture_output=True, text=True, timeout=120)


def test_format_summary():
    table = ("| Path | Metric | HEAD | workspace | Change |\n|---|---|---|---|---|\n"
             "| m.json | acc | 0.6 | 0.5 | -0.1 |\n")
    out = format_summary(table, "0123456789abcdef", ["profile=tiny"])
    assert out.splitlines()[0] == "### Metrics: `profile=tiny` at 0123456 vs HEAD"
    assert out.splitlines()[2:] == table.strip().splitlines()
    assert format_summary("\n", "0123456", ["x=1"]).splitlines()[2] == "No metric changed against HEAD."


def test_script_diff_table_with_uncommitted_change(toy, tmp_path):
    stage = toy / "stage.py"
    stage.write_text(stage.read_text().replace("OFFSET = 0.0", "OFFSET = 0.1"))  # uncommitted: in the diff
    summary = tmp_path / "step_summary.md"
    summary.write_text("earlier step\n")
    res = run_script(toy, summary=summary)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.strip().splitlines()
    head = sh(["git", "rev-parse", "HEAD"], toy).stdout[:7]
    # one commit, no base: HEAD's workspace against its committed metrics
    assert lines[0] == f"### Metrics: `{' '.join(TINY_OVERRIDES)}` at {head} vs HEAD (committed metrics)"
    assert lines[2].replace(" ", "") == "|Path|Metric|HEAD|workspace|Change|"
    row = next(ln for ln in lines if "bundle.e2e_f1" in ln).replace(" ", "")
    assert row == "|metrics/summary.json|bundle.e2e_f1|0.6|0.6004|0.0004|"  # n 1000 -> 4, offset +0.1
    assert "size_mb" not in res.stdout  # unchanged metrics are left out (pass --all for them)
    assert summary.read_text() == "earlier step\n" + res.stdout + "\n"
    # the repo itself is untouched
    assert json.loads((toy / "metrics" / "summary.json").read_text())["bundle"]["e2e_f1"] == 0.6
    assert sh(["git", "status", "--porcelain"], toy).stdout.strip() == "M stage.py"

    committed = run_script(toy, "--committed", "--all")  # HEAD only: the tiny profile's own change
    assert committed.returncode == 0, committed.stderr
    assert "|bundle.e2e_f1|0.6|0.5004|-0.0996|" in committed.stdout.replace(" ", "")
    assert "bundle.size_mb" in committed.stdout


def test_script_fails_when_repro_fails(toy, tmp_path):
    summary = tmp_path / "step_summary.md"
    res = run_script(toy, "toy.fail=true", summary=summary)
    assert res.returncode != 0
    assert "toy.fail: stage failed on purpose" in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("error: dvc repro: exited with")
    assert res.stdout == "" and not summary.exists()
    bad = run_script(toy, "nosuchkey=1")  # a bad override fails at compose, before dvc runs
    assert bad.returncode != 0 and "error: python -m ocrslim.compose" in bad.stderr


def _commit(root: Path, message: str) -> None:
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", message], root)


def test_base_mode_compares_like_with_like(toy, tmp_path):
    (toy / "NOTES.md").write_text("a change that alters no behaviour\n")
    _commit(toy, "docs only")
    same = run_script(toy, "--all")
    assert same.returncode == 0, same.stderr
    base = sh(["git", "rev-parse", "HEAD~1"], toy).stdout[:7]
    assert f"vs base {base} (same overrides, reproduced here)" in same.stdout.splitlines()[0]
    assert "mode base" in same.stderr
    # both sides ran the tiny profile: the same value on both sides, no change
    row = next(ln for ln in same.stdout.splitlines() if "bundle.e2e_f1" in ln).replace(" ", "")
    assert row.endswith("|0.5004|0.5004|0|") or row.endswith("|0.5004|0.5004|0.0|"), row

    stage = toy / "stage.py"
    stage.write_text(stage.read_text().replace("OFFSET = 0.0", "OFFSET = -0.05"))
    _commit(toy, "worse")
    report = tmp_path / "report.md"
    worse = run_script(toy, "--fail-on", "bundle.e2e_f1<-0.01,bundle.size_mb>+5%", "--out", str(report))
    assert worse.returncode == 3, worse.stdout + worse.stderr
    row = next(ln for ln in worse.stdout.splitlines() if "bundle.e2e_f1" in ln).replace(" ", "")
    assert "|0.5004|0.4504|-0.05|" in row
    assert "- FAIL metrics/summary.json:bundle.e2e_f1 0.5004 -> 0.4504" in worse.stdout
    assert "size_mb" not in worse.stdout.split("Thresholds")[1].split("FAIL", 2)[-1]  # size held
    assert report.read_text() == worse.stdout + "\n"
    held = run_script(toy, "--fail-on", "bundle.e2e_f1<-0.1")
    assert held.returncode == 0 and "all 1 --fail-on rules hold" in held.stdout
    bad = run_script(toy, "--fail-on", "bundle.e2e_f1 drops")
    assert bad.returncode != 0 and "--fail-on: 'bundle.e2e_f1 drops'" in bad.stderr


def test_rules_parse_and_check():
    rules = parse_rules("bundle.e2e_f1<-0.01, *size_mb>+5%")
    assert rules == [("bundle.e2e_f1", "<", -0.01, False), ("*size_mb", ">", 5.0, True)]
    diff = {"m.json": {"bundle.e2e_f1": {"old": 0.9, "new": 0.885}, "bundle.size_mb": {"old": 2.0, "new": 2.1},
                       "teacher.size_mb": {"old": 2.0, "new": 2.2}}}
    broken = check_rules(diff, rules)
    assert len(broken) == 2 and broken[0].startswith("m.json:bundle.e2e_f1 0.9 -> 0.885")
    assert "teacher.size_mb" in broken[1]  # +10% > 5%; bundle.size_mb's +5% is not more than 5%
