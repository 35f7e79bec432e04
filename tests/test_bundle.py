"""The deployable bundle: manifest contents, verification on read (sha256, size, paths), one-line errors."""

from __future__ import annotations

import json

import pytest

from ocrslim.core.artifacts import read_manifest
from ocrslim.core.config import DetConfig, RecConfig, to_dict
from ocrslim.core.errors import ArtifactError
from ocrslim.export.bundle import build_bundle, describe_bundle


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
    read = read_manifest(out)
    assert read["det"]["path"] == (out / "det.mnn").resolve() and read["rec"]["sha256"] == m["rec"]["sha256"]
    assert describe_bundle(out)["det"]["float_layers"] == ["head.conv"]


@pytest.mark.parametrize("damage, message", [
    (lambda b: (b / "rec.mnn").write_bytes(b"rec-fp17"), "sha256 differs"),         # same size, other bytes
    (lambda b: (b / "rec.mnn").write_bytes(b"rec"), "bytes, manifest.json says"),    # truncated
    (lambda b: (b / "det.mnn").unlink(), "missing"),
    (lambda b: (b / "dict.txt").write_text("a\nb\nc\n"), "sha256 differs"),
])
def test_damaged_bundle_is_refused_in_one_line(tmp_path, damage, message):
    out = tmp_path / "bundle"
    build_bundle(_model(tmp_path, "det", b"det-int8"), _model(tmp_path, "rec", b"rec-fp16"), out)
    damage(out)
    with pytest.raises(ArtifactError, match=message) as info:
        read_manifest(out)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["../outside.mnn", "/etc/passwd", "sub/../../x.mnn"])
def test_manifest_paths_must_stay_inside_the_bundle(tmp_path, name):
    out = tmp_path / "bundle"
    build_bundle(_model(tmp_path, "det", b"det-int8"), _model(tmp_path, "rec", b"rec-fp16"), out)
    (tmp_path / "outside.mnn").write_bytes(b"det-int8")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["det"]["file"] = name
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="outside the bundle"):
        read_manifest(out)


def test_wrong_task_or_missing_sidecar_is_one_line(tmp_path):
    det = _model(tmp_path, "det", b"x")
    rec = _model(tmp_path, "rec", b"y")
    with pytest.raises(ArtifactError, match="expected 'det'"):
        build_bundle(rec, det, tmp_path / "b")
    (tmp_path / "quant" / "rec.mnn.json").unlink()
    with pytest.raises(ArtifactError, match="sidecar"):
        build_bundle(det, rec, tmp_path / "b")
    assert not (tmp_path / "b").exists()  # nothing half-written
