"""The ocrslim command line: reading rendered text, evaluating a tiny set, one-line user errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from ocrslim.cli import main
from ocrslim.stage import run_main

from .conftest import REPO, render_line, render_page


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ocrslim", *args], capture_output=True, text=True, cwd=REPO)


@pytest.fixture(scope="module")
def tiny_sets(tmp_path_factory) -> tuple[Path, Path]:
    """A det set (ICDAR layout) of one rendered page and a rec set of three rendered lines."""
    root = tmp_path_factory.mktemp("tiny")
    img, quads = render_page()
    (root / "det" / "images").mkdir(parents=True)
    (root / "det" / "gt").mkdir()
    cv2.imwrite(str(root / "det" / "images" / "page.png"), img)
    lines = ["Total 42.50", "Hello World", "OCR slim 2026"]
    with open(root / "det" / "gt" / "gt_page.txt", "w") as fh:
        for q, text in zip(quads, lines):
            fh.write(",".join(str(int(v)) for v in q.reshape(-1)) + f",{text}\n")
    (root / "rec" / "images").mkdir(parents=True)
    with open(root / "rec" / "labels.tsv", "w") as fh:
        for i, text in enumerate(["Receipt", "CASH 10.00", "Thank you"]):
            cv2.imwrite(str(root / "rec" / "images" / f"w{i}.png"), render_line(text))
            fh.write(f"w{i}.png\t{text}\n")
    return root / "det", root / "rec"


def test_read_line_with_recogniser_only(tmp_path):
    path = tmp_path / "line.png"
    cv2.imwrite(str(path), render_line("Hello World 42"))
    res = cli("read", str(path), "--rec", "ppocrv4_mobile_rec", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["lines"][0]["text"].replace(" ", "") == "HelloWorld42"


def test_read_page_finds_every_line_and_draws(tmp_path, page):
    img, quads = page
    path = tmp_path / "page.png"
    cv2.imwrite(str(path), img)
    out = tmp_path / "drawn.png"
    args = ["read", str(path), "--det", "ppocrv4_mobile_det", "--rec", "ppocrv4_mobile_rec", "--draw", str(out)]
    assert main(args) == 0
    assert cv2.imread(str(out)).shape == img.shape


def test_read_skips_unreadable_images_and_counts_them(tmp_path, capsys):
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), render_line("Fine"))
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\x00garbage")
    code = run_main(main, ["read", str(bad), str(good), "--rec", "ppocrv4_mobile_rec"])
    err = capsys.readouterr()
    assert code == 0
    assert f"{bad}: unreadable image, skipped." in err.err
    assert err.err.strip().splitlines()[-1].startswith("1 pages, ")
    assert err.err.strip().splitlines()[-1].endswith(" ms/page), 1 unreadable")
    assert "Fine" in err.out


def test_read_directory_and_glob_as_json_lines(tmp_path, capsys):
    """A directory expands to its images (sorted, non-images left out); one JSON object per image, an error
    object for an unreadable one; progress and the pages/s summary go to stderr."""
    pages = tmp_path / "pages"
    pages.mkdir()
    for name, text in (("b.png", "Second 22"), ("a.png", "First 11")):
        cv2.imwrite(str(pages / name), render_line(text))
    (pages / "c.jpg").write_bytes(b"\x00not an image")
    (pages / "notes.txt").write_text("not an image either")
    code = run_main(main, ["read", str(pages), "--rec", "ppocrv4_mobile_rec", "--jsonl", "--threads", "1"])
    out = capsys.readouterr()
    assert code == 0
    rows = [json.loads(line) for line in out.out.splitlines()]
    assert [Path(r["image"]).name for r in rows] == ["a.png", "b.png", "c.jpg"]
    assert [r["lines"][0]["text"].replace(" ", "") for r in rows[:2]] == ["First11", "Second22"]
    assert rows[2] == {"image": str(pages / "c.jpg"), "error": "unreadable image"}
    assert f"{pages / 'c.jpg'}: unreadable image, skipped." in out.err
    summary = out.err.strip().splitlines()[-1]
    assert summary.startswith("2 pages, ") and "pages/s (" in summary and summary.endswith(" ms/page), 1 unreadable")

    # a glob: the same images, sorted; a pattern matching nothing is one line and counts as unreadable
    code = run_main(main, ["read", str(pages / "*.png"), str(tmp_path / "none*.png"), "--rec", "ppocrv4_mobile_rec",
                           "--jsonl"])
    out = capsys.readouterr()
    assert code == 0
    assert [Path(json.loads(x)["image"]).name for x in out.out.splitlines()] == ["a.png", "b.png", "none*.png"]
    assert f"{tmp_path / 'none*.png'}: no image matches this pattern, skipped." in out.err


def test_read_exits_1_when_nothing_is_readable(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_main(main, ["read", str(empty), "--rec", "ppocrv4_mobile_rec", "--jsonl"]) == 1
    err = capsys.readouterr().err
    assert f"{empty}: no images in this directory, skipped." in err and "0 pages, 1 unreadable" in err


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--rec", "ppocrv4_mobile_recc"], "is not registered (did you mean 'ppocrv4_mobile_rec'?)"),
        (["--rec", "missing/model.onnx"], "missing/model.onnx: model file not found"),
        (["--rec", "ppocrv4_mobile_det"], "is a det model, given for rec"),
        (["--rec", "model.tflite"], "model file not found"),
    ],
)
def test_user_errors_are_one_line_without_traceback(tmp_path, args, expect):
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), render_line("x"))
    res = cli("read", str(img), *args)
    assert res.returncode == 1
    assert expect in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


def test_missing_dictionary_is_one_line(tmp_path):
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), render_line("x"))
    res = cli("read", str(img), "--rec", "ppocrv4_mobile_rec", "--dict", str(tmp_path / "nodict.txt"))
    assert res.returncode == 1 and "dictionary not found" in res.stderr and "Traceback" not in res.stderr


def test_wrong_dictionary_size_is_reported(tmp_path):
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), render_line("x"))
    d = tmp_path / "d.txt"
    d.write_text("a\nb\n")
    res = cli("read", str(img), "--rec", "ppocrv4_mobile_rec", "--dict", str(d))
    assert res.returncode == 1 and "6625 classes but the dictionary gives 4" in res.stderr


def test_eval_json_shape_and_values_on_rendered_sets(tiny_sets, tmp_path):
    det, rec = tiny_sets
    out = tmp_path / "m.json"
    code = main(["eval", "--det", "ppocrv4_mobile_det", "--rec", "ppocrv4_mobile_rec", "--det-data", str(det),
                 "--rec-data", str(rec), "--json", str(out), "--quiet"])
    assert code == 0
    m = json.loads(out.read_text())
    assert set(m) == {"det", "rec", "e2e"}
    assert set(m["det"]) == {"precision", "recall", "hmean", "images"}
    assert set(m["rec"]) == {"accuracy", "accuracy_ci_alnum", "one_minus_ned", "cer", "samples"}
    assert "f1" in m["e2e"]
    assert m["det"]["images"] == 1 and m["rec"]["samples"] == 3
    # clean rendered text: the teacher finds every line and reads every word
    assert m["det"]["hmean"] == 1.0
    assert m["rec"]["accuracy_ci_alnum"] == 1.0
    assert m["e2e"]["f1"] >= 2 / 3


def test_malformed_gt_line_names_file_and_line(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "gt").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), render_line("a"))
    (tmp_path / "gt" / "gt_a.txt").write_text("1,2,3,4,5,6,7,8,ok\n1,2,x,4,5,6,7,8,bad\n")
    res = cli("eval", "--det", "ppocrv4_mobile_det", "--det-data", str(tmp_path), "--quiet")
    assert res.returncode == 1
    assert f"{tmp_path / 'gt' / 'gt_a.txt'}:2:" in res.stderr and "Traceback" not in res.stderr


def test_python_dash_m_matches_entry_point():
    res = cli("zoo")
    assert res.returncode == 0 and "ppocrv6_small_rec" in res.stdout


def test_samples_sheet_draws_pages_and_crops(tiny_sets, tmp_path):
    det, rec = tiny_sets
    out = tmp_path / "sheet.png"
    assert main(["samples", "--det-data", str(det), "--rec-data", str(rec), "--out", str(out)]) == 0
    sheet = cv2.imread(str(out))
    assert sheet.shape[0] == 420 + 3 * 48  # one page row, three labelled crops
    red = (sheet[:420, :, 2] > 200) & (sheet[:420, :, 1] < 60) & (sheet[:420, :, 0] < 60)
    assert red.sum() > 100  # the GT quads are drawn in red
    assert sheet[:420].min() < 100  # the page has dark text
