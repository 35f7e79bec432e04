"""The inference core stands alone: reading an image with a bundle never imports torch, nor anything outside the
runtime install (``pip install ocrslim``); the det input policy comes from the bundle manifest."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import torch

from ocrslim.core.artifacts import model_meta, sidecar_path
from ocrslim.core.config import DetConfig, RecConfig
from ocrslim.export.bundle import build_bundle
from ocrslim.export.onnx import export_onnx

from .conftest import REPO, render_page
from .test_runtime import TinyDet, TinyRec, _randomize_bn

pytest.importorskip("MNN")

CHARS = ["a", "b", "c"]  # + blank + space = TinyRec's 5 classes


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle of two tiny MNN models (det: a probability map; rec: 8 px high lines) with real manifests."""
    from ocrslim.export.mnn import convert_onnx_to_mnn

    root = tmp_path_factory.mktemp("bundle")
    torch.manual_seed(0)
    det_cfg, rec_cfg = DetConfig(limit_side_len=64, limit_type="max"), RecConfig(height=8, min_width=16, min_side=0)
    files = {}
    for task, model, shape, axes in (
        ("det", TinyDet(), (1, 3, 32, 32), {"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "h", 3: "w"}}),
        ("rec", TinyRec(len(CHARS) + 2), (1, 3, 8, 32), {"x": {0: "n", 3: "w"}, "y": {0: "n", 1: "t"}}),
    ):
        onnx_path, mnn_path = root / f"{task}.onnx", root / "src" / f"{task}.mnn"
        export_onnx(_randomize_bn(model), onnx_path, torch.rand(shape), axes)
        convert_onnx_to_mnn(onnx_path, mnn_path)
        meta = {**model_meta(task, CHARS if task == "rec" else None, det_cfg, rec_cfg), "precision": "fp32"}
        sidecar_path(mnn_path).write_text(json.dumps(meta), encoding="utf-8")
        files[task] = mnn_path
    build_bundle(files["det"], files["rec"], root / "bundle")
    return root / "bundle"


READ = """
import sys, numpy as np
from ocrslim.infer.pipeline import OCR, open_bundle
from ocrslim.infer.preprocess import read_image
ocr = OCR(*open_bundle(sys.argv[1], threads=1))
lines = ocr.read(read_image(sys.argv[2]))
heavy = sorted(m for m in ("torch", "onnx2torch", "torchvision", "torch_pruning") if m in sys.modules)
print(len(lines), ",".join(heavy) or "none")
"""


def test_reading_with_a_bundle_never_imports_torch(tiny_bundle: Path, tmp_path: Path) -> None:
    import cv2

    img, _ = render_page()
    page = tmp_path / "page.png"
    cv2.imwrite(str(page), img)
    out = subprocess.run([sys.executable, "-c", READ, str(tiny_bundle), str(page)], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    n_lines, heavy = out.stdout.split()
    assert heavy == "none", f"reading with a bundle imported {heavy}"
    assert int(n_lines) >= 0


def test_the_cli_read_path_stays_torch_free(tiny_bundle: Path, tmp_path: Path) -> None:
    """`ocrslim read --bundle` (what a user runs) also never loads torch."""
    import cv2

    img, _ = render_page()
    cv2.imwrite(str(tmp_path / "p.png"), img)
    code = ("import sys, runpy; sys.argv = ['ocrslim', 'read', '--bundle', sys.argv[1], sys.argv[2], '--json'];"
            "from ocrslim.cli import main; rc = main(sys.argv[1:]);"
            "print('TORCH' if 'torch' in sys.modules else 'CLEAN', file=sys.stderr); sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code, str(tiny_bundle), str(tmp_path / "p.png")],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1] == "CLEAN"
    json.loads(out.stdout)  # machine-readable: MNN's banners went to stderr


# ------------------------------------------------------------------------------------------ runtime install
def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_distributions() -> set[str]:
    """The distributions a runtime-only install holds: pyproject's base dependencies and what they require."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    todo = [Requirement(r) for r in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = _canon(req.name)
        if name in seen:
            continue
        seen.add(name)
        todo += [Requirement(r) for r in md.requires(req.name) or []]
    return seen


def imported_modules(args: list[str]) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run ``python -X importtime ARGS`` and return it with the top-level modules it imported."""
    out = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True, text=True, cwd=REPO,
                         timeout=120)
    names = set(re.findall(r"^import time:\s*\d+ \|\s*\d+ \|\s*(\S+)", out.stderr, re.M))
    return out, {n.split(".")[0] for n in names}


def outside_runtime(modules: set[str]) -> list[str]:
    """The modules (top level) that neither the standard library, ocrslim, nor a runtime distribution provides.

    Left out: modules every interpreter here imports at start-up (site hooks), and optional imports that failed
    (``-X importtime`` lists attempts too, e.g. tqdm's ``envwrap``) because no such module is installed."""
    import importlib.metadata as md
    import importlib.util

    allowed = runtime_distributions() | {"ocrslim"}
    owners = md.packages_distributions()
    _, startup = imported_modules(["-c", "pass"])
    return sorted(m for m in modules - startup - set(sys.stdlib_module_names)
                  if importlib.util.find_spec(m) is not None
                  and not any(_canon(d) in allowed for d in owners.get(m, [])))


def test_runtime_dependencies_are_a_small_declared_set() -> None:
    dists = runtime_distributions()
    assert {"mnn", "onnxruntime", "opencv-python-headless", "numpy"} <= dists
    pipeline_only = {"torch", "onnx", "onnx2torch", "dvc", "hydra-core", "torch-pruning", "rapidocr", "pillow",
                     "shapely"}
    assert not dists & pipeline_only


def test_cli_read_of_a_directory_imports_only_the_runtime(tiny_bundle: Path, tmp_path: Path) -> None:
    """`ocrslim read --bundle B DIR --jsonl`, what a runtime-only install runs, imports nothing pyproject's base
    dependencies do not install (torch, onnx, dvc, hydra, ... are in the [pipeline] extra)."""
    import cv2

    img, _ = render_page()
    for name in ("p1.png", "p2.png"):
        cv2.imwrite(str(tmp_path / name), img)
    out, modules = imported_modules(["-m", "ocrslim", "read", "--bundle", str(tiny_bundle), str(tmp_path),
                                     "--jsonl", "--threads", "1"])
    assert out.returncode == 0, out.stderr[-2000:]
    images = [json.loads(x)["image"] for x in out.stdout.splitlines()]
    assert images == [str(tmp_path / n) for n in ("p1.png", "p2.png")]
    assert "MNN" in modules and "cv2" in modules
    assert outside_runtime(modules) == []


def test_cli_help_and_verify_import_only_the_runtime(tiny_bundle: Path) -> None:
    out, modules = imported_modules(["-m", "ocrslim", "--help"])
    assert out.returncode == 0 and "read" in out.stdout and "verify" in out.stdout
    assert outside_runtime(modules) == []
    out, modules = imported_modules(["-m", "ocrslim", "verify", str(tiny_bundle)])
    assert out.returncode == 0 and "verified" in out.stdout, out.stderr[-2000:]
    assert outside_runtime(modules) == []


def test_a_pipeline_command_without_its_dependency_names_the_extra(monkeypatch, capsys) -> None:
    """In a runtime-only install `ocrslim zoo` (torch) fails with one line naming the [pipeline] extra."""
    from ocrslim import cli
    from ocrslim.stage import run_main

    def missing(args):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    monkeypatch.setattr(cli, "cmd_zoo", missing)
    assert run_main(cli.main, ["zoo"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("error: ocrslim zoo: needs torch, which is not installed. Install the pipeline extra: "
                   "pip install 'ocrslim[pipeline]'.")


# ------------------------------------------------------------------------------------------ det input policy
class _Recorder:
    """A runner that records the input shapes it is given."""

    def __init__(self, runner) -> None:
        self.runner, self.name, self.shapes = runner, runner.name, []

    def __call__(self, x):
        self.shapes.append(tuple(x.shape))
        return self.runner(x)


@pytest.mark.parametrize("policy", [{"limit_type": "max", "limit_side_len": 96},
                                    {"limit_type": "min", "limit_side_len": 480},
                                    {"limit_type": "max", "limit_side_len": 2000, "max_side_len": 320}])
def test_det_input_size_follows_the_manifest(tiny_bundle: Path, tmp_path: Path, policy: dict) -> None:
    """The det policy (limit_type, limit_side_len, max_side_len) is the manifest's, not the sidecar's or the
    default: the detector's input is what that policy gives the page."""
    from ocrslim.infer.pipeline import OCR, open_bundle
    from ocrslim.infer.preprocess import cap_image, det_resize_shape

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["det"]["config"].update(policy, tile_height=0)  # the whole page in one forward: its shape is the policy's
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    det, rec = open_bundle(bundle, threads=1)
    want = dataclasses.replace(DetConfig(limit_side_len=64, limit_type="max", tile_height=0), **policy)
    assert det.det_cfg == want
    det.runner = _Recorder(det.runner)
    img, _ = render_page()  # 640 x 336
    OCR(det, rec).read(img)
    capped, _, _ = cap_image(img, want)
    expect = (1, 3, *det_resize_shape(*capped.shape[:2], want))
    assert det.runner.shapes == [expect]
    assert expect != (1, 3, *det_resize_shape(*img.shape[:2], DetConfig()))  # the default would differ


class _LocalRunner:
    """A 'detector' whose output row r depends on input rows r-2..r+2 only (5-tap vertical mean of channel 0
    plus a row-dependent term): stitched strips with >= 2 rows of overlap must equal the whole page exactly."""

    name = "local"

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, x):
        import numpy as np

        self.shapes.append(tuple(x.shape))
        c = np.pad(x[:, :1], ((0, 0), (0, 0), (2, 2), (0, 0)), mode="edge")
        return sum(c[:, :, k : k + x.shape[2]] for k in range(5)) / 5.0


@pytest.mark.parametrize("h,tile,overlap", [(480, 128, 32), (480, 160, 64), (448, 448, 64), (96, 128, 32),
                                            (512, 96, 32), (480, 128, 0)])
def test_det_strips_stitch_to_the_whole_page(h: int, tile: int, overlap: int) -> None:
    import numpy as np

    from ocrslim.infer.pipeline import det_forward
    from ocrslim.infer.preprocess import normalize

    img = np.random.default_rng(h + tile).integers(0, 256, (h, 64, 3), dtype=np.uint8)
    cfg = DetConfig(tile_height=tile, tile_overlap=overlap)
    whole = _LocalRunner()(normalize(img, cfg.mean, cfg.std)[None])
    runner = _LocalRunner()
    got = det_forward(runner, img, cfg)
    if overlap >= 32 or h <= tile:
        assert np.array_equal(got, whole)
    else:  # no context rows: the strip edges see padding instead of the neighbouring rows
        assert got.shape == whole.shape and not np.array_equal(got, whole)
    want_rows = {h} if h <= tile else {tile}
    assert {s[2] for s in runner.shapes} == want_rows  # one window size: one shape for the runtime to plan
    assert all(s[2] % 32 == 0 for s in runner.shapes)


@pytest.mark.parametrize("scale,want", [(1.0, (256, 64)), (0.5, (256, 64)), (1.1, (288, 96)), (3.0, (768, 192)),
                                        (23.0, (5888, 1472))])
def test_det_strips_follow_the_page_upscaling(scale: float, want: tuple[int, int]) -> None:
    """Strips are rows of the page as given: a page scaled up k-fold gets strips k-fold taller (on the stride
    grid), so a word image upscaled 23× to the detector's 736 rows is read whole, not cut through its letters."""
    import numpy as np

    from ocrslim.infer.pipeline import det_forward, strip_rows

    cfg = DetConfig(tile_height=256, tile_overlap=64)
    assert strip_rows(cfg, scale) == want
    assert strip_rows(DetConfig(tile_height=0), 5.0) == (0, 0)
    runner = _LocalRunner()
    det_forward(runner, np.zeros((736, 96, 3), np.uint8), cfg, scale=scale)
    rows = {s[2] for s in runner.shapes}
    assert rows == ({736} if want[0] >= 736 else {want[0]})


def test_det_tiling_is_read_from_the_manifest(tiny_bundle: Path, tmp_path: Path) -> None:
    from ocrslim.infer.pipeline import OCR, open_bundle

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["det"]["config"].update(limit_type="min", limit_side_len=320, tile_height=128, tile_overlap=32)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    det, rec = open_bundle(bundle, threads=1)
    assert (det.det_cfg.tile_height, det.det_cfg.tile_overlap) == (128, 32)
    det.runner = _Recorder(det.runner)
    img, _ = render_page()  # 640 x 336 -> 608 x 320 at min:320
    OCR(det, rec).read(img)
    assert len(det.runner.shapes) > 1 and {s[2] for s in det.runner.shapes} == {128}


@pytest.mark.parametrize("bad", [{"tile_height": 100}, {"tile_height": 96, "tile_overlap": 64},
                                 {"tile_overlap": 16}])
def test_det_tiling_keys_are_checked(bad: dict) -> None:
    from ocrslim.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"det\.tile_"):
        DetConfig(**bad)


def _benchmark(name: str):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_read_memory_measures_a_fresh_read(tiny_bundle: Path, tmp_path: Path) -> None:
    """benchmarks/read_memory.py: one `ocrslim read` child per page, its own peak RSS (not the parent's)."""
    import cv2

    img, _ = render_page()
    page = tmp_path / "page.png"
    cv2.imwrite(str(page), img)
    row = _benchmark("read_memory").read_one(str(tiny_bundle), page, threads=1)
    assert row["page"] == "page.png" and row["bytes_out"] > 0
    assert 20 < row["peak_rss_mb"] < 2000  # a python process with numpy, OpenCV and MNN, not zero, not the suite's


def test_det_policy_combos_change_several_keys_together() -> None:
    from ocrslim.core.errors import ConfigError
    from ocrslim.eval.pages import ReaderSpec

    mod = _benchmark("det_policy")
    base = ReaderSpec("own", bundle="b")
    rows = mod.variants(base, [], None, [], [], (), ["det.tile_height=256,det.tile_overlap=64,rec.batch_size=1"])
    assert list(rows) == ["own", "det.tile_height=256,det.tile_overlap=64,rec.batch_size=1"]
    assert rows["det.tile_height=256,det.tile_overlap=64,rec.batch_size=1"].overrides == (
        "det.tile_height=256", "det.tile_overlap=64", "rec.batch_size=1")
    with pytest.raises(ConfigError, match="--combo"):
        mod.variants(base, [], None, [], [], (), ["tile_height=256"])


def test_releasing_mnn_memory_between_pages_changes_no_output(tiny_bundle: Path) -> None:
    """The pipeline hands MNN's activation buffers back after each page's detection and recognition
    (``MnnRunner.release``); the next call allocates them again and computes the same numbers."""
    import numpy as np

    from ocrslim.infer.pipeline import OCR, open_bundle
    from ocrslim.infer.runners import MnnRunner

    det, rec = open_bundle(tiny_bundle, threads=1)
    assert isinstance(det.runner, MnnRunner) and isinstance(rec.runner, MnnRunner)
    x = np.random.default_rng(0).random((1, 3, 64, 96), dtype=np.float32)
    before = det.runner(x)
    det.runner.release()
    rec.runner.release()
    assert np.array_equal(det.runner(x), before)
    img, _ = render_page()
    ocr = OCR(det, rec)
    first, second = ocr.read(img), ocr.read(img)
    assert [(ln.text, ln.score) for ln in first] == [(ln.text, ln.score) for ln in second]
    assert all(np.array_equal(a.box, b.box) for a, b in zip(first, second))


def test_read_memory_reports_the_childrens_install() -> None:
    """read_memory.py --python: which OpenCV build the children load and whether torch is installed is recorded
    (the GUI build of the development install costs ~10 MB more than the runtime install's headless one)."""
    env = _benchmark("read_memory").child_install(sys.executable)
    assert env["python"] == sys.executable and env["torch"] is True
    assert env["opencv"].split()[0].count(".") == 2 and ("headless" in env["opencv"] or "GUI" in env["opencv"])


def test_bench_pages_rounds_take_each_ratio_within_its_round() -> None:
    """bench_pages.py --rounds: per-round speedups (measured back to back) summarised by median and range."""
    def one(bundle_ms: float, teacher_ms: float) -> dict:
        return {"bundle": {"sroie_dev": {"t2": {"p50_ms": bundle_ms, "speedup_vs_teacher": teacher_ms / bundle_ms}}},
                "teacher_mnn": {"size_mb": 14.9, "sroie_dev": {"pages": 60, "t2": {"p50_ms": teacher_ms}}}}

    out = _benchmark("bench_pages").round_ratios([one(1000, 1500), one(1200, 1500), one(800, 1600)])
    ratio = out["bundle sroie_dev t2"]["speedup_vs_teacher"]
    assert ratio["rounds"] == [1.5, 1.25, 2.0] and ratio["median"] == 1.5
    assert (ratio["min"], ratio["max"]) == (1.25, 2.0)
    assert out["teacher_mnn sroie_dev t2"]["p50_ms"]["median"] == 1500
    assert "speedup_vs_teacher" not in out["teacher_mnn sroie_dev t2"]
