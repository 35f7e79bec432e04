"""The training loop: schedule, backbone freezing, exact resume, dvclive files, DDP on 2 gloo processes."""

from __future__ import annotations

import csv
import os
import socket
from pathlib import Path

import pytest
import torch
from torch import nn

from ocrslim.compress.engine import evaluate, fit, load_checkpoint, lr_at
from ocrslim.core.config import FitConfig


class Toy(nn.Module):
    """A regression model shaped like ours: ``backbone`` (with BatchNorm) then ``head``."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU())
        self.head = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


_W = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])


def _batch(step: int, rank: int, world: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * step + rank)
    x = torch.randn(8, 4, generator=g)
    return x, x @ _W


def _loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
    x, y = batch
    mse = ((model(x) - y) ** 2).mean()
    return {"loss": mse, "mse": mse}


def _metric(model: nn.Module) -> dict[str, float]:
    x, y = _batch(10_000, 0, 1)
    return {"mse": float(((model(x) - y) ** 2).mean()), "training": float(model.training)}


def _cfg(**kw: object) -> FitConfig:
    base: dict[str, object] = dict(steps=10, lr=1e-2, warmup_steps=2, schedule="step", step_size=5, step_gamma=0.5,
                                   freeze_backbone_steps=0, eval_every=0, ckpt_every=100, threads=1, device="cpu")
    base.update(kw)
    return FitConfig(**base)  # type: ignore[arg-type]


def _run(out: Path, cfg: FitConfig, **kw: object) -> tuple[Toy, dict]:
    torch.manual_seed(0)
    model = Toy()
    hist = fit(model, cfg, out, batch_fn=_batch, loss_fn=_loss, metric_fn=_metric, progress=False, **kw)  # type: ignore[arg-type]
    return model, hist


def test_lr_schedule() -> None:
    cfg = _cfg(lr=1.0, warmup_steps=4, schedule="cosine", steps=104)
    assert [lr_at(s, cfg) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(54, cfg) == pytest.approx(0.5) and lr_at(104, cfg) == pytest.approx(0.0)
    step = _cfg(lr=1.0, warmup_steps=0, schedule="step", step_size=3, step_gamma=0.1)
    assert [round(lr_at(s, step), 6) for s in (0, 2, 3, 6)] == [1.0, 1.0, 0.1, 0.01]


def test_evaluate_restores_each_module_mode() -> None:
    model = Toy().train()
    model.backbone.eval()  # a frozen backbone stays in eval mode after validation
    assert evaluate(model, _metric)["training"] == 0.0
    assert model.training and model.head.training and not model.backbone.training


def test_backbone_frozen_then_trains(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Toy()
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head_before = model.head.weight.clone()
    cfg = _cfg(steps=3, freeze_backbone_steps=3)
    fit(model, cfg, tmp_path / "a", batch_fn=_batch, loss_fn=_loss, metric_fn=_metric, progress=False)
    # Weights and BatchNorm statistics untouched while frozen; the head learned.
    assert all(torch.equal(before[k], v) for k, v in model.backbone.state_dict().items())
    assert not torch.equal(head_before, model.head.weight)
    # Same run, two more steps: unfrozen from step 3 on.
    cfg = _cfg(steps=5, freeze_backbone_steps=3)
    fit(model, cfg, tmp_path / "a", batch_fn=_batch, loss_fn=_loss, metric_fn=_metric, progress=False)
    assert not torch.equal(before["0.weight"], model.backbone[0].weight)
    assert not torch.equal(before["1.running_mean"], model.backbone[1].running_mean)


def _logged_steps(live_dir: Path, name: str) -> list[int]:
    tsv = next((live_dir / "plots" / "metrics").rglob(f"{name}.tsv"))
    with tsv.open(encoding="utf-8") as fh:
        return [int(r["step"]) for r in csv.DictReader(fh, delimiter="\t")]


def test_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    full, hist_full = _run(tmp_path / "full", _cfg(steps=10, freeze_backbone_steps=2))
    assert hist_full["start_step"] == 0 and not hist_full["resumed"]

    # "Killed" after step 6 (checkpoints at 3 and 6), then re-run: continues from 6.
    _, first = _run(tmp_path / "cut", _cfg(steps=10, freeze_backbone_steps=2, ckpt_every=3), max_steps=6)
    assert first["end_step"] == 6 and load_checkpoint(tmp_path / "cut" / "ckpt" / "last.safetensors")["step"] == 6
    resumed, second = _run(tmp_path / "cut", _cfg(steps=10, freeze_backbone_steps=2, ckpt_every=3))
    assert second["start_step"] == 6 and second["resumed"]
    assert second["cpu_seconds"] >= first["cpu_seconds"]  # CPU time adds up across the resume
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-6, rtol=0), k
    assert load_checkpoint(tmp_path / "cut" / "ckpt" / "last.safetensors")["step"] == 10
    # dvclive: every step logged once, validation at the end.
    live = tmp_path / "cut" / "dvclive"
    assert _logged_steps(live, "loss") == list(range(1, 11))
    assert _logged_steps(live, "mse")  # train/mse and val/mse both exist
    assert (live / "metrics.json").is_file()
    assert second["val"]["training"] == 0.0 and second["val_step"] == 10


def test_resume_with_more_steps_and_new_config_restarts(tmp_path: Path) -> None:
    """`steps` may grow (a step schedule does not depend on it); a changed lr starts over."""
    a, _ = _run(tmp_path / "full", _cfg(steps=8))
    _run(tmp_path / "grow", _cfg(steps=5))
    b, hist = _run(tmp_path / "grow", _cfg(steps=8))
    assert hist["start_step"] == 5
    assert all(torch.allclose(x.float(), y.float(), atol=1e-6) for x, y in zip(a.state_dict().values(),
                                                                           b.state_dict().values(), strict=True))
    _, hist = _run(tmp_path / "grow", _cfg(steps=8, lr=5e-3))
    assert hist["start_step"] == 0


# ------------------------------------------------------------------ DDP (2 gloo processes)
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ddp_worker(rank: int, out: str, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import torch.distributed as dist

    try:
        model, hist = _run(Path(out), _cfg(steps=2, ckpt_every=1, freeze_backbone_steps=1))
        assert hist["world_size"] == 2
        torch.save(model.state_dict(), Path(out) / f"rank{rank}.pt")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_ddp_two_gloo_ranks_agree(tmp_path: Path) -> None:
    torch.multiprocessing.spawn(_ddp_worker, args=(str(tmp_path), _free_port()), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    ckpt = load_checkpoint(tmp_path / "ckpt" / "last.safetensors")
    assert ckpt is not None and ckpt["step"] == 2 and ckpt["run"]["world"] == 2
    # Averaged gradients differ from a single rank's: the 2-rank result is not the 1-rank one.
    single, _ = _run(tmp_path / "single", _cfg(steps=2, ckpt_every=1, freeze_backbone_steps=1))
    assert not torch.equal(single.head.weight, r0["head.weight"])


def test_a_trainable_glob_that_reaches_no_parameter_is_a_one_line_error() -> None:
    from ocrslim.compress.engine import check_trainable
    from ocrslim.core.errors import ConfigError

    model = nn.Sequential()
    model.add_module("backbone", nn.Conv2d(3, 4, 3))
    model.add_module("head", nn.Linear(4, 2))
    check_trainable(model, ("head.*", "head", "backbone.weight"), "distill.rec.trainable")  # all reach one
    with pytest.raises(ConfigError, match=r"distill\.rec\.trainable: 'hed\.\*' matches no parameter.*head\.\*"):
        check_trainable(model, ("head.*", "hed.*"), "distill.rec.trainable")
