"""scripts/ci_metrics_diff.sh on toy Hydra + DVC repos: the report, $GITHUB_STEP_SUMMARY, thresholds, failures,
and each mode (base, committed, remote with a local-directory DVC remote).

The toy repos have the real repo's shape (conf/ with a tiny profile and eval sets, composed params.yaml,
committed metrics), so the script's clone → compose → repro → diff path runs in seconds. The real tiny DAG
is exercised by tests/test_dag.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ocrslim.cidiff import TINY_OVERRIDES, DiffResult, resolve_base, stages_of
from ocrslim.eval.diffreport import HEADLINE, Rule, check_rules, headline_table, parse_rules, rule_hints
from ocrslim.eval.report import variant_row

from .conftest import REPO
from .toyrepo import init_toy_repo, one_stage_dvc_yaml, sh, toy_env

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
bench:
  rss: false
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
DVC_YAML = one_stage_dvc_yaml("toy", "stage.py", ["data", "eval", "toy"])


@pytest.fixture
def toy(tmp_path) -> Path:
    root = tmp_path / "toy"
    (root / "scripts").mkdir(parents=True)
    shutil.copy2(REPO / "scripts" / "ci_metrics_diff.sh", root / "scripts")
    files = {"conf/config.yaml": CONFIG, "conf/profile/default.yaml": "# @package _global_\n",
             "conf/profile/tiny.yaml": TINY, "stage.py": STAGE, "dvc.yaml": DVC_YAML}
    return init_toy_repo(root, files, setup=[[sys.executable, "-m", "ocrslim.compose"]])


def run_script(root: Path, *args: str, summary: Path | None = None,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**toy_env(), "PYTHON": sys.executable, **(env or {})}
    env.pop("GITHUB_STEP_SUMMARY", None)
    if summary is not None:
        env["GITHUB_STEP_SUMMARY"] = str(summary)
    return subprocess.run(["bash", str(root / "scripts" / "ci_metrics_diff.sh"), *args], cwd=root.parent, env=env,
                          capture_output=True, text=True, timeout=900)  # a loaded CI runner


def test_section_layout():
    table = ("| Path | Metric | HEAD | workspace | Change |\n|---|---|---|---|---|\n"
             "| m.json | acc | 0.6 | 0.5 | -0.1 |\n")
    res = DiffResult("base", "### Metrics diff, mode `base`: x", table, {"m.json": {"acc": {"old": 0.6, "new": 0.5}}},
                     notes=["_Mode `base` (--mode base)._"])
    out = res.section(thresholds="**Thresholds** (`acc<-1pt`):\n\n- all 1 --fail-on rules hold")
    blocks = out.split("\n\n")
    assert blocks[:2] == ["### Metrics diff, mode `base`: x", "_Mode `base` (--mode base)._"]
    assert blocks[2] == "<details><summary>All changed metrics: <code>dvc metrics diff --md</code> (1 rows)</summary>"
    assert blocks[3] == table.strip() and blocks[4] == "</details>" and blocks[5].startswith("**Thresholds**")
    assert "shipped bundle" not in out  # no metrics/summary.json in the diff: no headline table
    empty = DiffResult("base", "### h", "\n", {}).section()
    assert empty == "### h\n\nNo metric changed (`dvc metrics diff` is empty).\n"


def _details_rows(text: str) -> list[str]:
    """The rows of the folded ``dvc metrics diff --md`` table, spaces removed."""
    inner = text.split("<details>", 1)[1].split("</details>", 1)[0]
    return [ln.replace(" ", "") for ln in inner.splitlines() if ln.startswith("|")][2:]


def test_script_diff_table_with_uncommitted_change(toy, tmp_path):
    stage = toy / "stage.py"
    stage.write_text(stage.read_text().replace("OFFSET = 0.0", "OFFSET = 0.1"))  # uncommitted: in the diff
    summary = tmp_path / "step_summary.md"
    summary.write_text("earlier step\n")
    res = run_script(toy, summary=summary)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.strip().splitlines()
    head = sh(["git", "rev-parse", "HEAD"], toy).stdout[:7]
    # one commit, no remote, no base: HEAD's workspace against its committed metrics, and it says so
    assert lines[0] == (f"### Metrics diff, mode `committed`: `{' '.join(TINY_OVERRIDES)}` at {head} "
                        "vs the metrics committed at HEAD")
    assert lines[2] == "_Mode `committed` (auto: no DVC remote configured and no base commit)._"
    assert "cidiff: mode committed (auto: no DVC remote configured and no base commit)" in res.stderr
    # the headline table: every row, before -> after, accuracy in points, size in percent
    assert "| e2e F1 | `bundle.e2e_f1` | 0.6000 | 0.6004 | +0.04 pt |" in lines
    assert "| size (MB) | `bundle.size_mb` | 3 | 3 | +0.0% |" in lines
    assert "| latency per page, p50 (ms) † | `bundle.latency_ms` | – | – | – |" in lines
    # the full diff, folded: changed metrics only (pass --all for the rest)
    assert _details_rows(res.stdout) == ["|metrics/summary.json|bundle.e2e_f1|0.6|0.6004|0.0004|"]  # n 1000 -> 4
    assert summary.read_text() == "earlier step\n" + res.stdout + "\n"
    # the repo itself is untouched
    assert json.loads((toy / "metrics" / "summary.json").read_text())["bundle"]["e2e_f1"] == 0.6
    assert sh(["git", "status", "--porcelain"], toy).stdout.strip() == "M stage.py"

    committed = run_script(toy, "--committed", "--all")  # HEAD only: the tiny profile's own change
    assert committed.returncode == 0, committed.stderr
    assert _details_rows(committed.stdout) == ["|metrics/summary.json|bundle.e2e_f1|0.6|0.5004|-0.0996|",
                                               "|metrics/summary.json|bundle.size_mb|3.0|3.0|0.0|"]


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
    head, base = (sh(["git", "rev-parse", rev], toy).stdout[:7] for rev in ("HEAD", "HEAD~1"))
    assert same.stdout.splitlines()[0] == (f"### Metrics diff, mode `base`: `{' '.join(TINY_OVERRIDES)}` at {head} "
                                           f"vs base {base}, both reproduced here")
    assert "cidiff: mode base (auto: no DVC remote configured, HEAD has a base commit)" in same.stderr
    # both sides ran the tiny profile: the same value on both sides, no change
    assert "| e2e F1 | `bundle.e2e_f1` | 0.5004 | 0.5004 | +0.00 pt |" in same.stdout
    row = next(ln for ln in _details_rows(same.stdout) if "bundle.e2e_f1" in ln)
    assert row.endswith("|0.5004|0.5004|0|") or row.endswith("|0.5004|0.5004|0.0|"), row

    stage = toy / "stage.py"
    stage.write_text(stage.read_text().replace("OFFSET = 0.0", "OFFSET = -0.05"))
    _commit(toy, "worse")
    report = tmp_path / "report.md"
    worse = run_script(toy, "--fail-on", "bundle.e2e_f1<-1pt,bundle.size_mb>+5%", "--out", str(report))
    assert worse.returncode == 3, worse.stdout + worse.stderr
    assert _details_rows(worse.stdout) == ["|metrics/summary.json|bundle.e2e_f1|0.5004|0.4504|-0.05|"]
    assert "| e2e F1 | `bundle.e2e_f1` | 0.5004 | 0.4504 | -5.00 pt |" in worse.stdout
    assert ("- FAIL metrics/summary.json:bundle.e2e_f1 0.5004 -> 0.4504 (change -5pt) breaks bundle.e2e_f1<-1pt"
            in worse.stdout)
    assert "size_mb" not in worse.stdout.split("Thresholds")[1].split("FAIL", 2)[-1]  # size held
    assert report.read_text() == worse.stdout + "\n"  # no plot changed: the file and stdout are the same
    assert worse.stderr.strip().splitlines()[-1].startswith("error: 1 --fail-on rule(s) broken")
    held = run_script(toy, "--fail-on", "bundle.e2e_f1<-0.1")  # the metric's own units, as before
    assert held.returncode == 0 and "all 1 --fail-on rules hold" in held.stdout
    hint = run_script(toy, "--fail-on", "bundle.e2e_f1<-10")  # can never break: hinted at, not failed
    assert hint.returncode == 0 and "write -10pt for points" in hint.stdout and "write -10pt" in hint.stderr
    bad = run_script(toy, "--fail-on", "bundle.e2e_f1 drops")
    assert bad.returncode != 0 and "--fail-on: 'bundle.e2e_f1 drops'" in bad.stderr


def test_base_that_does_not_reproduce_falls_back_to_committed(toy):
    conf = toy / "conf" / "config.yaml"
    conf.write_text(conf.read_text().replace("fail: false", "fail: true"))
    _commit(toy, "broken stage")
    conf.write_text(conf.read_text().replace("fail: true", "fail: false"))
    _commit(toy, "fixed")
    res = run_script(toy)
    assert res.returncode == 0, res.stderr
    base = sh(["git", "rev-parse", "HEAD~1"], toy).stdout[:7]
    assert "mode `committed`:" in res.stdout.splitlines()[0]
    assert (f"The base {base} did not reproduce under these overrides (`dvc repro` exited with 255; its output is "
            "in the job log); fell back to mode `committed`: the metrics committed at HEAD.") in res.stdout


def test_rules_parse_and_check():
    rules = parse_rules("bundle.e2e_f1<-0.01, *size_mb>+5%, bundle.det_hmean < -1pt")
    assert rules == [Rule("bundle.e2e_f1", "<", -0.01, ""), Rule("*size_mb", ">", 5.0, "%"),
                     Rule("bundle.det_hmean", "<", -1.0, "pt")]
    diff = {"m.json": {"bundle.e2e_f1": {"old": 0.9, "new": 0.885}, "bundle.size_mb": {"old": 2.0, "new": 2.1},
                       "teacher.size_mb": {"old": 2.0, "new": 2.2}, "bundle.det_hmean": {"old": 0.9, "new": 0.89}}}
    broken = check_rules(diff, rules)
    assert len(broken) == 2 and broken[0].startswith("m.json:bundle.e2e_f1 0.9 -> 0.885")
    assert "teacher.size_mb" in broken[1]  # +10% > 5%; bundle.size_mb's +5% is not more than 5%
    # points: -1.5 pt breaks -1pt, -1.0 pt (0.9 -> 0.89) does not; the unit-less rule is the same as -1.5pt
    assert check_rules(diff, parse_rules("bundle.e2e_f1<-1pt"))
    assert not check_rules(diff, parse_rules("bundle.det_hmean<-1pt"))
    assert check_rules({"m.json": {"a": {"old": None, "new": 0.1}}}, parse_rules("a<-1pt,a>+1pt,a>+1%")) == []
    assert rule_hints(diff, parse_rules("bundle.e2e_f1<-1.0,nosuch<-1pt,bundle.size_mb>+5")) == [
        "--fail-on bundle.e2e_f1<-1: the matching metrics lie in 0..1, so a change of -1 in their own units can "
        "never happen; write -1pt for points.",
        "--fail-on nosuch<-1pt: no metric matches 'nosuch'; check the name in the table."]
    with pytest.raises(Exception, match="--fail-on: 'e2e drops' is not"):
        parse_rules("e2e drops")


def test_headline_table_units_and_host_rows():
    diff = {"metrics/summary.json": {
        "bundle.size_mb": {"old": 5.14, "new": 5.4}, "bundle.latency_ms": {"old": 100.0, "new": 90.0},
        "bundle.e2e_f1": {"old": 0.8444, "new": 0.8519}, "bundle.synth_1ned_cjk": {"new": 0.97},
        "bundle.rec_acc": {"old": 0.6}, "teacher.e2e_f1": {"old": 0.9, "new": 0.9}}}
    lines = headline_table(diff, host_note="Both sides ran here.").splitlines()
    assert lines[:2] == ["| shipped bundle | metric | before | after | change |", "|---|---|---:|---:|---:|"]
    rows = {ln.split("`")[1]: ln for ln in lines[2:] if ln.startswith("| ")}
    assert list(rows) == [h.key for h in HEADLINE]  # every headline row, in order, present or not
    assert rows["bundle.size_mb"] == "| size (MB) | `bundle.size_mb` | 5.14 | 5.4 | +5.1% |"
    assert rows["bundle.latency_ms"] == "| latency per page, p50 (ms) † | `bundle.latency_ms` | 100 | 90 | -10.0% |"
    assert rows["bundle.e2e_f1"] == "| e2e F1 | `bundle.e2e_f1` | 0.8444 | 0.8519 | +0.75 pt |"
    assert rows["bundle.synth_1ned_cjk"].endswith("| – | 0.9700 | new |")
    assert rows["bundle.rec_acc"].endswith("| 0.6000 | – | gone |")
    assert rows["bundle.params_m"].endswith("| – | – | – |")
    assert [h.key for h in HEADLINE if h.host] == ["bundle.latency_ms", "bundle.peak_rss_mb"]
    assert lines[-2].startswith("† host-dependent") and lines[-2].endswith("Both sides ran here.")
    assert headline_table({"metrics/eval_bundle.json": {"x": {"old": 1, "new": 2}}}) == ""


def test_headline_keys_are_written_by_the_report_stage():
    """Every headline row names a key the report stage writes for the bundle (a renamed key would leave a
    row of dashes); the Chinese 1−NED comes from the evaluate stage's per-script rec metrics."""
    ev = {"synth_test": {"det": {"hmean": 0.8}, "e2e": {"f1": 0.7},
                         "rec": {"accuracy_ci_alnum": 0.9, "one_minus_ned": 0.95, "one_minus_ned_cjk": 0.93}}}
    row = variant_row(ev, {})
    assert {h.key.split(".", 1)[1] for h in HEADLINE} <= set(row) | {"params_m"}
    assert row["synth_1ned_cjk"] == 0.93 and row["rec_acc"] == 0.9 and row["e2e_f1"] == 0.7


def test_stages_of_dvc_repro_output():
    out = ("Stage 'prep' didn't change, skipping\nRunning stage 'train':\n> python stage.py train\n"
           "Updating lock file 'dvc.lock'\n\nRunning stage 'evaluate':\n> python stage.py evaluate\n"
           "Stage 'other' didn't change, skipping\n")
    assert stages_of(out) == (["train", "evaluate"], ["prep", "other"])


def test_resolve_base_parent_merge_base_or_origin_main(tmp_path):
    repo = tmp_path / "a"
    repo.mkdir()
    sh(["git", "-c", "init.defaultBranch=main", "init", "-q"], repo)

    def commit(text: str) -> str:
        (repo / "f").write_text(text)
        _commit(repo, text)
        return sh(["git", "rev-parse", "HEAD"], repo).stdout.strip()

    first = commit("1")
    assert resolve_base(repo, "auto") is None  # a root commit has no base
    second = commit("2")
    assert resolve_base(repo, "auto") == first  # on main: HEAD's parent
    sh(["git", "checkout", "-qb", "topic"], repo)
    commit("3")
    commit("4")
    assert resolve_base(repo, "auto") == second  # on a branch: the merge base with main, not the parent
    ci = tmp_path / "ci"  # a CI checkout: the branch, origin/main, no local main
    sh(["git", "clone", "-q", "--branch", "topic", str(repo), str(ci)], tmp_path)
    assert sh(["git", "branch", "--list", "main"], ci).stdout == ""
    assert resolve_base(ci, "auto") == second
    assert resolve_base(ci, "HEAD~3") == first and resolve_base(ci, "nosuch") is None


# ------------------------------------------------------------------------------------------ remote mode
# A four-stage toy: prep -> train -> evaluate (metrics/summary.json and an image plot), and other beside them.
# Each stage appends its name to $TOY_RUNLOG, so the test sees which stages ran, independently of dvc's output.
# Every metric of train and evaluate moves with train.lr; prep's and other's do not.
FLOW_CONFIG = """\
defaults:
  - _self_
  - profile: default
prep:
  n: 10
train:
  lr: 0.5
eval:
  k: 2
  det_data: [../shared/data/sroie_dev]
  rec_data: [../shared/data/ic15_words_dev]
other:
  x: 1
bench:
  rss: false
"""
FLOW_STAGE = """\
import json, os, pathlib, sys, yaml
from PIL import Image
name, p = sys.argv[1], yaml.safe_load(open("params.yaml"))
if os.environ.get("TOY_RUNLOG"):
    with open(os.environ["TOY_RUNLOG"], "a") as fh:
        fh.write(name + "\\n")
for d in ("out", "metrics", "reports"):
    pathlib.Path(d).mkdir(exist_ok=True)
def dump(path, m):
    pathlib.Path(path).write_text(json.dumps(m))
if name == "prep":
    pathlib.Path("out/data.txt").write_text(str(p["prep"]["n"]))
    dump("metrics/prep.json", {"rows": p["prep"]["n"]})
elif name == "train":
    w = int(pathlib.Path("out/data.txt").read_text()) * p["train"]["lr"]
    pathlib.Path("out/model.txt").write_text(str(w))
    dump("metrics/train.json", {"loss": round(1 / (1 + w), 6), "w": w})
elif name == "evaluate":
    w = float(pathlib.Path("out/model.txt").read_text())
    dump("metrics/summary.json", {"bundle": {"e2e_f1": round(w / (w + p["eval"]["k"]), 6), "size_mb": w / 2}})
    Image.new("L", (8, 8), int(w * 10) % 256).save("reports/curve.png")
elif name == "other":
    dump("metrics/other.json", {"x2": p["other"]["x"] * 2})
"""
FLOW_DVC = """\
stages:
  prep:
    cmd: python stage.py prep
    deps: [stage.py]
    params: [prep]
    outs: [out/data.txt]
    metrics: [{metrics/prep.json: {cache: false}}]
  train:
    cmd: python stage.py train
    deps: [stage.py, out/data.txt]
    params: [train]
    outs: [out/model.txt]
    metrics: [{metrics/train.json: {cache: false}}]
  evaluate:
    cmd: python stage.py evaluate
    deps: [stage.py, out/model.txt]
    params: [eval.k]
    metrics: [{metrics/summary.json: {cache: false}}]
    outs: [{reports/curve.png: {cache: false}}]
  other:
    cmd: python stage.py other
    deps: [stage.py]
    params: [other]
    metrics: [{metrics/other.json: {cache: false}}]
plots:
  - reports/curve.png
"""


@pytest.fixture
def pushed(tmp_path) -> tuple[Path, Path]:
    """(origin, ci): origin reproduced, its outputs pushed to a local-directory remote named by a relative
    path; ci a fresh clone of it (no DVC cache) on a branch that changes train.lr."""
    origin = tmp_path / "origin"
    (origin / "scripts").mkdir(parents=True)
    shutil.copy2(REPO / "scripts" / "ci_metrics_diff.sh", origin / "scripts")
    files = {"conf/config.yaml": FLOW_CONFIG, "conf/profile/default.yaml": "# @package _global_\n",
             "conf/profile/tiny.yaml": "# @package _global_\nprep:\n  n: 4\n", "stage.py": FLOW_STAGE,
             "dvc.yaml": FLOW_DVC}
    init_toy_repo(origin, files, setup=[[sys.executable, "-m", "ocrslim.compose"]])
    sh(["dvc", "remote", "add", "-d", "store", "../store"], origin)  # relative to origin/.dvc: tmp_path/store
    _commit(origin, "remote store")
    assert "2 files pushed" in sh(["dvc", "push"], origin).stdout

    ci = tmp_path / "ci"
    sh(["git", "clone", "-q", str(origin), str(ci)], tmp_path)
    sh(["git", "checkout", "-qb", "change"], ci)
    conf = ci / "conf" / "config.yaml"
    conf.write_text(conf.read_text().replace("lr: 0.5", "lr: 0.8"))
    sh([sys.executable, "-m", "ocrslim.compose"], ci)
    _commit(ci, "train.lr 0.8")
    return origin, ci


def test_remote_mode_reruns_only_the_touched_stages(pushed, tmp_path):
    origin, ci = pushed
    runlog = tmp_path / "runlog"
    report = tmp_path / "out" / "report.md"
    report.parent.mkdir()
    res = run_script(ci, "--out", str(report), "--fail-on", "bundle.e2e_f1<-1pt", env={"TOY_RUNLOG": str(runlog)})
    assert res.returncode == 0, res.stdout + res.stderr
    head, base = (sh(["git", "rev-parse", rev], ci).stdout[:7] for rev in ("HEAD", "main"))
    assert "cidiff: mode remote (auto: DVC remote 'store' is configured)" in res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == (f"### Metrics diff, mode `remote`: the committed params.yaml at {head} "
                        f"vs base {base}'s committed metrics")
    # only the stages downstream of train.lr ran; prep's output came from the remote for train to read
    assert runlog.read_text().split() == ["train", "evaluate"]
    assert ("Stages rerun here: train, evaluate (2 of 4); unchanged, outputs from DVC remote `store` where "
            "needed: prep, other.") in res.stdout
    # the diff shows exactly the metrics those two stages own: every metric of their files, nothing else
    owned = {("metrics/train.json", "loss"), ("metrics/train.json", "w"),
             ("metrics/summary.json", "bundle.e2e_f1"), ("metrics/summary.json", "bundle.size_mb")}
    assert {tuple(r.split("|")[1:3]) for r in _details_rows(res.stdout)} == owned
    assert "| e2e F1 | `bundle.e2e_f1` | 0.7143 | 0.8000 | +8.57 pt |" in lines  # w 5 -> 8: 5/7 -> 8/10
    assert "| size (MB) | `bundle.size_mb` | 2.5 | 4 | +60.0% |" in lines
    assert "- all 1 --fail-on rules hold" in lines
    # the plot that changed: named in stdout (and the job summary), shown before/after in the report file
    assert "**Plots that changed** (`dvc plots diff`): `reports/curve.png`" in res.stdout
    text = report.read_text()
    assert "| `reports/curve.png` | ![before](report-plots/reports_curve.before.png) | " \
           "![after](report-plots/reports_curve.after.png) |" in text
    assert (report.parent / "report-plots" / "reports_curve.after.png").stat().st_size > 0
    # the CI checkout is untouched and got no DVC cache: the clone did the work
    assert sh(["git", "status", "--porcelain"], ci).stdout == ""
    assert not any(p.is_file() for p in (ci / ".dvc" / "cache").rglob("*"))


def test_remote_mode_without_the_outputs_falls_back_or_fails(pushed, tmp_path):
    _, ci = pushed
    (tmp_path / "empty").mkdir()
    sh(["dvc", "remote", "add", "--local", "empty", str(tmp_path / "empty")], ci)  # .dvc/config.local: not in git
    res = run_script(ci, "--mode", "remote", "--remote", "empty")
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.strip().splitlines()[-1] == (
        "error: DVC remote 'empty' lacks 2 output(s) of HEAD's dvc.lock (e.g. out/data.txt); run `dvc repro` "
        "and `dvc push` on main so the remote holds the base's outputs")
    auto = run_script(ci, "--remote", "empty")  # auto: say so, and compare like with like instead
    assert auto.returncode == 0, auto.stderr
    assert "; fell back to mode `base`." in auto.stdout and "mode `base`:" in auto.stdout.splitlines()[0]
    nosuch = run_script(ci, "--remote", "nosuch")
    assert nosuch.returncode == 1 and "--remote nosuch:" in nosuch.stderr and "it has: empty, store" in nosuch.stderr
