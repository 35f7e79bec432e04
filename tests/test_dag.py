"""`dvc repro` of the tiny profile in a temporary git repo, with the network unavailable.

The whole DAG (data → calibrate → teacher → prune → distill → export → convert → quantize → bundle →
targets → evaluate → bench → report) runs, writes its metrics, and a second
`dvc repro` does nothing. Every Python process of the run loads tests/netguard/sitecustomize.py,
which blocks and logs any name lookup or non-local connection; where the kernel allows it, the
run is also put in a fresh network namespace (`unshare -n`) with no interfaces at all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import yaml

from ocrslim.compose import compose, dump

from .conftest import REPO, render_line, render_page

pytestmark = pytest.mark.slow


def _repo_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, text=True,
        check=True,
    ).stdout.split("\n")
    keep = ("dvc.yaml", "params.yaml", ".dvcignore", "conf/", "stages/", "ocrslim/", ".dvc/config")
    return [f for f in out if f and f.startswith(keep) and (REPO / f).is_file()]


def _make_sets(root: Path, pages: int = 1, crops: tuple[str, ...] = ("Receipt", "CASH 10.00"),
               unreadable: bool = True) -> tuple[Path, Path]:
    """A tiny labelled set: ``pages`` det pages (``<i>.png``) and one rec crop per text (``<i>_0.png``)."""
    img, quads = render_page()
    (root / "det" / "images").mkdir(parents=True)
    (root / "det" / "gt").mkdir()
    for i in range(pages):
        cv2.imwrite(str(root / "det" / "images" / f"{i}.png"), img)
        (root / "det" / "gt" / f"gt_{i}.txt").write_text(
            "".join(",".join(str(int(v)) for v in q.reshape(-1)) + f",{t}\n"
                    for q, t in zip(quads, ["Total 42.50", "Hello World", "OCR slim 2026"]))
        )
    (root / "rec" / "images").mkdir(parents=True)
    lines = []
    for i, text in enumerate(crops):
        cv2.imwrite(str(root / "rec" / "images" / f"{i}_0.png"), render_line(text))
        lines.append(f"{i}_0.png\t{text}\n")
    if unreadable:
        (root / "rec" / "images" / "unreadable.png").write_bytes(b"broken")
        lines.append("unreadable.png\tx\n")
    (root / "rec" / "labels.tsv").write_text("".join(lines))
    return root / "det", root / "rec"


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0:
        cmd = ["unshare", "-n", *cmd]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def test_tiny_dvc_repro_offline_then_noop(tmp_path):
    work = tmp_path / "repo"
    for rel in _repo_files():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, work / rel)
    det, rec = _make_sets(tmp_path / "data")
    crops = ("Total 4.20", "Cash", "Receipt 7")
    # training sets named as the defaults expect them (data/splits/<set name>/...), the user's own data
    sroie, ic15 = (_make_sets(tmp_path / name, pages=3, crops=crops, unreadable=False)[0].parent
                   for name in ("sroie_train", "ic15_words_train"))
    params = compose(["profile=tiny", f"eval.det_data=[{det}]", f"eval.rec_data=[{rec}]",
                      f"split.det_sets=[{sroie}]", f"split.rec_sets=[{sroie},{ic15}]"], config_dir=work / "conf")
    (work / "params.yaml").write_text(dump(params))

    netlog = tmp_path / "net.log"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "tests" / "netguard"),
        "OCRSLIM_NETLOG": str(netlog),
        "OCRSLIM_CACHE": str(tmp_path / "cache"),
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
    }
    git = ["git", "-c", "init.defaultBranch=main"]
    for cmd in (git + ["init", "-q"], git + ["add", "-A"], git + ["commit", "-qm", "tiny"]):
        subprocess.run(cmd, cwd=work, env=env, check=True, capture_output=True)
    dvc = [sys.executable, "-m", "dvc"]

    first = _run(dvc + ["repro"], work, env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for path in ("artifacts/teacher/det.safetensors", "artifacts/pruned/rec.safetensors",
                 "artifacts/student/det.safetensors",
                 "artifacts/onnx/student_rec.onnx", "artifacts/mnn/student_det.mnn", "artifacts/quant/rec.mnn.json",
                 "artifacts/bundle/det.mnn", "artifacts/bundle/rec.mnn", "artifacts/bundle/dict.txt",
                 "runs/distill/det/ckpt/last.safetensors", "runs/distill/rec/ckpt/last.safetensors"):
        assert (work / path).is_file(), path
    teacher = json.loads((work / "metrics" / "eval_teacher.json").read_text())["data"]  # set name: the folder
    assert teacher["rec"]["samples"] == 2 and teacher["skipped"] == 1  # the unreadable crop counted, not scored
    assert teacher["rec"]["accuracy_ci_alnum"] == 1.0 and teacher["det"]["hmean"] == 1.0
    assert "unreadable.png: unreadable image, skipped." in first.stdout + first.stderr
    for name in ("pruned", "student", "bundle"):  # every variant scored on the same sets
        assert set(json.loads((work / "metrics" / f"eval_{name}.json").read_text())["data"]) >= {"det", "rec"}
    manifest = json.loads((work / "artifacts" / "bundle" / "manifest.json").read_text())
    for task in ("det", "rec"):
        assert manifest[task]["precision"] in ("int8", "int8-weights", "fp16", "fp32")
        assert manifest[task]["precision"] == json.loads(
            (work / "metrics" / f"quantize_{task}.json").read_text())["precision"]
    bench = json.loads((work / "metrics" / "bench.json").read_text())  # whole synthetic pages, end to end
    assert set(bench) == {"bundle", "teacher_mnn", "teacher_onnx", "student_mnn"}
    assert all(bench[v]["synth_test"]["t1"]["p50_ms"] > 0 and bench[v]["synth_test"]["pages"] == 2 for v in bench)
    assert bench["teacher_mnn"]["synth_test"]["e2e_f1"] is not None and bench["bundle"]["size_mb"] > 0
    targets = json.loads((work / "metrics" / "targets.json").read_text())  # ONNX and TorchScript beside the bundle
    assert set(targets) == {"onnx", "torchscript"} and targets["onnx"]["pages"] == 2
    for path in ("artifacts/bundle_onnx/det.onnx", "artifacts/torchscript/rec.pt", "artifacts/torchscript/dict.txt"):
        assert (work / path).is_file(), path
    summary = json.loads((work / "metrics" / "summary.json").read_text())
    assert summary["teacher"]["e2e_f1"] == 1.0 and summary["bundle"]["size_mb"] > 0
    assert summary["bundle"]["params_m"] < summary["teacher"]["params_m"]
    report = (work / "reports" / "summary.md").read_text()
    assert "| bundle (shipped) |" in report and (work / "reports" / "size_vs_accuracy.png").stat().st_size
    distill = json.loads((work / "metrics" / "distill_det.json").read_text())
    assert distill["steps"] == params["distill"]["det"]["steps"] and distill["mode"] == "distill"
    page = str(det / "images" / "0.png")
    read = _run([sys.executable, "-m", "ocrslim", "read", "--bundle", "artifacts/bundle", page], work, env)
    assert read.returncode == 0 and "0.png" in read.stdout, read.stderr[-2000:]
    export = json.loads((work / "metrics" / "export_teacher_rec.json").read_text())
    assert export["max_abs_diff"] <= params["export"]["rec_tol"]

    second = _run(dvc + ["repro"], work, env)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "Running stage" not in second.stdout
    status = _run(dvc + ["status"], work, env)
    assert "up to date" in status.stdout.lower(), status.stdout

    log = netlog.read_text() if netlog.exists() else ""
    assert log == "", f"network access attempted:\n{log}"
    assert yaml.safe_load((work / "dvc.lock").read_text())["stages"]
