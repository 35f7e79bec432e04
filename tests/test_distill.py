"""Distillation on tiny synthetic sets: rec KD through the class map, det DB + KD, fine-tuning, the stage."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from ocrslim.compress.distill import TOP_K, TeacherCache, distill, task_data
from ocrslim.core.config import DetConfig, DistillConfig, RecConfig, from_dict
from ocrslim.core.errors import DataError
from ocrslim.data.train import DetTrainSet, RecTrainSet, batch_indices, mix_counts
from ocrslim.infer.pipeline import Model
from ocrslim.models.det import build_dbnet
from ocrslim.models.io import load_model, save_model
from ocrslim.models.rec import build_ctc_recognizer
from tests.conftest import render_line, render_page

CHARS = list("HeloWrd")  # student dictionary: classes blank, H e l o W r d, space
TEXTS = ["Hello", "World", "old", "Hello World"]



def _rec_set(root: Path, texts: list[str], extra: dict[str, bytes] | None = None) -> Path:
    (root / "images").mkdir(parents=True)
    lines = []
    for i, t in enumerate(texts):
        cv2.imwrite(str(root / "images" / f"{i}.png"), render_line(t, size=24))
        lines.append(f"{i}.png\t{t}")
    for name, data in (extra or {}).items():
        (root / "images" / name).write_bytes(data)
        lines.append(f"{name}\tHello")
    (root / "labels.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def _tiny_rec(classes: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_ctc_recognizer({"name": "PPLCNetV3", "scale": 0.25}, {"name": "EncoderWithSVTR", "dims": 16,
                                "hidden_dims": 16, "num_heads": 2}, {"name": "CTCHead", "num_classes": classes})


def _cfg(rec: dict | None = None, det: dict | None = None, **shared: object) -> DistillConfig:
    """A small config: rec 20 steps of 4 crops at width 96, det 1-page steps at 256 px; overrides per section."""
    base = {"rec": {"steps": 20, "batch_size": 4, "lr": 3e-3, "warmup_steps": 2, "widths": [96], "max_val": 4,
                    "train_data": ["x"], "val_data": [], "mix": [], "alpha": 0.9, "trainable": [], **(rec or {})},
            "det": {"steps": 1, "batch_size": 1, "lr": 3e-3, "warmup_steps": 1, "size": 256, "max_val": 4,
                    "train_data": ["x"], "val_data": [], "mix": [], "alpha": 0.9, **(det or {})},
            "eval_every": 0, "ckpt_every": 100, "threads": 1, "device": "cpu", **shared}
    return from_dict(DistillConfig, base, "distill")


def _tsv(path: Path, column: str = "loss") -> list[float]:
    with path.open(encoding="utf-8") as fh:
        return [float(r[column]) for r in csv.DictReader(fh, delimiter="\t")]


class _Teacher:
    """A deterministic rec 'teacher' with its own dictionary: ``perm[i]`` is the teacher class of student class i.

    Its logits are a fixed projection of the image columns; student class i's logit sits in teacher column
    perm[i]; any further teacher class gets a constant logit (mass the class map must drop).
    """

    name = "numpy"

    def __init__(self, perm: np.ndarray, n_teacher: int) -> None:
        self.perm, self.n_teacher = perm, n_teacher
        self.proj = np.random.default_rng(0).normal(size=(8, len(perm))).astype(np.float32) * 3

    def __call__(self, x: np.ndarray) -> np.ndarray:
        n, _, _, w = x.shape
        logits_s = x.mean(axis=(1, 2)).reshape(n, w // 8, 8) @ self.proj  # N×T×Cs
        logits = np.full((n, w // 8, self.n_teacher), 1.0, dtype=np.float32)
        logits[:, :, self.perm] = logits_s
        e = np.exp(logits - logits.max(axis=2, keepdims=True))
        return e / e.sum(axis=2, keepdims=True)


def test_rec_set_skips_unknown_chars_and_corrupt_images(tmp_path: Path) -> None:
    root = _rec_set(tmp_path / "rec", [*TEXTS, "Hé"], extra={"bad.png": b"not an image"})
    ds = RecTrainSet([root], CHARS, RecConfig(), widths=(96,))
    assert ds.skipped_chars == 1 and len(ds) == 5
    batch = ds.batch([(0, i) for i in range(len(ds))])
    assert ds.skipped_images == 1 and batch.images.shape == (4, 3, 48, 96) and batch.labelled.all()
    # Student classes: blank 0, H=1 e=2 l=3 o=4 W=5 r=6 d=7, space 8.
    row = batch.texts.index("Hello World")
    assert batch.targets[row, : batch.lengths[row]].tolist() == [1, 2, 3, 3, 4, 8, 5, 4, 6, 3, 7]
    # Deterministic, disjoint sharding: one epoch of 2 ranks covers every sample once.
    shards = batch_indices(5, 2, 0, 0, rank=0, world=2) + batch_indices(5, 2, 0, 0, rank=1, world=2)
    assert len(set(shards)) == 4 and shards == batch_indices(5, 4, 0, 0)


def test_real_and_synthetic_sets_mix_by_their_shares(tmp_path: Path) -> None:
    real = _rec_set(tmp_path / "real", ["Hello", "World"])  # a small real set ...
    synth = _rec_set(tmp_path / "synth", TEXTS * 5)  # ... beside a large synthetic one
    assert mix_counts((0.5, 0.5), (2, 20), 4) == [2, 2] and mix_counts((), (2, 20), 11) == [1, 10]
    ds = RecTrainSet([real, synth], CHARS, RecConfig(), widths=(96,), shares=(0.5, 0.5))
    draws = [ds.draw(4, step, seed=0) for step in range(6)]
    for picks in draws:
        assert [k for k, _ in picks].count(0) == 2 and [k for k, _ in picks].count(1) == 2
    seen_real = [i for picks in draws[:1] for k, i in picks if k == 0]
    assert sorted(seen_real) == [0, 1]  # the small set is walked epoch by epoch too
    assert ds.draw(4, 3, seed=0) == draws[3]  # a pure function of (seed, step): resumes see the same batches


def test_rec_batches_hold_one_width_bucket(tmp_path: Path) -> None:
    root = _rec_set(tmp_path / "rec", ["He", "old", "Hello World Hello World", "World Hello World Hello"])
    ds = RecTrainSet([root], CHARS, RecConfig(min_side=0), widths=(96, 320))  # short words ~70 px wide
    assert sorted(len(m) for m in ds.members[0]) == [2, 2]
    for step in range(4):
        batch = ds.batch(ds.draw(2, step, seed=0))
        assert batch.images.shape[3] in (96, 320) and {w for _, _, w in batch.keys} == {batch.images.shape[3]}


def test_teacher_cache_returns_what_the_teacher_computes(tmp_path: Path) -> None:
    root = _rec_set(tmp_path / "rec", TEXTS)
    n = len(CHARS) + 2
    calls: list[int] = []
    inner = _Teacher(np.arange(n), n)

    def counted(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        return inner(x)

    from ocrslim.compress.distill import _TeacherRec

    ds = RecTrainSet([root], CHARS, RecConfig(), widths=(96,))
    batch = ds.batch([(0, i) for i in range(4)])
    cached = _TeacherRec(Model("rec", counted, "t", characters=CHARS), CHARS, cache=True)  # type: ignore[arg-type]
    fresh = _TeacherRec(Model("rec", counted, "t", characters=CHARS), CHARS, cache=False)  # type: ignore[arg-type]
    a1, a2 = cached(batch), cached(batch)
    b = fresh(batch)
    assert calls == [4, 4] and cached.cache.hits == 4  # the second cached call ran no teacher forward
    assert np.array_equal(a1, a2) and np.array_equal(a1, b)  # cached and uncached targets are the same
    # the target is the teacher's top-k per frame: with fewer classes than k, every class kept
    assert n <= TOP_K and np.allclose(b.sum(axis=2), 1.0, atol=2e-3)
    cache = TeacherCache(True)
    assert cache.get(["a", "b"], np.zeros((2, 1)), lambda x: [1, 2]) == [1, 2]
    assert cache.get(["b", "c"], np.zeros((2, 1)), lambda x: [9] * len(x)) == [2, 9] and cache.computed == 3


def test_rec_distill_loss_decreases_and_char_map_is_used(tmp_path: Path) -> None:
    root = _rec_set(tmp_path / "rec", TEXTS)
    cfg = _cfg(rec={"temperature": 2.0, "lr": 1e-2, "train_data": [str(root)], "val_data": [str(root)]})
    data = task_data("rec", cfg, RecConfig(), CHARS)
    n = len(CHARS) + 2
    same = Model("rec", _Teacher(np.arange(n), n), "same-dict", characters=CHARS)
    # A teacher whose dictionary is reversed and has two characters the student lacks.
    t_chars = [*CHARS[::-1], "Z", "Q"]
    perm = np.array([0, *[1 + t_chars.index(c) for c in CHARS], len(t_chars) + 1])
    other = Model("rec", _Teacher(perm, len(t_chars) + 2), "other-dict", characters=t_chars)

    student = _tiny_rec(n)
    report = distill("rec", student, same, cfg, data, tmp_path / "a", pre=RecConfig(), characters=CHARS,
                     progress=False)
    losses = _tsv(tmp_path / "a" / "dvclive" / "plots" / "metrics" / "train" / "loss.tsv")
    assert len(losses) == 20 and np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])
    assert report["mode"] == "distill" and report["charmap_coverage"] == 1.0
    assert set(report["val"]) >= {"accuracy", "one_minus_ned", "cer"} and report["val"]["samples"] == 4
    assert "seconds" not in json.dumps({k: v for k, v in report.items() if k != "timing"})

    # Same run with the remapped teacher (5 steps): the class map makes the KD loss identical. The first step is
    # compared tightly; later ones loosely: the gathered classes sum in another order (1e-7 differences) and
    # AdamW's g/sqrt(v) amplifies such noise on near-zero gradients step after step.
    short = _cfg(rec={"steps": 5, "temperature": 2.0, "train_data": [str(root)], "val_data": [str(root)]})
    distill("rec", _tiny_rec(n), same, short, data, tmp_path / "s", pre=RecConfig(), characters=CHARS, progress=False)
    rep = distill("rec", _tiny_rec(n), other, short, data, tmp_path / "o", pre=RecConfig(), characters=CHARS,
                  progress=False)
    assert rep["charmap_coverage"] == 1.0
    kd_same, kd_other = (_tsv(tmp_path / r / "dvclive" / "plots" / "metrics" / "train" / "kd.tsv", "kd") for r in "so")
    assert len(kd_same) == 5 and abs(kd_same[0] - kd_other[0]) <= 1e-5 * kd_same[0]
    assert np.allclose(kd_same, kd_other, rtol=1e-3, atol=0)


def test_rec_kd_on_an_unlabelled_folder_and_finetune_without_teacher(tmp_path: Path) -> None:
    labelled = _rec_set(tmp_path / "rec", TEXTS)
    raw = tmp_path / "crops"  # plain crops, no labels.tsv: the user's own unlabelled domain lines
    raw.mkdir()
    for i, text in enumerate(["Hello", "old"]):
        cv2.imwrite(str(raw / f"{i}.png"), render_line(text, size=24))
    n = len(CHARS) + 2
    teacher = Model("rec", _Teacher(np.arange(n), n), "t", characters=CHARS)
    cfg = _cfg(rec={"steps": 2, "alpha": 1.0, "train_data": [str(raw)], "val_data": [str(labelled)]})
    report = distill("rec", _tiny_rec(n), teacher, cfg, task_data("rec", cfg, RecConfig(), CHARS), tmp_path / "kd",
                     pre=RecConfig(), characters=CHARS, progress=False)
    train = report["fit"]["train"]
    assert train["loss"] == train["kd"] > 0 and "ctc" not in train
    mixed = _cfg(rec={"steps": 2, "alpha": 0.5, "batch_size": 4, "mix": [0.5, 0.5],
                      "train_data": [str(raw), str(labelled)], "val_data": []})
    report = distill("rec", _tiny_rec(n), teacher, mixed, task_data("rec", mixed, RecConfig(), CHARS),
                     tmp_path / "mix", pre=RecConfig(), characters=CHARS, progress=False)
    assert {"kd", "ctc"} <= set(report["fit"]["train"])  # CTC on the labelled half, KD on all
    ft = _cfg(rec={"steps": 2, "teacher": None, "alpha": 0.0, "train_data": [str(labelled)], "val_data": []})
    report = distill("rec", _tiny_rec(n), None, ft, task_data("rec", ft, RecConfig(), CHARS), tmp_path / "ft",
                     pre=RecConfig(), characters=CHARS, progress=False)
    assert report["mode"] == "finetune" and report["teacher"] is None and "ctc" in report["fit"]["train"]
    with pytest.raises(DataError, match=r"^distill\.rec\.train_data: only unlabelled image folders"):
        task_data("rec", _cfg(rec={"alpha": 0.5, "train_data": [str(raw)]}), RecConfig(), CHARS)


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing", "not found"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "holds no rec samples"),
])
def test_a_missing_or_empty_training_path_is_one_line_naming_the_key(tmp_path: Path, make, message) -> None:
    path = make(tmp_path)
    with pytest.raises(DataError, match=rf"^distill\.rec\.train_data: .*{message}") as info:
        task_data("rec", _cfg(rec={"train_data": [str(path)]}), RecConfig(), CHARS)
    assert "\n" not in str(info.value)


def _det_set(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "gt").mkdir()
    img, quads = render_page()
    cv2.imwrite(str(root / "images" / "p0.jpg"), img)
    rows = [",".join(str(int(v)) for v in q.reshape(-1)) + ",text" for q in quads]
    (root / "gt" / "gt_p0.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def _tiny_det() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_dbnet({"name": "PPLCNetV3", "scale": 0.25, "det": True}, {"name": "RSEFPN", "out_channels": 16},
                       {"name": "DBHead"})


def _det_teacher() -> Model:
    teacher_net = _tiny_det().eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return teacher_net(torch.from_numpy(x)).numpy()

    run.name = "torch"  # type: ignore[attr-defined]
    return Model("det", run, "t")  # type: ignore[arg-type]


def test_det_distill_one_step_with_views_cached(tmp_path: Path) -> None:
    root = _det_set(tmp_path / "det")
    cfg = _cfg(det={"steps": 3, "train_data": [str(root)], "val_data": [str(root)], "views": 2})
    pre = DetConfig(limit_side_len=256)
    data = task_data("det", cfg, pre)
    batch = data.train.batch(data.train.draw(1, 0, 0), np.random.default_rng(0))
    assert batch.images.shape == (1, 3, 256, 256) and batch.gt_prob.shape == (1, 256, 256)
    student = _tiny_det()
    report = distill("det", student, _det_teacher(), cfg, data, tmp_path / "run", pre=pre, progress=False)
    train = report["fit"]["train"]
    assert np.isfinite(train["loss"]) and train["kd"] > 0 and train["db"] > 0
    assert student.head.thresh is not None and set(report["val"]) >= {"precision", "recall", "hmean"}
    # one page, 2 views, 3 steps: the third step shows view 0 again and reuses the teacher's map
    assert report["teacher_cache"] == {"computed": 2, "reused": 1}


def test_det_kd_only_trains_on_unlabelled_images(tmp_path: Path) -> None:
    labelled = _det_set(tmp_path / "det")
    raw = tmp_path / "raw"  # plain images, no gt/: the user's own unlabelled domain pages
    raw.mkdir()
    img, _ = render_page()
    cv2.imwrite(str(raw / "a.jpg"), img)
    cv2.imwrite(str(raw / "b.png"), img[::-1])
    pre = DetConfig(limit_side_len=256)
    cfg = _cfg(det={"steps": 2, "alpha": 1.0, "batch_size": 2, "train_data": [str(raw)], "val_data": [str(labelled)]})
    data = task_data("det", cfg, pre)
    assert len(data.train) == 2 and not any(s.labelled for s in data.train.sets[0])
    report = distill("det", _tiny_det(), _det_teacher(), cfg, data, tmp_path / "run", pre=pre, progress=False)
    train = report["fit"]["train"]
    assert np.isfinite(train["loss"]) and train["loss"] == train["kd"] > 0 and "db" not in train
    # a mixed batch: the DB loss sees only the labelled page (the unlabelled one is masked out)
    mixed = _cfg(det={"steps": 1, "alpha": 0.5, "batch_size": 2, "mix": [0.5, 0.5],
                      "train_data": [str(raw), str(labelled)], "val_data": []})
    data = task_data("det", mixed, pre)
    batch = data.train.batch(data.train.draw(2, 0, 0), np.random.default_rng(0))
    assert batch.labelled.tolist() == [False, True] and batch.gt_mask[0].sum() == 0 < batch.gt_mask[1].sum()
    with pytest.raises(DataError, match=r"^distill\.det\.train_data: only unlabelled image folders"):
        task_data("det", _cfg(det={"alpha": 0.9, "train_data": [str(raw)]}), pre)


def test_stage_rec_writes_model_and_metrics(tmp_path: Path) -> None:
    from stages.distill import main

    root = _rec_set(tmp_path / "rec", TEXTS)
    student = tmp_path / "student.safetensors"
    save_model(_tiny_rec(len(CHARS) + 2), student, {"task": "rec", "characters": CHARS})
    teacher = tmp_path / "teacher.safetensors"
    save_model(_tiny_rec(len(CHARS) + 2), teacher, {"task": "rec", "characters": CHARS})
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"distill": {
        "rec": {"teacher": str(teacher), "steps": 2, "batch_size": 2, "widths": [96], "train_data": [str(root)],
                "val_data": [str(root)], "mix": []},
        "threads": 1, "device": "cpu", "freeze_backbone_steps": 1}}))
    out, metrics = tmp_path / "out" / "rec.safetensors", tmp_path / "m.json"
    assert main(["--params", str(params), "--task", "rec", "--model", str(student), "--out", str(out),
                 "--metrics", str(metrics), "--run-dir", str(tmp_path / "run")]) == 0
    model, meta = load_model(out)
    assert meta["characters"] == CHARS and meta["distill"]["mode"] == "distill"
    assert meta["distill"]["fit"]["end_step"] == 2 and "timing" not in meta["distill"]
    m = json.loads(metrics.read_text())
    assert m["steps"] == 2 and "val_accuracy" in m and "seconds" not in json.dumps(m)


def test_steps_zero_validates_the_pruned_student_unchanged(tmp_path: Path) -> None:
    """distill.<task>.steps 0: the pruned model is the student (weights untouched), validated and reported."""
    from stages.distill import main

    root = _rec_set(tmp_path / "rec", TEXTS)
    student = tmp_path / "student.safetensors"
    save_model(_tiny_rec(len(CHARS) + 2), student, {"task": "rec", "characters": CHARS})
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"distill": {
        "rec": {"teacher": str(student), "steps": 0, "batch_size": 2, "widths": [96], "train_data": [str(root)],
                "val_data": [str(root)], "mix": []},
        "threads": 1, "device": "cpu"}}))
    out, metrics = tmp_path / "out" / "rec.safetensors", tmp_path / "m.json"
    assert main(["--params", str(params), "--task", "rec", "--model", str(student), "--out", str(out),
                 "--metrics", str(metrics), "--run-dir", str(tmp_path / "run")]) == 0
    model, meta = load_model(out)
    src, _ = load_model(student)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), src.state_dict().values()))
    assert meta["distill"]["mode"] == "pruned" and meta["distill"]["fit"]["end_step"] == 0
    m = json.loads(metrics.read_text())
    assert m["steps"] == 0 and 0.0 <= m["val_accuracy"] <= 1.0
    assert (tmp_path / "run" / "ckpt" / "skipped.json").is_file()  # DVC's declared output exists


def test_stage_copies_an_unpruned_student_without_training(tmp_path: Path) -> None:
    from stages.distill import main

    student = tmp_path / "student.safetensors"
    save_model(_tiny_rec(len(CHARS) + 2), student,
               {"task": "rec", "characters": CHARS,
                "prune": {"config": {"ratio": 0.0}, "params_before": 5, "params_after": 5}})
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"distill": {"rec": {"teacher": "no/such/teacher.onnx"}}}))  # never opened
    out, metrics = tmp_path / "rec.safetensors", tmp_path / "m.json"
    assert main(["--params", str(params), "--task", "rec", "--model", str(student), "--out", str(out),
                 "--metrics", str(metrics), "--run-dir", str(tmp_path / "run")]) == 0
    model, meta = load_model(out)
    src, _ = load_model(student)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), src.state_dict().values()))
    assert meta["distill"]["mode"] == "skipped" and json.loads(metrics.read_text()) == {"mode": "skipped", "steps": 0}
    assert (tmp_path / "run" / "ckpt" / "skipped.json").is_file()  # DVC's declared outputs exist
    assert not (tmp_path / "run" / "ckpt" / "last.safetensors").exists()


def test_det_crops_at_inference_scale_or_page_scale(tmp_path: Path) -> None:
    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    (root / "gt").mkdir()
    cv2.imwrite(str(root / "images" / "p.png"), np.full((400, 300, 3), 255, np.uint8))
    (root / "gt" / "gt_p.txt").write_text("140,190,160,190,160,210,140,210,x\n", encoding="utf-8")
    cfg = DetConfig(limit_side_len=736, limit_type="min")  # short side 300 -> 736: the page is resized ×2.48
    heights = {}
    for mode in ("inference", "page"):
        ds = DetTrainSet([root], cfg, size=256, scale=mode)
        rng = np.random.default_rng(0)
        hs = []
        for _ in range(40):
            _, polys, _ = ds._crop(cv2.imread(str(root / "images" / "p.png")), ds.sets[0][0], rng)
            hs += [float(np.ptp(p[:, 1])) for p in polys]
        heights[mode] = hs
    assert heights["inference"] and all(20 * 2.48 * 0.6 - 1 <= h <= 20 * 2.48 * 1.2 + 1 for h in heights["inference"])
    assert heights["page"] and all(20 * 256 / 400 * 0.5 - 1 <= h <= 20 * 256 / 400 * 1.5 + 1 for h in heights["page"])


def test_hint_loss_compares_one_layer_of_student_and_teacher() -> None:
    from ocrslim.compress.distill import _Hints

    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))
    x = torch.rand(2, 3, 8, 8)
    same = _Hints("0", teacher)
    with same.capture(teacher):
        teacher(x)
    assert same.loss(x)["hint"].item() == 0.0  # the teacher against itself
    student = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))
    hints = _Hints("0", teacher)
    with hints.capture(student):
        student(x)
    loss = hints.loss(x)["hint"]
    want = ((student[0](x) - teacher[0](x)) ** 2).mean() / (teacher[0](x) ** 2).mean()
    assert loss.item() == pytest.approx(want.item(), rel=1e-5) and loss.requires_grad
    assert _Hints(None, None).loss(x) == {}
