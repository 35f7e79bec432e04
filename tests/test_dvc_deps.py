"""dvc.yaml sees every dependency: each stage's deps cover every project module its entry point imports.

The imports are derived from the source (every ``import`` statement, function-level ones included, and every
parent package's ``__init__``), the way ``../shared/tools/stage_deps_check.py`` does: a change to any module a
stage can run must make DVC rerun that stage, or a gate (the quantize stage's accuracy gate above all) could
pass a model it never measured.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from .conftest import REPO


def _module_file(name: str) -> Path | None:
    parts = name.split(".")
    for cand in (REPO.joinpath(*parts).with_suffix(".py"), REPO.joinpath(*parts, "__init__.py")):
        if cand.is_file():
            return cand
    return None


def imports_of(path: Path, seen: set[Path] | None = None) -> set[Path]:
    """The project files ``path`` imports, transitively (itself included)."""
    seen = set() if seen is None else seen
    if path in seen:
        return seen
    seen.add(path)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    pkg = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)] if pkg else []
                base = ".".join([*up, base] if base else up)
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                f = _module_file(".".join(parts[:i]))
                if f is not None:
                    imports_of(f, seen)
    return seen


def _stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def _entry(cmd: str) -> Path:
    m = re.search(r"python3?\s+-m\s+([\w.]+)", cmd)
    assert m, f"stage cmd {cmd!r} does not run `python -m stages.<name>`"
    f = _module_file(m.group(1))
    assert f is not None, f"{m.group(1)}: no such module"
    return f


@pytest.mark.parametrize("name", sorted(_stages()))
def test_deps_cover_every_imported_module(name: str) -> None:
    stage = _stages()[name]
    body = stage.get("do", stage)
    deps = [REPO / re.sub(r"\$\{[^}]+\}", "*", d if isinstance(d, str) else next(iter(d))) for d in body["deps"]]
    missing = []
    for f in sorted(imports_of(_entry(body["cmd"]))):
        covered = any(f == d or d in f.parents or ("*" in str(d) and f.match(str(d.relative_to(REPO))))
                      for d in deps)
        if not covered:
            missing.append(str(f.relative_to(REPO)))
    assert not missing, f"dvc.yaml stage {name} imports {missing} without listing them in deps"


def test_the_check_catches_a_missing_dep(tmp_path: Path) -> None:
    """The check itself can fail: the quantize stage does import the post-processing through the gate."""
    quantize = _stages()["quantize"]
    files = {str(f.relative_to(REPO)) for f in imports_of(_entry(quantize["cmd"]))}
    assert {"ocrslim/infer/postprocess.py", "ocrslim/eval/metrics.py", "ocrslim/data/datasets.py"} <= files
