"""Structured pruning of the native PP-OCRv4 models: smaller in params, MACs and ONNX bytes, same I/O."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from ocrslim.compress.prune import count_params_macs, prune_metrics, prune_model, resolve_ignored
from ocrslim.core.config import PruneConfig, load_section
from ocrslim.core.errors import ConfigError
from ocrslim.export.onnx import export_onnx
from ocrslim.export.steps import dynamic_axes
from ocrslim.models.io import load_model, save_model
from ocrslim.models.ppocr import load_ppocrv4, teacher_onnx_path

from .conftest import REPO

INPUTS = {"det": (1, 3, 64, 64), "rec": (1, 3, 48, 64)}
CFG = PruneConfig(ratio=0.3, rec_ratio=None, reconstruct=False, head_rank_rec=0)  # plain L1 pruning (reconstruction,
# low-rank head: below)


def _example(task: str) -> torch.Tensor:
    return torch.rand(INPUTS[task], generator=torch.Generator().manual_seed(0)) * 2 - 1


@pytest.fixture(scope="module")
def teachers() -> dict[str, nn.Module]:
    return {task: load_ppocrv4(task, teacher_onnx_path(task)) for task in ("det", "rec")}


@pytest.fixture(scope="module")
def pruned(teachers: dict[str, nn.Module]) -> dict[str, tuple[nn.Module, dict[str, Any]]]:
    out = {}
    for task, teacher in teachers.items():
        model = copy.deepcopy(teacher)
        out[task] = (model, prune_model(model, task, CFG, _example(task)))
    return out


def _shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {n: tuple(p.shape) for n, p in module.named_parameters()}


@pytest.mark.parametrize("task", ["det", "rec"])
def test_prune_shrinks_and_keeps_io(task: str, teachers: dict[str, nn.Module],
                                    pruned: dict[str, tuple[nn.Module, dict[str, Any]]]) -> None:
    teacher, (model, report) = teachers[task], pruned[task]
    x = _example(task)
    assert report["params_after"] < report["params_before"]
    assert report["macs_after"] < report["macs_before"]
    assert report["onnx_bytes_after"] < report["onnx_bytes_before"]
    assert (report["params_before"], report["macs_before"]) == count_params_macs(teacher, x)
    assert (report["params_after"], report["macs_after"]) == count_params_macs(model, x)
    assert _shapes(model.head) == _shapes(teacher.head)  # head untouched, input channels included
    with torch.no_grad():
        y, y0 = model(x), teacher(x)
    assert y.shape == y0.shape and torch.isfinite(y).all()
    if task == "rec":
        assert y.shape == (1, 8, 6625)
        assert torch.allclose(y.sum(-1), torch.ones(1, 8), atol=1e-4)
    # Widths the pruner changed are multiples of round_to; LearnableAffineBlock scalars stay scalars.
    assert report["pruned_layers"]
    for name, (old, new) in report["pruned_layers"].items():
        assert new < old and new % CFG.round_to == 0, name
    assert all(p.numel() == 1 for n, p in model.named_parameters() if ".lab." in n)
    metrics = prune_metrics(report)
    assert 0 < metrics["params_ratio"] < 1 and metrics["ratio"] == 0.3


def test_rec_keeps_transformer(teachers: dict[str, nn.Module],
                               pruned: dict[str, tuple[nn.Module, dict[str, Any]]]) -> None:
    teacher, (model, _) = teachers["rec"], pruned["rec"]
    assert _shapes(model.neck.svtr_block) == _shapes(teacher.neck.svtr_block)


def test_global_mode(teachers: dict[str, nn.Module]) -> None:
    model = copy.deepcopy(teachers["rec"])
    cfg = PruneConfig(ratio=0.3, rec_ratio=None, mode="global", head_rank_rec=0)
    report = prune_model(model, "rec", cfg, _example("rec"), measure_onnx=False)
    assert report["params_after"] < report["params_before"] and report["macs_after"] < report["macs_before"]
    assert _shapes(model.head) == _shapes(teachers["rec"].head)
    assert model(_example("rec")).shape == (1, 8, 6625)


def test_rec_ratio_overrides_ratio_for_rec_only() -> None:
    cfg = PruneConfig(ratio=0.3, rec_ratio=0.1)
    assert (cfg.task_ratio("det"), cfg.task_ratio("rec")) == (0.3, 0.1)
    assert PruneConfig(ratio=0.3, rec_ratio=None).task_ratio("rec") == 0.3


def test_ratio_zero_is_a_no_op(teachers: dict[str, nn.Module]) -> None:
    model = copy.deepcopy(teachers["rec"])
    report = prune_model(model, "rec", PruneConfig(ratio=0.0, head_rank_rec=0), _example("rec"), measure_onnx=False)
    assert report["params_after"] == report["params_before"] and report["macs_after"] == report["macs_before"]
    assert not report["pruned_layers"]
    assert _shapes(model) == _shapes(teachers["rec"])


def test_bad_ignore_pattern(teachers: dict[str, nn.Module]) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_ignored(teachers["det"], ["head.*", "neck.fpn.*"], "prune.ignore_det")
    msg = str(err.value)
    assert "\n" not in msg and "'neck.fpn.*'" in msg and "prune.ignore_det" in msg and "neck" in msg
    assert [type(m).__name__ for m in resolve_ignored(teachers["det"], ["head.*"])] == ["DBBranch"]


def test_pruned_model_saves_loads_and_exports(pruned: dict[str, tuple[nn.Module, dict[str, Any]]],
                                              tmp_path: Path) -> None:
    model, report = pruned["det"]
    save_model(model, tmp_path / "det.safetensors", {"task": "det", "prune": report})
    loaded, meta = load_model(tmp_path / "det.safetensors")
    assert meta["prune"]["params_after"] == report["params_after"]
    assert _shapes(loaded) == _shapes(model)
    onnx_path = tmp_path / "det.onnx"
    export_onnx(loaded, onnx_path, _example("det"), dynamic_axes("det"), simplify=False)
    x = _example("det")[:, :, :, :].repeat(1, 1, 1, 2).numpy()  # another size: 64×128 (dynamic axes)
    ours = loaded(torch.from_numpy(x)).detach().numpy()
    ref = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert ref.shape == (1, 1, 64, 128)
    assert np.abs(ours - ref).max() < 1e-4


def test_composed_defaults_are_the_dataclass_and_ranges_checked() -> None:
    assert load_section(REPO / "params.yaml", "prune", PruneConfig) == PruneConfig()
    with pytest.raises(ConfigError, match=r"prune\.ratio"):
        load_section({"prune": {"ratio": 0.95}}, "prune", PruneConfig)
    with pytest.raises(ConfigError, match=r"prune\.mode"):
        load_section({"prune": {"mode": "layerwise"}}, "prune", PruneConfig)


def test_stage_writes_model_and_metrics(teachers: dict[str, nn.Module], tmp_path: Path) -> None:
    from stages.prune import main
    from tests.test_distill import _rec_set

    src = tmp_path / "teacher" / "rec.safetensors"
    save_model(teachers["rec"], src, {"task": "rec", "characters": ["a"]})
    crops = _rec_set(tmp_path / "crops", ["Total 42.50", "Cash", "Receipt 7", "Hello World"] * 2)
    params = tmp_path / "params.yaml"
    params.write_text("prune:\n  ratio: 0.3\n  rec_ratio: null\n  rec_width: 64\n  head_rank_rec: 16\n"
                      f"  calib_data_rec: [{crops}]\n  calib_samples_rec: 8\n")
    out, metrics = tmp_path / "prune" / "rec.safetensors", tmp_path / "metrics" / "prune_rec.json"
    assert main(["--params", str(params), "--task", "rec", "--model", str(src), "--out", str(out),
                 "--metrics", str(metrics)]) == 0
    model, meta = load_model(out)
    report = json.loads(metrics.read_text())
    assert meta["characters"] == ["a"] and meta["prune"]["params_after"] == report["params_after"]
    assert report["params_after"] == sum(p.numel() for p in model.parameters()) < report["params_before"]
    assert report["onnx_bytes_after"] < report["onnx_bytes_before"]
    assert meta["prune"]["reconstruction"]["layers"] > 0 and meta["prune"]["low_rank_head"]["rank"] == 16
    assert model.head.proj.out_features == 16  # the low-rank head survives the safetensors round trip


def test_reconstruction_brings_the_pruned_model_back_towards_the_original() -> None:
    """Least squares on the calibration inputs: on unseen inputs too the pruned model is closer to the original."""
    from ocrslim.compress.reconstruct import low_rank_head

    gen = torch.Generator().manual_seed(1)
    calib, unseen = (torch.rand(n, 3, 16, 16, generator=gen) * 2 - 1 for n in (16, 8))
    errors = {}
    for recon in (False, True):
        model, original = _TwoConv("smooth"), _TwoConv("smooth")
        cfg = PruneConfig(ratio=0.5, round_to=1, ignore_det=("head",), compensate=False, reconstruct=recon)
        report = prune_model(model, "det", cfg, calib[:1], measure_onnx=False, recon_calib=calib)
        with torch.no_grad():
            errors[recon] = float((model(unseen) - original(unseen)).norm() / original(unseen).norm())
        if recon:
            assert report["reconstruction"]["error_after"] < report["reconstruction"]["error_before"]
    assert errors[True] < 0.8 * errors[False]
    # a low-rank CTC head fitted on activations: features in few directions keep their logits
    rec = _tiny_ctc(list("abcdefgh"))
    x = torch.rand(8, 3, 48, 64, generator=gen) * 2 - 1
    with torch.no_grad():
        before = rec(x, return_logits=True)
    info = low_rank_head(rec, 4, x)
    with torch.no_grad():
        after = rec(x, return_logits=True)
    assert info["params_after"] < info["params_before"] and rec.head.proj.out_features == 4
    err = float((after - before).norm() / before.norm())
    assert err < 0.1, err


class _TwoConv(nn.Module):
    """conv → ReLU → 1×1 conv → ReLU → head (seeded), its 16 first-conv channels shaped by ``kind``:

    * ``"smooth"``: the last 8 are linear mixtures of the first 8 (so the pruned ones can be refitted);
    * ``"constant"``: the first 8 carry only a constant (weights ~0, bias 1).
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 1), nn.ReLU())
        self.head = nn.Conv2d(16, 2, 1)
        with torch.no_grad():
            conv = self.backbone[0]
            if kind == "smooth":
                conv.weight[8:] = conv.weight[:8] * torch.rand(8, 1, 1, 1) + 0.05 * torch.randn_like(conv.weight[8:])
            else:
                conv.weight[:8] *= 1e-4  # lowest L1 norm: these are the channels pruning removes
                conv.bias[:8] = 1.0  # ... yet their output is a constant 1 the next layer relies on

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


@pytest.mark.parametrize("compensate", [False, True])
def test_bias_compensation_keeps_constant_channels_contribution(compensate: bool) -> None:
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    model = _TwoConv("constant").eval()
    with torch.no_grad():
        before = model(x)
    cfg = PruneConfig(ratio=0.5, round_to=1, ignore_det=("head",), compensate=compensate, reconstruct=False)
    report = prune_model(model, "det", cfg, x[:1], measure_onnx=False, calib=x)
    assert model.backbone[0].out_channels == 8 and report["layers_compensated"] == (1 if compensate else 0)
    with torch.no_grad():
        err = (model(x) - before).abs().max().item()
    # The removed channels were constant 1s: folded into conv2's bias, the output barely moves (their 1e-4
    # weights are the only loss); dropped, it shifts by conv2's weights on them.
    assert (err < 1e-2) if compensate else (err > 0.1)


def _tiny_ctc(chars: list[str]) -> nn.Module:
    from ocrslim.models.rec import build_ctc_recognizer

    torch.manual_seed(0)
    return build_ctc_recognizer({"name": "PPLCNetV3", "scale": 0.25}, {"name": "EncoderWithSVTR", "dims": 16,
                                "hidden_dims": 16, "num_heads": 2, "depth": 1},
                                {"name": "CTCHead", "num_classes": len(chars) + 2}).eval()


def test_restrict_charset_keeps_the_kept_classes_logits() -> None:
    from ocrslim.compress.charset import charset_keep, restrict_charset

    chars = list("ab中c文!")
    model = _tiny_ctc(chars)
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        before = model(x, return_logits=True)
    keep = charset_keep(chars, "ascii")
    assert keep == [0, 1, 3, 5]
    assert restrict_charset(model, chars, keep)["characters"] == list("abc!")
    with torch.no_grad():
        after = model(x, return_logits=True)
        probs = model(x)
    rows = [0, 1, 2, 4, 6, len(chars) + 1]  # blank, a, b, c, !, space
    assert after.shape[-1] == 6 and torch.equal(after, before[..., rows])
    assert torch.allclose(probs.sum(-1), torch.ones(2, 8))
    rebuilt = type(model).from_config(model.init_kwargs)  # init_kwargs follow the new head
    rebuilt.load_state_dict(model.state_dict())


def test_charset_config_errors(tmp_path: Path) -> None:
    from ocrslim.compress.charset import charset_keep

    with pytest.raises(ConfigError, match=r"^params\.yaml: prune\.charset is 'nope.txt'"):
        load_section({"prune": {"charset": "nope.txt"}}, "prune", PruneConfig)
    greek = tmp_path / "greek.txt"
    greek.write_text("α\nβ\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"prune\.charset: .* keeps none of the model's 3 characters"):
        charset_keep(list("abc"), str(greek))


def test_stage_charset_writes_the_smaller_dictionary(tmp_path: Path) -> None:
    from stages.prune import main

    chars = list("ab中c文")
    src = tmp_path / "teacher.safetensors"
    save_model(_tiny_ctc(chars), src, {"task": "rec", "characters": chars})
    params = tmp_path / "params.yaml"
    params.write_text("prune:\n  rec_ratio: 0.0\n  head_rank_rec: 0\n  rec_width: 64\n  charset: ascii\n")
    out, metrics = tmp_path / "rec.safetensors", tmp_path / "prune_rec.json"
    assert main(["--params", str(params), "--task", "rec", "--model", str(src), "--out", str(out),
                 "--metrics", str(metrics)]) == 0
    model, meta = load_model(out)
    report = json.loads(metrics.read_text())
    assert meta["characters"] == list("abc") and model.num_classes == 5
    assert report["classes_before"] == 7 and report["classes_after"] == 5
    assert report["params_after"] == sum(p.numel() for p in model.parameters()) < report["params_before"]
    assert report["onnx_bytes_after"] < report["onnx_bytes_before"]
