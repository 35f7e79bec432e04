"""The deployable bundle: manifest contents, sha256 verification, one-line errors."""

from __future__ import annotations

import json

import pytest

from ocrslim.bundle import build_bundle, verify_bundle
from ocrslim.config import DetConfig, RecConfig, to_dict
from ocrslim.errors import ArtifactError


def _model(tmp_path, task, payload, **extra):
    path = tmp_path / "quant" / f"{task}.mnn"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(payload)
    meta = {"task": task, "config": {task: to_dict(DetConfig(thresh=0.25) if task == "det" else RecConfig())},
            **extra}
    if task == "rec":
        meta["characters"] = ["a", "b", "中"]
    (path.parent / f"{task}.mnn.json").write_text(json.dumps(meta))
    return path


def test_manifest_carries_precision_configs_dictionary_and_sha(tmp_path):
    det = _model(tmp_path, "det", b"det-int8", precision="int8", float_layers=["head.conv"], quant_method="KL")
    rec = _model(tmp_path, "rec", b"rec-fp16", precision="fp16")
    m = build_bundle(det, rec, tmp_path / "bundle", {"det": {"drop_sroie_dev": 0.4}})
    out = tmp_path / "bundle"
    assert sorted(p.name for p in out.iterdir()) == ["det.mnn", "dict.txt", "manifest.json", "rec.mnn"]
    assert json.loads((out / "manifest.json").read_text()) == m
    assert m["det"]["precision"] == "int8" and m["det"]["float_layers"] == ["head.conv"]
    assert m["rec"]["precision"] == "fp16" and "float_layers" not in m["rec"]
    assert m["det"]["config"]["thresh"] == 0.25  # the model's own post-processing, not a default
    assert m["det"]["shipped_with"] == {"drop_sroie_dev": 0.4} and "shipped_with" not in m["rec"]
    assert (out / "dict.txt").read_text(encoding="utf-8") == "a\nb\n中\n"
    assert m["det"]["size_bytes"] == len(b"det-int8")
    assert verify_bundle(out) == m
    (out / "rec.mnn").write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="sha256 differs"):
        verify_bundle(out)


def test_wrong_task_or_missing_sidecar_is_one_line(tmp_path):
    det = _model(tmp_path, "det", b"x")
    rec = _model(tmp_path, "rec", b"y")
    with pytest.raises(ArtifactError, match="expected 'det'"):
        build_bundle(rec, det, tmp_path / "b")
    (tmp_path / "quant" / "rec.mnn.json").unlink()
    with pytest.raises(ArtifactError, match="sidecar"):
        build_bundle(det, rec, tmp_path / "b")
    assert not (tmp_path / "b").exists()  # nothing half-written
