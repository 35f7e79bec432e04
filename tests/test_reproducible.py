"""What makes a cold `dvc repro` reproducible on another machine: the font lock, the pinned dependency
closure, and the fixed thread counts of every stage process (tests/test_faults.py runs the tiny DAG twice)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import ImageFont

from ocrslim.core.config import FONT_LOCK, DataConfig
from ocrslim.core.errors import DataError
from ocrslim.data.fonts import discover_fonts, read_font_lock, write_font_lock
from ocrslim.stage import STAGE_THREADS, THREAD_ENV, run_main

from .conftest import REPO


def _fonts(tmp_path: Path, n: int = 3) -> list[Path]:
    """``n`` font files (copies of Pillow's bundled font) named f0.ttf, f1.ttf, ..."""
    data = ImageFont.load_default(size=10).font_bytes  # type: ignore[union-attr]
    paths = []
    for i in range(n):
        p = tmp_path / f"f{i}.ttf"
        p.write_bytes(data)
        paths.append(p)
    return paths


def test_lock_round_trip_keeps_order_and_hashes(tmp_path: Path) -> None:
    paths = _fonts(tmp_path)
    lock = tmp_path / "fonts.lock"
    entries = write_font_lock(lock, [str(tmp_path / "*.ttf")])
    assert [e.path for e in entries] == [str(p) for p in paths]
    # the lock's order is the load order, whatever the file system says
    lines = lock.read_text().splitlines()
    body = [ln for ln in lines if not ln.startswith("#")]
    lock.write_text("\n".join([*lines[:3], *reversed(body)]) + "\n")
    fonts = discover_fonts([str(lock)])
    assert [f.path for f in fonts] == [str(p) for p in reversed(paths)]
    assert all(f.sha256 == e.sha256 for f, e in zip(fonts, reversed(entries)))


def test_missing_or_changed_locked_font_is_one_line_naming_the_package(tmp_path: Path) -> None:
    a, b, _ = _fonts(tmp_path)
    lock = tmp_path / "fonts.lock"
    entries = write_font_lock(lock, [str(a), str(b)])
    lock.write_text("".join(f"{e.sha256}  {e.path}  fonts-demo  1.0-1\n" for e in entries))
    b.unlink()
    with pytest.raises(DataError) as info:
        discover_fonts([str(lock)])
    msg = str(info.value)
    assert "\n" not in msg and str(b) in msg and "fonts-demo" in msg and "bash setup.sh" in msg
    b.write_bytes(a.read_bytes() + b"\0")  # another build of the same file
    with pytest.raises(DataError, match="sha256") as info:
        discover_fonts([str(lock)])
    assert "\n" not in str(info.value) and "fonts-demo (locked version 1.0-1)" in str(info.value)
    assert "python -m ocrslim.data.fonts --lock" in str(info.value)


@pytest.mark.parametrize("text, match", [
    ("nothing here\n", "expected 'sha256 path debian-package"),
    ("# only a comment\n", "lists no font"),
])
def test_malformed_lock_is_one_line(tmp_path: Path, text: str, match: str) -> None:
    lock = tmp_path / "x.lock"
    lock.write_text(text)
    with pytest.raises(DataError, match=match) as info:
        read_font_lock(lock)
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="not found"):
        read_font_lock(tmp_path / "none.lock")


def test_committed_lock_is_the_data_default_and_a_data_stage_dep() -> None:
    import yaml

    assert DataConfig().fonts == (FONT_LOCK,)
    entries = read_font_lock(REPO / FONT_LOCK)
    assert len(entries) == len({e.path for e in entries}) and all(e.package != "-" for e in entries)
    assert any("wqy" in e.path for e in entries)  # the CJK font the Chinese lines need
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["data"]
    assert FONT_LOCK in stage["deps"] and "data.fonts" in stage["params"]
    setup = (REPO / "setup.sh").read_text()
    assert FONT_LOCK in setup  # setup.sh installs the packages the lock names


def test_committed_lock_matches_this_machine() -> None:
    entries = read_font_lock(REPO / FONT_LOCK)
    missing = [e.path for e in entries if not Path(e.path).is_file()]
    if missing:
        pytest.skip(f"{len(missing)} locked fonts not installed here (bash setup.sh)")
    fonts = discover_fonts([str(REPO / FONT_LOCK)], DataConfig().font_exclude, need_cjk=True)
    assert [f.path for f in fonts] == [e.path for e in entries]  # none excluded, order kept


def test_lock_command_writes_a_lock(tmp_path: Path) -> None:
    _fonts(tmp_path, 2)
    out = tmp_path / "new.lock"
    res = subprocess.run([sys.executable, "-m", "ocrslim.data.fonts", "--lock", "--out", str(out), "--fonts",
                          str(tmp_path / "*.ttf")], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert [e.path for e in read_font_lock(out)] == [str(tmp_path / "f0.ttf"), str(tmp_path / "f1.ttf")]


# ------------------------------------------------------------------------------------------ constraints
def _constraints_module():
    spec = importlib.util.spec_from_file_location("constraints_script", REPO / "scripts" / "constraints.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_constraints_pin_exactly_the_installed_dependency_closure() -> None:
    mod = _constraints_module()
    pins = mod.read_pins()
    assert pins["torch"] == "2.13.0"  # setup.sh takes the CPU wheel on disk by this exact pin
    found = mod.closure()
    assert "ocrslim" not in pins and {"dvc", "mnn", "pytest", "onnxruntime"} <= set(found)
    problems = mod.problems(pins, found)
    assert problems == [], "\n".join(problems)
    assert "-c constraints.txt" in (REPO / "setup.sh").read_text()  # what setup.sh installs with


def test_constraints_check_reports_a_stray_pin(tmp_path: Path) -> None:
    mod = _constraints_module()
    found = {"numpy": ("numpy", "2.0.0"), "torch": ("torch", "2.13.0+cpu")}
    pins = {"numpy": "2.0.0", "torch": "2.13.0", "awscli": "1.0"}
    assert [p.split(":")[0] for p in mod.problems(pins, found)] == ["awscli==1.0"]
    assert mod.problems({"numpy": "1.0", "torch": "2.13.0"}, found)[0].startswith("numpy: installed 2.0.0")
    assert "torch==2.13.0\n" in mod.render(found)


# ------------------------------------------------------------------------------------------ threads
def test_stage_process_runs_with_fixed_threads_and_restores_them() -> None:
    import torch

    before_env = {k: os.environ.get(k) for k in THREAD_ENV}
    before = torch.get_num_threads()
    seen = {}

    def main(argv):
        seen["env"] = {k: os.environ.get(k) for k in THREAD_ENV}
        seen["torch"] = torch.get_num_threads()
        return 0

    assert run_main(main) == 0  # as DVC starts a stage: argv from sys.argv
    assert seen["env"] == dict.fromkeys(THREAD_ENV, str(STAGE_THREADS)) and seen["torch"] == STAGE_THREADS
    assert torch.get_num_threads() == before and {k: os.environ.get(k) for k in THREAD_ENV} == before_env
    seen.clear()
    assert run_main(main, []) == 0  # called in-process with arguments: thread settings left alone
    assert seen["torch"] == before


def test_a_stage_subprocess_gets_the_fixed_thread_count() -> None:
    code = ("import os, torch; from ocrslim.stage import run_main; "
            "run_main(lambda a: print(os.environ['OMP_NUM_THREADS'], torch.get_num_threads()) or 0)")
    env = {**os.environ, "OMP_NUM_THREADS": "7"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    assert out.stdout.split() == [str(STAGE_THREADS)] * 2, out.stderr
