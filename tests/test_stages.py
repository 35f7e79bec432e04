"""Stage entry points: thin mains, one-line user errors, and the parity gates failing for real."""

from __future__ import annotations

import importlib.util
import json

import pytest
import yaml

from ocrslim.stage import run_main

from .conftest import REPO


def stage(name: str):
    spec = importlib.util.spec_from_file_location(f"stage_{name}", REPO / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_params(tmp_path, **overrides) -> str:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for key, value in overrides.items():
        section, field = key.split("__")
        params[section][field] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return str(path)


@pytest.fixture(scope="module")
def teacher_det(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "det.safetensors"
    params = write_params(tmp_path_factory.mktemp("p"))
    assert stage("teacher").main(["--params", params, "--task", "det", "--out", str(out)]) == 0
    return out


def test_export_writes_onnx_and_metrics_within_tolerance(tmp_path, teacher_det):
    params = write_params(tmp_path)
    out, metrics = tmp_path / "det.onnx", tmp_path / "m.json"
    assert stage("export").main(["--params", params, "--task", "det", "--model", str(teacher_det),
                                 "--out", str(out), "--metrics", str(metrics)]) == 0
    report = json.loads(metrics.read_text())
    assert out.stat().st_size == report["onnx_bytes"]
    assert len(report["max_abs_diff_by_shape"]) == 2  # gated at two input shapes
    assert report["max_abs_diff"] <= 1e-3


def test_export_gate_fails_the_stage_with_the_max_difference(tmp_path, teacher_det, capsys):
    params = write_params(tmp_path, export__det_tol=1e-12)
    out = tmp_path / "det.onnx"
    code = run_main(stage("export").main, ["--params", params, "--task", "det", "--model", str(teacher_det),
                                           "--out", str(out), "--metrics", str(tmp_path / "m.json")])
    err = capsys.readouterr().err
    assert code == 1
    assert "max |a-b| = " in err and "exceeds tolerance 1e-12" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists() and not (tmp_path / "m.json").exists()  # nothing half-written


def test_unknown_teacher_is_one_line(tmp_path, capsys):
    params = write_params(tmp_path, teacher__det="ppocrv9_det")
    code = run_main(stage("teacher").main, ["--params", params, "--task", "det",
                                            "--out", str(tmp_path / "x.safetensors")])
    err = capsys.readouterr().err
    assert code == 1 and "teacher.det: 'ppocrv9_det' is not registered" in err and "ppocrv4_mobile_det" in err
    assert len(err.strip().splitlines()) == 1


def test_bad_params_key_is_one_line(tmp_path, capsys):
    params = write_params(tmp_path, export__opsett=17)
    code = run_main(stage("export").main, ["--params", params, "--task", "det"])
    err = capsys.readouterr().err
    assert code == 1 and "export.opsett is not a ExportConfig field (did you mean 'opset'?)" in err
