"""Artifacts nobody can poison: a crafted pickle never runs, tampered bundles are refused by every reader.

A malicious ``.pt`` (its ``__reduce__`` creates a marker file when unpickled) is fed to ``ocrslim read --det``,
``ocrslim eval --det``, the stages that load models, the model loader and the checkpoint loader: each refuses
it in one line and the marker never appears. ``ocrslim convert-model`` converts a trusted old file. A bundle
built from the zoo's ONNX teachers is read, evaluated and verified; each tampered copy (a changed byte, a
truncated model, a changed dictionary, a path outside the directory, the legacy manifest format) is refused by
``read``, ``eval`` and ``verify`` in one line with exit code 1.
"""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import torch

from ocrslim.cli import main as cli_main
from ocrslim.core.artifacts import model_meta, onnx_characters
from ocrslim.core.config import DetConfig, RecConfig
from ocrslim.core.errors import ArtifactError
from ocrslim.export.bundle import build_bundle
from ocrslim.infer.pipeline import open_model
from ocrslim.infer.runners import open_runner
from ocrslim.models.io import load_model
from ocrslim.models.ppocr import teacher_onnx_path
from ocrslim.stage import run_main

from .conftest import REPO, render_line


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: proof that code from the file ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ocrslim", *args], capture_output=True, text=True, cwd=REPO)


def _one_line_error(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def evil(tmp_path_factory) -> dict[str, Path]:
    """Malicious model files in every shape a pickle comes in, and the marker they would create."""
    root = tmp_path_factory.mktemp("evil")
    marker = root / "PWNED"
    files = {"pt": root / "model.pt", "pth": root / "model.pth"}
    torch.save({"model": _Payload(marker), "meta": {"task": "det"}}, files["pt"])  # a torch zip archive
    shutil.copy(files["pt"], files["pth"])
    files["zip_as_safetensors"] = root / "zip.safetensors"
    shutil.copy(files["pt"], files["zip_as_safetensors"])
    files["pickle_as_safetensors"] = root / "raw.safetensors"  # a raw pickle (protocol 2: starts with 0x80)
    files["pickle_as_safetensors"].write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    files["pickle0_as_safetensors"] = root / "raw0.safetensors"  # protocol 0: plain text, no magic byte
    files["pickle0_as_safetensors"].write_bytes(pickle.dumps(_Payload(marker), protocol=0))
    files["marker"] = marker
    return files


def test_the_payload_is_live(evil) -> None:
    """The files really are hostile: unpickling one (in a child) creates the marker."""
    marker = evil["marker"]
    code = f"import torch; torch.load({str(evil['pt'])!r}, weights_only=False)"
    subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=REPO)
    assert marker.exists()
    marker.unlink()


@pytest.mark.parametrize("command", ["read", "eval"])
def test_cli_refuses_a_malicious_pt_without_running_it(evil, tmp_path, command) -> None:
    img = tmp_path / "line.png"
    cv2.imwrite(str(img), render_line("Hello"))
    args = [str(img)] if command == "read" else ["--det-data", str(tmp_path)]
    res = cli(command, *args, "--det", str(evil["pt"]))
    assert res.returncode == 1
    line = _one_line_error(res.stderr)
    assert str(evil["pt"]) in line and "ocrslim convert-model" in line
    assert not evil["marker"].exists()


@pytest.mark.parametrize("kind", ["pt", "pth", "zip_as_safetensors", "pickle_as_safetensors",
                                  "pickle0_as_safetensors"])
def test_every_loader_refuses_every_pickle_shape(evil, kind, capsys) -> None:
    from ocrslim.compress.engine import load_checkpoint

    path = evil[kind]
    loaders = (load_model, open_runner, lambda p: open_model(str(p), "det"), lambda p: open_model(f"onnx:{p}", "det"))
    for load in loaders:
        with pytest.raises(ArtifactError) as info:
            load(path)
        assert "\n" not in str(info.value) and str(path) in str(info.value)
    assert run_main(cli_main, ["read", str(path), "--det", str(path)]) == 1
    _one_line_error(capsys.readouterr().err)
    ckpt = path.parent / "ckpt" / "last.safetensors"  # a poisoned checkpoint is discarded, not loaded
    ckpt.parent.mkdir(exist_ok=True)
    shutil.copy(path, ckpt)
    assert load_checkpoint(ckpt) is None
    assert not evil["marker"].exists()


@pytest.mark.parametrize("stage, args", [
    ("export", ["--task", "det", "--model", "{pt}", "--out", "{tmp}/x.onnx", "--metrics", "{tmp}/m.json"]),
    ("evaluate", ["--name", "x", "--det", "{pt}", "--rec", "{pt}", "--out", "{tmp}/m.json"]),
])
def test_stages_refuse_a_malicious_model(evil, tmp_path, stage, args, capsys) -> None:
    import importlib

    main = importlib.import_module(f"stages.{stage}").main
    argv = ["--params", str(REPO / "params.yaml")] + [a.format(pt=evil["pt"], tmp=tmp_path) for a in args]
    assert run_main(main, argv) == 1
    assert "convert-model" in _one_line_error(capsys.readouterr().err)
    assert not evil["marker"].exists()


def test_convert_model_turns_a_trusted_pt_into_safetensors(tmp_path, capsys) -> None:
    from ocrslim.models.ppocr import load_ppocrv4

    model = load_ppocrv4("det", teacher_onnx_path("det")).eval()
    old = tmp_path / "det.pt"
    torch.save({"format": "ocrslim-model/1", "model": model, "meta": {"task": "det", "source": "test"}}, old)
    new = tmp_path / "det.safetensors"
    assert run_main(cli_main, ["convert-model", str(old), str(new)]) == 0
    assert "only for trusted files" in capsys.readouterr().out
    loaded, meta = load_model(new)
    assert meta == {"task": "det", "source": "test"}
    x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    not_ours = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, not_ours)
    assert run_main(cli_main, ["convert-model", str(not_ours), str(tmp_path / "o.safetensors")]) == 1
    assert "no 'model' module inside" in _one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "o.safetensors").exists()


# ------------------------------------------------------------------------------------------ bundles
@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """A working bundle of the zoo's ONNX teachers (ONNX Runtime reads it), with a rec set and an image."""
    root = tmp_path_factory.mktemp("bundle")
    src = root / "src"
    src.mkdir()
    for task in ("det", "rec"):
        onnx = src / f"{task}.onnx"
        shutil.copy(teacher_onnx_path(task), onnx)
        chars = onnx_characters(onnx) if task == "rec" else None
        meta = {**model_meta(task, chars, DetConfig(), RecConfig()), "precision": "fp32"}
        (src / f"{task}.onnx.json").write_text(json.dumps(meta))
    build_bundle(src / "det.onnx", src / "rec.onnx", root / "bundle", {"det": {"drop_demo": 0.1}})
    (root / "rec" / "images").mkdir(parents=True)
    cv2.imwrite(str(root / "rec" / "images" / "0.png"), render_line("Hello"))
    (root / "rec" / "labels.tsv").write_text("0.png\tHello\n")
    return root / "bundle"


def _flip_byte(b: Path) -> str:
    data = bytearray((b / "det.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (b / "det.onnx").write_bytes(bytes(data))
    return "det.onnx: sha256 differs"


def _truncate(b: Path) -> str:
    data = (b / "rec.onnx").read_bytes()
    (b / "rec.onnx").write_bytes(data[: len(data) // 2])
    return "rec.onnx: "


def _dict(b: Path) -> str:
    with open(b / "dict.txt", "a", encoding="utf-8") as fh:
        fh.write("x\n")
    return "dict.txt: sha256 differs"


def _outside(b: Path) -> str:
    shutil.copy(b / "det.onnx", b.parent / "det.onnx")
    m = json.loads((b / "manifest.json").read_text())
    m["det"]["file"] = "../det.onnx"
    (b / "manifest.json").write_text(json.dumps(m))
    return "points outside the bundle directory"


def _symlink_outside(b: Path) -> str:
    shutil.copy(b / "det.onnx", b.parent / "det.onnx")
    (b / "det.onnx").unlink()
    (b / "det.onnx").symlink_to(b.parent / "det.onnx")
    return "points outside the bundle directory"


def _legacy(b: Path) -> str:
    m = json.loads((b / "manifest.json").read_text())
    m["format"] = "ocrslim-bundle/1"
    (b / "manifest.json").write_text(json.dumps(m))
    return "'ocrslim-bundle/1' is not one this ocrslim reads"


def _no_size(b: Path) -> str:
    m = json.loads((b / "manifest.json").read_text())
    del m["rec"]["size_bytes"]
    (b / "manifest.json").write_text(json.dumps(m))
    return "no size_bytes for rec.onnx"


DAMAGE = {"changed byte": _flip_byte, "truncated": _truncate, "dictionary": _dict, "path outside": _outside,
          "symlink outside": _symlink_outside, "legacy format": _legacy, "size missing": _no_size}


def _commands(b: Path) -> dict[str, list[str]]:
    rec = b.parent / "rec"
    return {"read": ["read", str(rec / "images" / "0.png"), "--bundle", str(b)],
            "eval": ["eval", "--bundle", str(b), "--rec-data", str(rec), "--quiet"],
            "verify": ["verify", str(b)]}


def test_intact_bundle_reads_evaluates_and_verifies(bundle, capsys) -> None:
    for name, argv in _commands(bundle).items():
        assert run_main(cli_main, argv) == 0, name
    out = capsys.readouterr().out
    assert "verified (ocrslim-bundle/2)" in out and "shipped with drop_demo: 0.1" in out
    assert "Hello" in out


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("command", ["read", "eval", "verify"])
def test_tampered_bundle_is_refused_in_one_line(bundle, tmp_path, damage, command, capsys) -> None:
    b = tmp_path / "bundle"
    shutil.copytree(bundle, b)
    expect = DAMAGE[damage](b)
    assert run_main(cli_main, _commands(b)[command]) == 1
    line = _one_line_error(capsys.readouterr().err)
    assert expect in line


def test_tampered_bundle_exit_code_of_the_real_command(bundle, tmp_path) -> None:
    b = tmp_path / "bundle"
    shutil.copytree(bundle, b)
    _flip_byte(b)
    res = cli("verify", str(b))
    assert res.returncode == 1 and "sha256 differs" in _one_line_error(res.stderr)
