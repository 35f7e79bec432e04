"""``ocrslim select``: parsing real ``dvc.api.exp_show`` output, the pick and its reasons, ``--apply``.

tests/data/exp_rows.json was written by a real DVC 3 run on the toy repo below (regenerate with
``python -m tests.test_select tests/data/exp_rows.json``): baseline ``main`` (prune.ratio 0.1) and a queued
sweep run by ``dvc exp run --run-all``, with one failed and one still queued experiment. Hand-computed
(drop = 0.25 + 4 r^2 + 0.3 if int8, points; latency = 100 (1 - r) + 15 if int8; size = 10 (1 - r) bits / 32):

    name        ratio bits bench  drop  latency  size
    main        0.1   32   yes    0.29  90       9.0
    exp r=0.3   0.3   8    yes    0.91  85       1.75
    exp r=0.4   0.4   32   yes    0.89  60       6.0
    exp r=0.6   0.6   32   yes    1.69  40       4.0
    exp r=0.2   0.2   32   no     0.41  -        8.0    (no latency_ms: unknown, not 0)
    exp bits=3  failed;  exp r=0.5 queued
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from ocrslim.core.errors import ConfigError
from ocrslim.eval.select import (
    ExpRow,
    choose,
    format_selection,
    no_fit_message,
    pareto_plot,
    parse_exp_rows,
    selection_json,
)

from .toyrepo import init_toy_repo, one_stage_dvc_yaml, sh

FIXTURE = Path(__file__).parent / "data" / "exp_rows.json"
PARAM_KEYS = {"prune.ratio", "quant.bits", "bench.latency"}

TOY_STAGE = '''\
"""Toy stage: metrics/summary.json (teacher, student, bundle) from params, like the report stage's contract."""
import json
import pathlib
import sys

import yaml

p = yaml.safe_load(open("params.yaml"))
ratio, bits, bench = p["prune"]["ratio"], p["quant"]["bits"], p["bench"]["latency"]
if bits not in (8, 32):
    sys.exit(f"quant.bits: {bits} is not 8 or 32")
drop = 0.25 + 4 * ratio**2 + (0.3 if bits == 8 else 0.0)
teacher = {"size_mb": 10.0, "latency_ms": 100.0, "e2e_f1": 0.9, "det_hmean": 0.95, "rec_acc": 0.8}
bundle = {"size_mb": round(10 * (1 - ratio) * bits / 32, 4), "e2e_f1": round(0.9 - drop / 100, 6)}
if bench:
    bundle["latency_ms"] = round(100 * (1 - ratio) + (15 if bits == 8 else 0), 4)
pathlib.Path("metrics").mkdir(exist_ok=True)
pathlib.Path("model.bin").write_bytes(bytes(int(1000 * (1 - ratio)) * bits // 8))
summary = {"teacher": teacher, "student": {"size_mb": 10 * (1 - ratio)}, "bundle": bundle}
pathlib.Path("metrics/summary.json").write_text(json.dumps(summary, indent=1))
'''

TOY_DVC = one_stage_dvc_yaml("train", "train.py", ["prune", "quant", "bench"], outs=["model.bin"])

SWEEP = (["prune.ratio=0.3", "quant.bits=8"], ["prune.ratio=0.4"], ["prune.ratio=0.6"],
         ["prune.ratio=0.2", "bench.latency=false"], ["quant.bits=3"])


def make_toy_repo(root: Path) -> Path:
    """A git + DVC repo with one stage writing metrics/summary.json from params; reproduced and committed."""
    return init_toy_repo(root, {
        "train.py": TOY_STAGE, "dvc.yaml": TOY_DVC,
        "params.yaml": "prune:\n  ratio: 0.1\nquant:\n  bits: 32\nbench:\n  latency: true\n",
    }, message="toy baseline")


def _set(args: list[str]) -> list[str]:
    return [a for s in args for a in ("-S", s)]


def write_fixture(root: Path, out: Path) -> None:
    """Queue the sweep, run it with ``dvc exp run --run-all``, queue one more, save ``dvc.api.exp_show``."""
    make_toy_repo(root)
    for args in SWEEP:
        sh(["dvc", "exp", "run", "--queue", *_set(args)], root)
    sh(["dvc", "exp", "run", "--run-all"], root, check=False)  # quant.bits=3 fails: exit 1
    sh(["dvc", "exp", "run", "--queue", "-S", "prune.ratio=0.5"], root)
    from dvc.api import exp_show

    data = [{k: v for k, v in row.items() if k != "Created"} for row in exp_show(repo=str(root))]  # no clock times
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1) + "\n")


@pytest.fixture(scope="module")
def rows() -> list[ExpRow]:
    return parse_exp_rows(json.loads(FIXTURE.read_text()), PARAM_KEYS)


def _by_ratio(rows: list[ExpRow]) -> dict:
    return {(r.params["prune.ratio"], r.params["quant.bits"], r.params["bench.latency"]): r.name
            for r in rows if r.kind == "experiment"}


def test_parse_real_exp_show(rows):
    kinds = [(r.kind, r.state) for r in rows]
    assert kinds[:2] == [("workspace", "success"), ("baseline", "success")]
    assert sorted(s for k, s in kinds[2:]) == ["failed", "queued"] + ["success"] * 4
    assert rows[1].name == "main" and rows[1].params == {"prune.ratio": 0.1, "quant.bits": 32, "bench.latency": True}
    queued = next(r for r in rows if r.state == "queued")
    assert queued.summary is None and queued.params["prune.ratio"] == 0.5 and queued.baseline == "main"
    failed = next(r for r in rows if r.state == "failed")
    assert failed.params["quant.bits"] == 3 and failed.error.startswith("run failed; `dvc queue logs")
    # DVC shows a failed experiment with its baseline's (stale) metrics
    assert failed.summary == rows[1].summary


def test_latency_pick_and_reasons(rows, tmp_path):
    names = _by_ratio(rows)
    sel = choose(rows, "e2e_f1", "latency", 1.0)
    assert sel.pick.row.name == names[(0.4, 32, True)]
    assert sel.pick.cost == 60 and sel.pick.drop == pytest.approx(0.89)
    reasons = {c.row.name: c.reason for c in sel.candidates}
    assert reasons[names[(0.6, 32, True)]] == "drop 1.69 > 1.0 points"
    assert reasons[names[(0.2, 32, False)]] == "bundle.latency_ms unknown"
    assert reasons[names[(0.3, 8, True)]] == f"latency 85 ms > 60 ms of {sel.pick.row.name}"
    assert reasons["main"] == f"latency 90 ms > 60 ms of {sel.pick.row.name}"
    assert reasons[names[(0.1, 3, True)]].startswith("failed (run failed; `dvc queue logs")
    assert reasons[names[(0.5, 32, True)]] == "queued, no metrics yet"
    assert "workspace" not in reasons
    png = pareto_plot(sel, tmp_path / "pareto.png")  # the 4 successful experiments + main, pick circled
    assert png.stat().st_size > 5000
    text = format_selection(sel)
    assert f"pick   {sel.pick.row.name}: latency 60 ms, drop 0.89 <= 1.0 points (best of 3 within budget)" in text
    assert text.count("reject ") == 6


def test_size_pick_counts_rows_without_latency(rows):
    names = _by_ratio(rows)
    sel = choose(rows, "e2e_f1", "size", 1.0)
    assert sel.pick.row.name == names[(0.3, 8, True)] and sel.pick.cost == 1.75
    reasons = {c.row.name: c.reason for c in sel.candidates}
    assert reasons[names[(0.2, 32, False)]] == f"size 8 MB > 1.75 MB of {sel.pick.row.name}"
    assert "best of 4 within budget" in sel.pick.reason
    assert selection_json(sel)["pick"] == sel.pick.row.name


def test_tighter_budget_and_none_fits(rows):
    names = _by_ratio(rows)
    assert choose(rows, "e2e_f1", "size", 0.9).pick.row.name == names[(0.4, 32, True)]  # int8 (0.91) is out
    sel = choose(rows, "e2e_f1", "latency", 0.2)
    assert sel.pick is None
    msg = no_fit_message(sel)
    assert "smallest e2e_f1 drop is 0.29 points (main)" in msg and "--max-drop 0.29 or more" in msg


def test_missing_metric_is_unknown_not_zero(rows):
    sel = choose(rows, "rec_acc", "latency", 1.0)  # the toy bundle has no rec_acc
    assert sel.pick is None
    assert all(c.reason in ("bundle.rec_acc unknown", "queued, no metrics yet") or c.reason.startswith("failed")
               for c in sel.candidates)
    assert "no finished experiment" in no_fit_message(sel)


def _row(name: str, lat: float | None, f1: float, state: str = "success") -> ExpRow:
    bundle = {"e2e_f1": f1, "size_mb": 1.0, **({"latency_ms": lat} if lat is not None else {})}
    return ExpRow(name, name, "experiment", state, summary={"teacher": {"e2e_f1": 0.9}, "bundle": bundle})


def test_tie_goes_to_higher_metric_and_budget_edge():
    rows = [_row("a", 50.0, 0.895), _row("b", 50.0, 0.899), _row("c", 70.0, 0.9), _row("edge", 10.0, 0.89)]
    sel = choose(rows, "e2e_f1", "latency", 1.0)
    assert sel.pick.row.name == "edge"  # drop exactly 1.0 (up to float noise) is within budget
    sel = choose(rows, "e2e_f1", "latency", 0.99)
    assert sel.pick.row.name == "b"
    assert {c.row.name: c.reason for c in sel.candidates}["a"] == "latency ties with b, e2e_f1 0.8950 < 0.8990"
    with pytest.raises(ConfigError):
        choose(rows, "e2e_f1", "speed", 1.0)


def test_select_apply_end_to_end(tmp_path):
    root = make_toy_repo(tmp_path / "toy")
    for args in (["prune.ratio=0.4"], ["prune.ratio=0.6"]):  # foreground runs: faster than the queue
        sh(["dvc", "exp", "run", *_set(args)], root)
    sh(["git", "checkout", "--", "."], root)  # dvc exp run leaves the last result in the workspace
    sh(["dvc", "checkout", "-q"], root)
    assert yaml.safe_load((root / "params.yaml").read_text())["prune"]["ratio"] == 0.1
    cli = [sys.executable, "-m", "ocrslim", "select", "--max-drop", "1.0", "--objective", "latency"]
    res = sh([*cli, "--apply"], root)
    assert "pick   " in res.stdout and "drop 1.69 > 1.0 points" in res.stdout
    assert yaml.safe_load((root / "params.yaml").read_text())["prune"]["ratio"] == 0.4
    assert json.loads((root / "metrics" / "summary.json").read_text())["bundle"]["latency_ms"] == 60
    res = sh([*cli, "--max-drop", "0.1"], root, check=False)  # nothing within 0.1 points: one line, exit 1
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        "error: --max-drop 0.1: no experiment within budget; the smallest e2e_f1 drop is 0.29 points (main). "
        "Pass --max-drop 0.29 or more, or run milder experiments (e.g. dvc exp run -S prune.ratio=<lower>)."
    ]


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        write_fixture(Path(tmp) / "toy", Path(sys.argv[1] if len(sys.argv) > 1 else FIXTURE))
