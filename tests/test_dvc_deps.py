"""dvc.yaml sees every dependency: each stage's deps cover every project module its entry point imports.

The imports are derived from the source (every ``import`` statement, function-level ones included, and every
parent package's ``__init__``), the way ``../shared/tools/stage_deps_check.py`` does: a change to any module a
stage can run must make DVC rerun that stage, or a gate (the quantize stage's accuracy gate above all) could
pass a model it never measured.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from ocrslim.core.config import SECTIONS, DetConfig, RecConfig

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


# ------------------------------------------------------------------------------------- params: what a stage reads
#: Keys that change no output (runtime settings), left out of every stage's params on purpose.
RUNTIME_ONLY = {"data.workers"}


def _preprocessing_keys(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in cls.POSTPROCESSING)


#: Sections a stage loads but reads only part of: ``{stage: {section: keys read}}``. The teacher stage keeps the
#: preprocessing keys in the model's metadata (the export stage attaches the post-processing).
PARTIAL_READS: dict[str, dict[str, tuple[str, ...]]] = {
    "split": {"data": ("dictionary",)},
    "calibrate": {"det": ("mean", "std", "limit_side_len"), "rec": ("mean", "std", "height", "min_width", "min_side")},
    "teacher": {"det": _preprocessing_keys(DetConfig), "rec": _preprocessing_keys(RecConfig)},
    "convert": {"export": ("det_shapes", "rec_widths")},
    "targets": {"export": ("det_shapes", "rec_widths", "det_tol", "rec_tol")},  # the eager-vs-traced gate
}


def _loaded_sections(entry: Path) -> set[str]:
    """The params sections a stage entry point loads (``load_section(params, "<section>", ...)``; a section given
    by ``args.task`` is ``${task}``)."""
    sections = set()
    for node in ast.walk(ast.parse(entry.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "load_section":
            arg = node.args[1]
            sections.add(arg.value if isinstance(arg, ast.Constant) else "${task}")
    return sections


def _fields(cls: type, prefix: str, other: str | None) -> list[str]:
    """``section.key`` of every leaf field of ``cls``, leaving out the other task's (``*_rec``, ``rec_*``, ``rec``)."""
    out = []
    for f in dataclasses.fields(cls):
        if other and (f.name == other or f.name.startswith(f"{other}_") or f.name.endswith(f"_{other}")):
            continue
        value = getattr(cls(), f.name) if f.default is dataclasses.MISSING else f.default
        out += _fields(type(value), f"{prefix}{f.name}.", other) if dataclasses.is_dataclass(value) \
            else [f"{prefix}{f.name}"]
    return out


def _stage_instances() -> list[tuple[str, str | None]]:
    """(stage, task) for every stage, per task for the stages with a task matrix."""
    return [(name, task) for name, stage in sorted(_stages().items())
            for task in stage.get("matrix", {}).get("task", [None])]


@pytest.mark.parametrize(("name", "task"), _stage_instances())
def test_params_exist_and_cover_what_the_stage_reads(name: str, task: str | None) -> None:
    """Each stage's ``params:`` keys exist in params.yaml and belong to sections its entry point loads, and they
    cover every key of those sections the stage reads (all of a section's keys, for the task the stage runs,
    unless :data:`PARTIAL_READS` says otherwise): a params change reruns exactly the stages it can change."""
    stage = _stages()[name]
    body = stage.get("do", stage)
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    listed = [k.replace("${item.task}", task or "") for k in body.get("params", [])]
    other = {"det": "rec", "rec": "det"}.get(task or "")
    loaded = {s.replace("${task}", task or "") for s in _loaded_sections(_entry(body["cmd"]))}
    for key in listed:
        node: object = params
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"dvc.yaml {name}: params key {key!r} is not in params.yaml"
            node = node[part]
        assert key.split(".")[0] in loaded, f"dvc.yaml {name}: lists {key!r}, but the stage does not load that section"
    required = []
    for section in sorted(loaded - {other}):  # a matrix stage of one task may list the other task's keys too
        partial = PARTIAL_READS.get(name, {}).get(section)
        required += [f"{section}.{k}" for k in partial] if partial is not None \
            else _fields(SECTIONS[section], f"{section}.", other)
    missing = [k for k in required
               if k not in RUNTIME_ONLY and not any(k == p or k.startswith(f"{p}.") for p in listed)]
    assert not missing, f"dvc.yaml {name} ({task or 'all'}) reads {missing} without listing them in params"


def test_the_params_check_catches_an_unlisted_key() -> None:
    """The check itself can fail: without its post-processing keys the export stage would miss a threshold."""
    assert "det.box_thresh" in _fields(SECTIONS["det"], "det.", "rec")
    assert "export" in _loaded_sections(_entry(_stages()["export"]["cmd"]))
    assert "${task}" in _loaded_sections(_entry(_stages()["export"]["cmd"]))
