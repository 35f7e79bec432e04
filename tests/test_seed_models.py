"""Seed students (MobileNetV3-Small DBNet, 6×192 ViT CTC): shapes, sizes, rebuild/save, ONNX and MNN
parity at unseen sizes, pruning, and trainability from scratch."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ocrslim.compress.losses import ctc_gt_loss, db_loss
from ocrslim.compress.prune import prune_model
from ocrslim.core.config import ConvertConfig, PruneConfig
from ocrslim.core.errors import ConfigError
from ocrslim.data.targets import make_db_targets
from ocrslim.export.mnn import convert_onnx_to_mnn
from ocrslim.export.onnx import compare_runners, export_onnx, parity_gate
from ocrslim.export.steps import INPUT, OUTPUT, dynamic_axes
from ocrslim.infer.runners import OrtRunner, TorchRunner, open_runner
from ocrslim.models.det import DBNet
from ocrslim.models.io import load_model, save_model
from ocrslim.models.layers import build_component
from ocrslim.models.mobilenetv3 import MobileNetV3Small
from ocrslim.models.rec import CTCRecognizer
from ocrslim.models.registry import REGISTRY, names
from ocrslim.models.seed import build_seed_student
from ocrslim.models.vit import ViTRec

PP_OCR_CLASSES = 6625  # PP-OCRv4's dictionary + blank + space
# Module paths torch-pruning must leave alone in the ViT recogniser: attention (heads must keep dividing
# qkv), the LayerNorm-tied residual stream, and the CTC head. The MLP hidden widths and the stem stay prunable.
VIT_IGNORE = ("backbone.blocks.*.mixer", "backbone.blocks.*.norm*", "backbone.norm", "head.*")
EXPORT_SAMPLE = {"det": (1, 3, 64, 64), "rec": (1, 3, 48, 64)}
# Parity shapes: sizes (and widths) the export never saw.
PROBE_SHAPES = {"det": [(1, 3, 64, 96), (2, 3, 128, 160)], "rec": [(2, 3, 48, 160), (3, 3, 48, 200)]}


def _image_like(*shape: int, seed: int = 0) -> torch.Tensor:
    """Random input in [-1, 1], i.e. shaped like an image normalised with mean 0.5 / std 0.5."""
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _spread(model: nn.Module, last: nn.Module, x: torch.Tensor, std: float = 3.0) -> nn.Module:
    """Random BatchNorm statistics/affines and a last layer rescaled to zero-mean, ``std``-wide outputs.

    A freshly initialised model outputs nearly constant maps (det ≈ 0.57 everywhere, rec ≈ 1/C per
    class), on which any parity check would pass; this makes its outputs span the sigmoid/softmax range.
    """
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(c, generator=gen) * 0.1)
        outs: list[torch.Tensor] = []
        handle = last.register_forward_hook(lambda _m, _i, out: outs.append(out))
        try:
            model.eval()(x)
        finally:
            handle.remove()
        mean, scale = outs[0].mean(), std / outs[0].std()
        last.weight.mul_(scale)
        last.bias.copy_((last.bias - mean) * scale)
    return model


@pytest.fixture(scope="module")
def det() -> DBNet:
    torch.manual_seed(0)
    model = build_seed_student("det")
    assert isinstance(model, DBNet)
    return _spread(model, model.head.binarize.conv3, _image_like(2, 3, 64, 64, seed=9)).eval()


@pytest.fixture(scope="module")
def rec() -> CTCRecognizer:
    torch.manual_seed(0)
    model = build_seed_student("rec", num_classes=PP_OCR_CLASSES)
    assert isinstance(model, CTCRecognizer)
    return _spread(model, model.head.fc, _image_like(2, 3, 48, 64, seed=9)).eval()


@pytest.fixture(scope="module")
def onnx_files(det: DBNet, rec: CTCRecognizer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both models exported as the export stage does (onnxsim, dynamic N/H/W for det, N/W for rec)."""
    out = tmp_path_factory.mktemp("seed_onnx")
    paths = {}
    for task, model in (("det", det), ("rec", rec)):
        paths[task] = out / f"{task}.onnx"
        export_onnx(model, paths[task], _image_like(*EXPORT_SAMPLE[task]), dynamic_axes(task),
                    input_name=INPUT, output_name=OUTPUT)
    return paths


# ---------------------------------------------------------------- build, shapes, sizes


def test_components_and_students_registered() -> None:
    for name in ("MobileNetV3Small", "ViTRec", "Im2Seq"):
        assert REGISTRY[name].kind == "component"
    assert names("student", "det") == ["mobilenetv3_small_fpn"] and names("student", "rec") == ["vit_6x192"]


@pytest.mark.parametrize("hw", [(64, 96), (128, 64)])
def test_det_shapes(det: DBNet, hw: tuple[int, int]) -> None:
    h, w = hw
    x = _image_like(1, 3, h, w)
    with torch.no_grad():
        feats = det.backbone(x)
        prob = det(x)
    assert [tuple(f.shape) for f in feats] == [
        (1, c, h // s, w // s) for c, s in zip(det.backbone.out_channels, (4, 8, 16, 32))
    ]
    assert prob.shape == (1, 1, h, w)
    assert 0.0 <= float(prob.min()) and float(prob.max()) <= 1.0
    assert float(prob.std()) > 0.05  # the spread model's map is not a constant


def test_det_train_mode_returns_db_maps() -> None:
    torch.manual_seed(0)
    model = build_seed_student("det", with_threshold=True).train()
    out = model(_image_like(2, 3, 64, 96))
    assert isinstance(out, dict) and set(out) == {"prob", "thresh", "binary"}
    for value in out.values():
        assert value.shape == (2, 1, 64, 96)
        assert 0.0 <= float(value.detach().min()) and float(value.detach().max()) <= 1.0
    torch.testing.assert_close(out["binary"], torch.sigmoid(50.0 * (out["prob"] - out["thresh"])))
    assert isinstance(model.eval()(_image_like(1, 3, 64, 64)), torch.Tensor)


@pytest.mark.parametrize("width", [64, 160])
def test_rec_shapes(rec: CTCRecognizer, width: int) -> None:
    x = _image_like(2, 3, 48, width)
    with torch.no_grad():
        feat = rec.backbone(x)
        probs = rec(x)
        logits = rec(x, return_logits=True)
    assert feat.shape == (2, 192, 1, width // 8)
    assert probs.shape == logits.shape == (2, width // 8, PP_OCR_CLASSES)
    torch.testing.assert_close(probs.sum(dim=2), torch.ones(2, width // 8), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.softmax(logits, dim=2), probs)
    assert float(probs.max()) > 0.05  # far from uniform (1/6625)


def test_param_counts(det: DBNet, rec: CTCRecognizer) -> None:
    backbone = MobileNetV3Small()
    assert backbone.out_channels == [16, 24, 48, 576]
    # The paper's MobileNetV3-Small 1.0 has 2.5 M parameters, ~1.6 M of them in the classifier
    # (576 → 1024 → 1000); torchvision's `features` hold 0.927 M (SE squeeze rounded up to multiples of 8).
    assert 0.90e6 < _n_params(backbone) < 0.94e6  # 921,390
    assert _n_params(MobileNetV3Small(scale=0.5)) < 0.4 * _n_params(backbone)
    assert 1.05e6 < _n_params(det) < 1.15e6  # 1,111,519: backbone + RSE-FPN (96) + DB head
    # ViT 6×192, MLP ratio 2: 1.92 M; the CTC head alone is 192 × 6625 + 6625 = 1.28 M.
    assert _n_params(rec.head) == 192 * PP_OCR_CLASSES + PP_OCR_CLASSES
    assert 1.85e6 < _n_params(rec.backbone) < 1.95e6  # 1,916,064
    assert 3.15e6 < _n_params(rec) < 3.25e6  # 3,194,689
    assert _n_params(rec.neck) == 0


@pytest.mark.parametrize("task", ["det", "rec"])
def test_from_config_rebuilds_architecture(det: DBNet, rec: CTCRecognizer, task: str) -> None:
    model = det if task == "det" else rec
    rebuilt = type(model).from_config(copy.deepcopy(model.init_kwargs))
    assert _shapes(rebuilt) == _shapes(model)
    assert rebuilt.init_kwargs == model.init_kwargs
    backbone = build_component(model.init_kwargs["backbone"])
    assert type(backbone) is type(model.backbone) and _shapes(backbone) == _shapes(model.backbone)


@pytest.mark.parametrize("task", ["det", "rec"])
def test_save_load_round_trip(det: DBNet, rec: CTCRecognizer, task: str, tmp_path: Path) -> None:
    model = det if task == "det" else rec
    x = _image_like(2, *EXPORT_SAMPLE[task][1:], seed=4)
    save_model(model, tmp_path / "model.safetensors", meta={"task": task, "seed": True})
    loaded, meta = load_model(tmp_path / "model.safetensors")
    assert meta == {"task": task, "seed": True}
    assert type(loaded) is type(model) and not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_build_seed_student_errors() -> None:
    cases = [
        (dict(task="cls"), ["'cls'", "det, rec"]),
        (dict(task="det", name="resnet18"), ["'resnet18'", "mobilenetv3_small_fpn"]),
        (dict(task="det", name="vit_6x192"), ["'vit_6x192'", "rec student", "mobilenetv3_small_fpn"]),
        (dict(task="rec", name="mobilenetv3_small_fpn", num_classes=5), ["det student", "vit_6x192"]),
        (dict(task="rec"), ["num_classes", "None", "len(characters) + 2"]),
        (dict(task="rec", num_classes=1), ["num_classes", "1"]),
    ]
    for kwargs, needles in cases:
        with pytest.raises(ConfigError) as err:
            build_seed_student(**kwargs)
        msg = str(err.value)
        assert "\n" not in msg and all(n in msg for n in needles), msg
    with pytest.raises(ConfigError, match="divisible by num_heads"):
        ViTRec(embed_dim=192, num_heads=5)


# ---------------------------------------------------------------- ONNX and MNN


@pytest.mark.parametrize("task", ["det", "rec"])
def test_onnx_matches_torch_at_unseen_sizes(det: DBNet, rec: CTCRecognizer, onnx_files: dict[str, Path],
                                            task: str) -> None:
    """Exported at one size, the graph must agree with torch at two other widths (rec: the depthwise
    positional encoding has no fixed length)."""
    model = det if task == "det" else rec
    xs = [_image_like(*s, seed=i).numpy() for i, s in enumerate(PROBE_SHAPES[task])]
    ort_runner = OrtRunner(onnx_files[task])
    for x in xs:
        y = ort_runner(x)
        expected = (x.shape[0], 1, *x.shape[2:]) if task == "det" else (x.shape[0], x.shape[3] // 8, PP_OCR_CLASSES)
        assert y.shape == expected
    diffs = compare_runners(TorchRunner(model), ort_runner, xs)
    assert len(diffs) == 2 and max(diffs.values()) < 1e-4, diffs


@pytest.mark.parametrize("task", ["det", "rec"])
def test_mnn_matches_onnxruntime(onnx_files: dict[str, Path], task: str, tmp_path: Path) -> None:
    pytest.importorskip("MNN")
    mnn_path = tmp_path / f"{task}.mnn"
    convert_onnx_to_mnn(onnx_files[task], mnn_path)
    xs = [_image_like(*s, seed=i).numpy() for i, s in enumerate(PROBE_SHAPES[task])]
    diffs = compare_runners(open_runner(onnx_files[task]), open_runner(mnn_path), xs)
    cfg = ConvertConfig()
    parity_gate(f"seed {task}: onnx vs mnn", diffs, cfg.det_tol if task == "det" else cfg.rec_tol)


# ---------------------------------------------------------------- pruning and training


@pytest.mark.filterwarnings("ignore:Unwrapped parameters")
@pytest.mark.parametrize("task", ["det", "rec"])
def test_prune_shrinks_and_runs(det: DBNet, rec: CTCRecognizer, task: str) -> None:
    model = copy.deepcopy(det if task == "det" else rec)
    # det: the default ignore ("head.*",); the CTC head is left full rank here
    cfg = PruneConfig(ratio=0.3, rec_ratio=None, ignore_rec=VIT_IGNORE, head_rank_rec=0)
    example = _image_like(*EXPORT_SAMPLE[task])
    calib = _image_like(2, *EXPORT_SAMPLE[task][1:], seed=5)
    report = prune_model(model, task, cfg, example, measure_onnx=False, calib=calib)
    assert report["params_after"] < 0.95 * report["params_before"]
    assert report["macs_after"] < report["macs_before"]
    assert report["params_after"] == _n_params(model)
    ref = det if task == "det" else rec
    assert _shapes(model.head) == _shapes(ref.head)
    x = _image_like(*PROBE_SHAPES[task][1], seed=6)  # another size than the traced example
    with torch.no_grad():
        y = model(x)
    assert torch.isfinite(y).all()
    if task == "det":
        assert y.shape == (2, 1, 128, 160)
        assert model.backbone.conv_last.conv.out_channels < 576
    else:
        assert y.shape == (3, 25, PP_OCR_CLASSES)
        torch.testing.assert_close(y.sum(dim=2), torch.ones(3, 25), atol=1e-5, rtol=0)
        blocks = model.backbone.blocks
        assert all(b.mlp.fc1.out_features < 384 for b in blocks)  # MLP hidden widths pruned
        assert _shapes(blocks[0].mixer) == _shapes(ref.backbone.blocks[0].mixer)  # attention untouched
        assert model.backbone.out_channels == 192 and blocks[-1].mlp.fc2.out_features == 192


def _train(model: nn.Module, loss_fn: Callable[[nn.Module], torch.Tensor], steps: int = 30,
           lr: float = 2e-3) -> list[float]:
    """``steps`` AdamW steps on one fixed batch; the loss after each."""
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
    losses = []
    model.train()
    for _ in range(steps):
        loss = loss_fn(model)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def test_det_trains_from_scratch() -> None:
    torch.manual_seed(0)
    model = build_seed_student("det", with_threshold=True)
    boxes = [np.array([[8, 16], [56, 16], [56, 40], [8, 40]]), np.array([[4, 36], [44, 36], [44, 56], [4, 56]])]
    x = torch.ones(2, 3, 64, 64)  # white page, normalised
    for i, (x0, y0) in enumerate(b[0] for b in boxes):
        x1, y1 = boxes[i][2]
        x[i, :, y0:y1, x0:x1] = -0.8  # dark text block
    targets = [make_db_targets([b], [False], 64, 64) for b in boxes]
    gt = {k: torch.from_numpy(np.stack([t[k] for t in targets])) for k in targets[0]}
    losses = _train(model, lambda m: db_loss(m(x), gt["gt_prob"], gt["gt_mask"], gt["gt_thresh"],
                                             gt["gt_thresh_mask"])["loss"])
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.5 * losses[0], losses


def test_rec_trains_from_scratch() -> None:
    torch.manual_seed(0)
    model = build_seed_student("rec", num_classes=11)
    x = _image_like(2, 3, 48, 64, seed=7)
    targets, lengths = torch.tensor([[1, 2, 3], [4, 5, 6]]), torch.tensor([3, 3])
    losses = _train(model, lambda m: ctc_gt_loss(m(x, return_logits=True), targets, lengths))
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.1 * losses[0], losses
    with torch.no_grad():  # greedy CTC decoding now reads the labels back
        best = model(x, return_logits=True).argmax(dim=2)
    decoded = [[int(c) for i, c in enumerate(row) if c != 0 and (i == 0 or c != row[i - 1])] for row in best]
    assert decoded == targets.tolist()


# ------------------------------------------------------------------ the student config group and stages


def test_student_conf_groups_mirror_dataclass() -> None:
    from ocrslim.compose import compose
    from ocrslim.core.config import StudentConfig, load_section

    repo = Path(__file__).resolve().parents[1]
    pruned = compose(["student=pruned"], config_dir=repo / "conf")  # the option selects the dataclass defaults
    assert load_section(pruned, "student", StudentConfig) == StudentConfig()
    seed = compose(["student=seed", "profile=tiny"], config_dir=repo / "conf")
    assert load_section(seed, "student", StudentConfig) == StudentConfig("mobilenetv3_small_fpn", "vit_6x192")
    # the tiny profile still wins over the seed's long schedule
    assert seed["distill"]["rec"]["steps"] == seed["distill"]["det"]["steps"] == 2
    assert compose(["student=seed"], config_dir=repo / "conf")["distill"]["rec"]["steps"] >= 10_000


def test_make_student_rejects_a_wrong_seed_name() -> None:
    from ocrslim.compress.prune import make_student
    from ocrslim.core.config import StudentConfig

    teacher = build_seed_student("det")
    with pytest.raises(ConfigError, match=r"^student\.det: is 'vit_6x192', must be 'pruned' or a det seed"):
        make_student(teacher, "det", PruneConfig(det_size=(64, 64)), StudentConfig(det="vit_6x192"),
                     measure_onnx=False)


def test_seed_student_through_prune_and_distill_stages(tmp_path: Path) -> None:
    """prune with student.det=mobilenetv3_small_fpn builds the seed from scratch; distill then trains it."""
    import json

    import yaml

    from ocrslim.models.io import load_model, save_model
    from stages.distill import main as distill_main
    from stages.prune import main as prune_main
    from tests.test_distill import _det_set, _tiny_det

    teacher = tmp_path / "teacher.safetensors"
    save_model(_tiny_det().eval(), teacher, {"task": "det"})
    params = tmp_path / "params.yaml"
    root = _det_set(tmp_path / "det")
    params.write_text(yaml.safe_dump({
        "prune": {"det_size": [64, 64]},
        "student": {"det": "mobilenetv3_small_fpn"},
        "distill": {"det": {"teacher": str(teacher), "steps": 2, "batch_size": 1, "size": 128, "mix": [],
                            "train_data": [str(root)], "val_data": [str(root)]},
                    "threads": 1, "device": "cpu", "eval_every": 0},
    }))
    init, metrics = tmp_path / "pruned" / "det.safetensors", tmp_path / "prune_det.json"
    assert prune_main(["--params", str(params), "--task", "det", "--model", str(teacher), "--out", str(init),
                       "--metrics", str(metrics)]) == 0
    seed, meta = load_model(init)
    report = json.loads(metrics.read_text())
    assert type(seed.backbone).__name__ == "MobileNetV3Small"
    assert meta["prune"]["config"] == {"ratio": None, "init": "scratch", "arch": "mobilenetv3_small_fpn"}
    assert report["params_after"] == sum(p.numel() for p in seed.parameters())
    assert report["params_before"] == sum(p.numel() for p in _tiny_det().parameters())
    out = tmp_path / "student" / "det.safetensors"
    assert distill_main(["--params", str(params), "--task", "det", "--model", str(init), "--out", str(out),
                         "--metrics", str(tmp_path / "distill_det.json"), "--run-dir", str(tmp_path / "run")]) == 0
    trained, tmeta = load_model(out)
    assert tmeta["distill"]["mode"] == "distill" and tmeta["distill"]["fit"]["end_step"] == 2  # not skipped
    before = seed.state_dict()
    changed = [k for k, v in trained.state_dict().items() if k in before and not torch.equal(v, before[k])]
    assert any(k.startswith("backbone.") for k in changed)



def test_seed_rec_head_covers_blank_dictionary_and_space() -> None:
    from ocrslim.compress.prune import make_student
    from ocrslim.core.config import StudentConfig
    from ocrslim.infer.postprocess import ctc_charset

    chars = list("abc")
    teacher = build_seed_student("rec", num_classes=len(ctc_charset(chars)))
    model, report = make_student(teacher, "rec", PruneConfig(rec_width=64), StudentConfig(rec="vit_6x192"),
                                 characters=chars, measure_onnx=False)
    assert model.num_classes == len(ctc_charset(chars)) == 5 and report["config"]["init"] == "scratch"
