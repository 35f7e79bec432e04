"""Hostile inputs, swept over every reader and command-line entry: each is a one-line error or a counted skip,
never a traceback and never a silently wrong metric (docs/reliability.md has the table).

Images: zero-byte, truncated, not an image, 1x1, 12000x9000 (over the MAX_PIXELS cap: skipped from its
header, memory stays bounded), 16-bit (scaled by its range, not stretched), grayscale, RGBA. Label files:
non-UTF-8, a line without a tab, a missing image. GT: NaN, inf, text, huge, negative and wholly-outside
coordinates. Dictionaries: duplicates, blank lines, empty, non-UTF-8. params.yaml: a key typo, a wrong type,
broken YAML, non-UTF-8. An empty calibration folder. Damaged model files.
"""

from __future__ import annotations

import importlib
import io
import json
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from ocrslim.cli import main as cli_main
from ocrslim.core.errors import OcrslimError
from ocrslim.data.datasets import load_det_dataset, load_rec_dataset
from ocrslim.eval.evaluate import score_det, score_rec
from ocrslim.infer.pipeline import OCR, open_model
from ocrslim.infer.preprocess import MAX_PIXELS, read_image_checked
from ocrslim.stage import run_main

from .conftest import REPO, render_line, render_page

OK = None  # expectation: the image is read


def _png(img: np.ndarray) -> bytes:
    return cv2.imencode(".png", img)[1].tobytes()


def _huge_png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (12000, 9000), 255).save(buf, "PNG")  # 108 MP of white, ~130 kB compressed
    return buf.getvalue()


def _forged_png(w: int, h: int) -> bytes:
    """A PNG header claiming ``w`` x ``h`` RGB pixels, with no pixel data behind it."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


LINE = render_line("Hello")
IMAGES: dict[str, tuple[Callable[[], bytes], str | None]] = {
    "zero-byte": (lambda: b"", "empty file"),
    "truncated": (lambda: _png(LINE)[: len(_png(LINE)) // 2], "unreadable image"),
    "not an image": (lambda: b"just a text file\n" * 10, "unreadable image"),
    # forged header: 1.2 GB if decoded
    "forged header": (lambda: _forged_png(20000, 20000), "image too large (20000x20000 = 400.0 MP"),
    "12000x9000": (_huge_png, "image too large (12000x9000 = 108.0 MP"),
    "1x1": (lambda: _png(np.full((1, 1, 3), 255, np.uint8)), OK),
    "16-bit": (lambda: _png(LINE.astype(np.uint16) * 257), OK),
    "grayscale": (lambda: _png(cv2.cvtColor(LINE, cv2.COLOR_BGR2GRAY)), OK),
    "RGBA": (lambda: _png(np.dstack([LINE, np.full(LINE.shape[:2], 255, np.uint8)])), OK),
}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile")
    out = {}
    for i, (name, (make, _)) in enumerate(IMAGES.items()):
        out[name] = root / f"{i}_{name.replace(' ', '_')}.png"
        out[name].write_bytes(make())
    return out


@pytest.fixture(scope="module")
def ocr() -> OCR:
    return OCR(open_model("ppocrv4_mobile_det", "det", threads=1), open_model("ppocrv4_mobile_rec", "rec", threads=1))


def _run(main, argv: list[str], capsys) -> tuple[int, str, str]:
    code = run_main(main, argv)
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err, cap.err
    return code, cap.out, cap.err


def _one_line_error(code: int, err: str, expect: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("\r")]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert expect in lines[0], lines[0]


# ------------------------------------------------------------------------------------------ images
@pytest.mark.parametrize("name", list(IMAGES))
def test_image_reader(images, name) -> None:
    img, why = read_image_checked(images[name])
    expect = IMAGES[name][1]
    if expect is OK:
        assert why is None and img is not None and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
        if name != "1x1":
            assert np.abs(img.astype(int) - LINE.astype(int)).max() <= 1  # same pixels, whatever the encoding
    else:
        assert img is None and why is not None and why.startswith(expect)


def test_16_bit_is_scaled_by_its_range_not_stretched(tmp_path) -> None:
    dark = np.full((8, 8, 3), 1000, np.uint16)  # a dark 16-bit image stays dark (1000/257 = 3.9)
    dark[0, 0] = 2000
    (tmp_path / "d.png").write_bytes(_png(dark))
    img, _ = read_image_checked(tmp_path / "d.png")
    assert img[1, 1].tolist() == [4, 4, 4] and img[0, 0].tolist() == [8, 8, 8]
    assert MAX_PIXELS == 50_000_000


def test_huge_image_is_refused_before_decoding(images) -> None:
    """The 108 MP image would take ~324 MB as BGR: peak RSS grows by far less when it is refused."""
    code = (
        "import resource, sys; from ocrslim.infer.preprocess import read_image_checked; "
        "b = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
        f"img, why = read_image_checked({str(images['12000x9000'])!r}); "
        "print(img is None, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - b) // 1024)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    refused, grew_mb = res.stdout.split()
    assert refused == "True" and int(grew_mb) < 32, res.stdout + res.stderr


@pytest.mark.parametrize("name", list(IMAGES))
def test_cli_read(images, name, capsys) -> None:
    code, out, err = _run(cli_main, ["read", str(images[name]), "--det", "ppocrv4_mobile_det", "--rec",
                                     "ppocrv4_mobile_rec", "--threads", "1"], capsys)
    expect = IMAGES[name][1]
    if expect is OK:
        assert code == 0 and f"== {images[name]}" in out
    else:  # a counted skip: the file, why, and the count
        assert code == 1 and f"{images[name]}: {expect}" in err and "1 unreadable" in err


def test_eval_counts_every_hostile_image_and_scores_the_rest(images, tmp_path, ocr, capsys) -> None:
    rec = tmp_path / "rec"
    (rec / "images").mkdir(parents=True)
    rows = []
    for path in images.values():
        (rec / "images" / path.name).write_bytes(path.read_bytes())
        rows.append(f"{path.name}\tHello\n")
    (rec / "labels.tsv").write_text("".join(rows))
    bad = sum(1 for _, expect in IMAGES.values() if expect is not OK)
    res = score_rec(ocr, load_rec_dataset(rec))
    assert res["skipped"] == bad and res["rec"]["samples"] == len(IMAGES) - bad
    code, out, err = _run(cli_main, ["eval", "--rec", "ppocrv4_mobile_rec", "--rec-data", str(rec), "--quiet",
                                     "--threads", "1"], capsys)
    assert code == 0 and json.loads(out)["skipped"] == bad
    assert f"skipped {bad} unreadable image(s)" in err
    for name, path in images.items():
        assert (f"{path.name}: {IMAGES[name][1]}" in err) == (IMAGES[name][1] is not OK)


# ------------------------------------------------------------------------------------------ label files
def _rec_set(root: Path, labels: bytes) -> Path:
    (root / "images").mkdir(parents=True)
    cv2.imwrite(str(root / "images" / "a.png"), LINE)
    (root / "labels.tsv").write_bytes(labels)
    return root


@pytest.mark.parametrize("labels, expect", [
    (b"a.png\tHello\n\xff\xfe\xfa bad bytes\n", "not valid UTF-8"),
    (b"a.png\tHello\nb.png Hello with no tab\n", "labels.tsv:2: no tab"),
    (b"a.png\tHello\n\tno name\n", "labels.tsv:2: empty image path"),
])
def test_bad_labels_tsv_is_one_line(tmp_path, labels, expect, capsys) -> None:
    rec = _rec_set(tmp_path / "rec", labels)
    with pytest.raises(OcrslimError, match=expect):
        load_rec_dataset(rec)
    code, _, err = _run(cli_main, ["eval", "--rec", "ppocrv4_mobile_rec", "--rec-data", str(rec), "--quiet"], capsys)
    _one_line_error(code, err, expect)


def test_missing_image_and_blank_lines_in_labels(tmp_path, ocr) -> None:
    rec = _rec_set(tmp_path / "rec", b"\na.png\tHello\n\n  \nmissing.png\tHello\n")
    res = score_rec(ocr, load_rec_dataset(rec), warn=lambda m: None)
    assert res["skipped"] == 1 and res["rec"]["samples"] == 1 and res["rec"]["accuracy"] == 1.0


# ------------------------------------------------------------------------------------------ det GT
def _det_set(root: Path, extra: str = "") -> Path:
    img, quads = render_page()
    (root / "images").mkdir(parents=True)
    (root / "gt").mkdir()
    cv2.imwrite(str(root / "images" / "p.png"), img)
    text = "".join(",".join(str(int(v)) for v in q.reshape(-1)) + f",{t}\n"
                   for q, t in zip(quads, ["Total 42.50", "Hello World", "OCR slim 2026"]))
    (root / "gt" / "gt_p.txt").write_text(text + extra)
    return root


@pytest.mark.parametrize("line, expect", [
    ("nan,1,2,1,2,2,1,2,x", "coordinate 'nan' is not finite"),
    ("1,1,inf,1,2,2,1,2,x", "coordinate 'inf' is not finite"),
    ("1,1,one,1,2,2,1,2,x", "coordinate 'one' is not a number"),
    ("1,1,1e30,1,2,2,1,2,x", "coordinate '1e30' is out of range"),
    ("1,1,2,1,2,2,x", "expected 8 coordinates and a transcription"),
])
def test_bad_gt_is_one_line(tmp_path, line, expect, capsys) -> None:
    det = _det_set(tmp_path / "det", line + "\n")
    with pytest.raises(OcrslimError, match=expect):
        load_det_dataset(det)
    code, _, err = _run(cli_main, ["eval", "--det", "ppocrv4_mobile_det", "--det-data", str(det), "--quiet"], capsys)
    _one_line_error(code, err, f"gt_p.txt:4: {expect}")


def test_gt_outside_the_image_is_dropped_and_counted_not_a_miss(tmp_path, ocr) -> None:
    """Without clipping, a GT box wholly outside the page would be an unmatched GT: recall 3/4, silently."""
    clean = score_det(ocr, load_det_dataset(_det_set(tmp_path / "a")))
    assert clean["det"]["hmean"] == 1.0
    outside = _det_set(tmp_path / "b", "-500,-90,-300,-90,-300,-40,-500,-40,far away\n"
                                       "5000,10,5600,10,5600,60,5000,60,past the edge\n")
    warned: list[str] = []
    res = score_det(ocr, load_det_dataset(outside), warn=warned.append)
    assert res["det"]["hmean"] == 1.0 and res["det"]["gt_dropped"] == 2 and "gt_clipped" not in res["det"]
    assert res["e2e"] == clean["e2e"] and len(warned) == 1 and "2 GT box(es) wholly outside" in warned[0]
    partly = _det_set(tmp_path / "c", "-20,300,60,300,60,340,-20,340,###\n")  # a don't-care box over the edge
    res = score_det(ocr, load_det_dataset(partly), warn=warned.append)
    assert res["det"]["gt_clipped"] == 1 and res["det"]["hmean"] == 1.0


# ------------------------------------------------------------------------------------------ dictionaries
@pytest.mark.parametrize("text, expect", [
    ("a\nb\na\n", "'a' is listed twice (first on line 1)"),
    ("a\n\nb\n", ":2: blank line in the dictionary"),
    ("", "dictionary is empty"),
    (b"a\n\xff\n", "dictionary is not UTF-8"),
])
def test_bad_dictionary_is_one_line(tmp_path, images, text, expect, capsys) -> None:
    d = tmp_path / "dict.txt"
    d.write_bytes(text if isinstance(text, bytes) else text.encode())
    code, _, err = _run(cli_main, ["read", str(images["grayscale"]), "--rec", "ppocrv4_mobile_rec", "--dict",
                                   str(d)], capsys)
    _one_line_error(code, err, expect)
    from ocrslim.data.text import load_charset  # the synthetic data's dictionary reader is the same one

    with pytest.raises(OcrslimError, match=expect.replace("(", r"\(").replace(")", r"\)")):
        load_charset(str(d))


# ------------------------------------------------------------------------------------------ params, calibration
def _params(tmp_path: Path, text: bytes) -> str:
    p = tmp_path / "params.yaml"
    p.write_bytes(text)
    return str(p)


@pytest.mark.parametrize("text, expect", [
    (b"data:\n  det_trian: 4\n", "data.det_trian is not a DataConfig field (did you mean 'det_train'?)"),
    (b"data:\n  det_train: many\n", "data.det_train"),
    (b"data: [unclosed\n", "not valid YAML at line 2"),
    (b"data:\n  out: \xff\xfe\n", "not UTF-8 text"),
    (b"- a list\n", "top level must be a mapping"),
])
def test_bad_params_is_one_line(tmp_path, text, expect, capsys) -> None:
    main = importlib.import_module("stages.data").main
    code, _, err = _run(main, ["--params", _params(tmp_path, text), "--out", str(tmp_path / "synth")], capsys)
    _one_line_error(code, err, expect)
    assert not (tmp_path / "synth").exists()


def test_empty_calibration_folder_is_one_line(tmp_path, capsys) -> None:
    src = tmp_path / "calib"
    (src / "det").mkdir(parents=True)
    (src / "rec").mkdir()
    main = importlib.import_module("stages.calibrate").main
    params = _params(tmp_path, f"calibrate:\n  source: {src}\n".encode())
    code, _, err = _run(main, ["--params", params, "--out", str(tmp_path / "out")], capsys)
    _one_line_error(code, err, str(src / "det"))
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ model files
@pytest.mark.parametrize("suffix, payload, expect", [
    (".safetensors", b"", "not a safetensors model file"),
    (".safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":", "damaged safetensors header"),
    (".onnx", b"\x08\x07garbage", "det.onnx: "),
    (".onnx", b"", "det.onnx: "),
    (".mnn", b"\x00" * 64, "det.mnn: "),
    (".pt", b"\x80\x04junk", "a torch pickle"),
    (".bin", b"x", "unknown model suffix"),
])
def test_damaged_model_file_is_one_line(tmp_path, images, suffix, payload, expect, capsys) -> None:
    model = tmp_path / f"det{suffix}"
    model.write_bytes(payload)
    code, _, err = _run(cli_main, ["read", str(images["grayscale"]), "--det", str(model)], capsys)
    _one_line_error(code, err, expect)
