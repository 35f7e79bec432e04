"""docs/scale_out.md's remote flow on a toy repo: push to a local-directory remote, clone, pull, nothing to repro."""

from __future__ import annotations

from .test_select import make_toy_repo
from .toyrepo import sh


def test_local_remote_push_clone_pull_then_repro_is_noop(tmp_path):
    root = make_toy_repo(tmp_path / "toy")
    store = tmp_path / "store"
    sh(["dvc", "remote", "add", "-d", "store", str(store)], root)
    sh(["git", "commit", "-qam", "remote store"], root)
    assert "1 file pushed" in sh(["dvc", "push"], root).stdout
    assert any(p.is_file() for p in store.rglob("*"))

    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(root), str(clone)], tmp_path)
    assert not (clone / "model.bin").exists()  # outputs live in the DVC cache/remote, not in git
    pulled = sh(["dvc", "pull"], clone)
    assert "1 file added" in pulled.stdout, pulled.stdout
    assert (clone / "model.bin").read_bytes() == (root / "model.bin").read_bytes()
    repro = sh(["dvc", "repro"], clone)
    assert "Running stage" not in repro.stdout
    assert "Data and pipelines are up to date." in repro.stdout
    assert "in sync" in sh(["dvc", "status", "-c"], clone).stdout
