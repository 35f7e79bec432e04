"""Step-based training loop for distillation and fine-tuning: :func:`fit`, :func:`evaluate`, checkpoints.

What a task supplies (see :mod:`ocrslim.compress.distill`): ``batch_fn(step, rank, world)`` returning that
step's batch (a pure function of its arguments, so resuming needs no data-loader state),
``loss_fn(model, batch)`` returning ``{"loss": scalar, **parts}``, and ``metric_fn(model)``
returning validation numbers. The loop, top to bottom, per step: freeze or unfreeze the backbone,
set the learning rate, forward/backward, all-reduce gradients (DDP), clip, AdamW step, log,
validate every ``eval_every`` steps, checkpoint every ``ckpt_every`` steps.

Checkpoints (``<out>/ckpt/last.safetensors``, written atomically, no pickle) hold the model's weights, the
optimizer, the schedule, the step, the RNG states and the resolved config. On start, a checkpoint whose run key
(the config without the fields that do not change training, the world size and a fingerprint of
the initial student) matches is resumed from, so a killed stage re-run continues; ``steps`` may be
raised to train longer (the cosine horizon then moves; a ``step`` schedule does not depend on it).
Any other checkpoint is ignored and overwritten.

DDP: under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the process group is initialised
(NCCL on CUDA, else gloo), each rank draws its own share of every step's samples, gradients are
averaged with ``all_reduce`` and BatchNorm statistics are broadcast from rank 0 after each step (as
``DistributedDataParallel`` does; done by hand because freezing the backbone changes which
parameters train, which DDP's reducer does not allow). Only rank 0 writes files and validates.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import fnmatch
import hashlib
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from ocrslim.core.config import FitConfig, to_dict
from ocrslim.core.errors import ArtifactError, ConfigError
from ocrslim.models.io import pack, read_safetensors, unpack, write_safetensors

__all__ = [
    "CKPT_FORMAT",
    "DistInfo",
    "evaluate",
    "fit",
    "init_distributed",
    "load_checkpoint",
    "lr_at",
    "model_fingerprint",
    "resolve_device",
    "save_checkpoint",
]

CKPT_FORMAT = "ocrslim-ckpt/2"
# Config fields that do not change the trained weights: a checkpoint stays resumable across them.
_RUNTIME_FIELDS = ("steps", "eval_every", "ckpt_every", "threads", "device", "max_val", "val_data", "channels_last")

Batch = Any
LossFn = Callable[[nn.Module, Batch], dict[str, torch.Tensor]]
MetricFn = Callable[[nn.Module], dict[str, Any]]
BatchFn = Callable[[int, int, int], Batch]


def _no_network() -> None:
    """dvclive talks to DVC Studio when a token is configured, and DVC may send usage analytics: neither."""
    os.environ.setdefault("DVC_STUDIO_OFFLINE", "1")  # dvc_studio_client: no post_live_metrics
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")


# --------------------------------------------------------------------------------------------
# Device and distributed
# --------------------------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    """``"cpu"``, ``"cuda"`` (must be available) or ``"auto"`` (cuda when available)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("params.yaml: distill.device is 'cuda' but no CUDA device is visible. Set it to auto or cpu.")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return torch.device(name)


@dataclasses.dataclass(frozen=True)
class DistInfo:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1), else a single process."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size())


def _allreduce_grads(params: list[nn.Parameter], world: int) -> None:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])  # one collective instead of one per tensor
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def _broadcast_state(model: nn.Module, buffers_only: bool) -> None:
    tensors = list(model.buffers()) if buffers_only else list(model.state_dict().values())
    for t in tensors:
        dist.broadcast(t.data, src=0)


# --------------------------------------------------------------------------------------------
# Schedule, parameter groups, freezing
# --------------------------------------------------------------------------------------------
def lr_at(step: int, cfg: FitConfig) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up, then cosine or step decay.

    >>> cfg = FitConfig(lr=1e-3, warmup_steps=10, steps=110)
    >>> lr_at(0, cfg), lr_at(9, cfg), round(lr_at(60, cfg), 6), lr_at(110, cfg)
    (0.0001, 0.001, 0.0005, 0.0)
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "step":  # independent of cfg.steps, so extending a run keeps its past schedule
        return cfg.lr * cfg.step_gamma ** (step // cfg.step_size)
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices and conv kernels only; norms, biases and 1-element scales are not decayed."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def _under(param: str, glob: str) -> bool:
    """Parameter ``param`` (``head.fc.weight``) is under module-path glob ``glob`` (``head.*``, ``head.fc``)."""
    return fnmatch.fnmatchcase(param, glob) or fnmatch.fnmatchcase(param, glob + ".*")


def check_trainable(model: nn.Module, trainable: Sequence[str], key: str) -> None:
    """Every glob of ``trainable`` must reach a parameter of ``model``: a typo would freeze all of them.

    Raises:
        ConfigError: one line naming ``key``, the glob and a few real module paths.
    """
    names = [n for n, _ in model.named_parameters()]
    for glob in trainable:
        if not any(_under(n, glob) for n in names):
            tops = sorted({n.split(".")[0] for n in names})
            raise ConfigError(f"{key}: {glob!r} matches no parameter of the model. Use module-path globs such as "
                              f"{', '.join(t + '.*' for t in tops[:4])}, or [] to train every weight.")


def _set_mode(model: nn.Module, backbone: nn.Module | None, frozen: bool, freeze_bn: bool = False,
              trainable: tuple[str, ...] = ()) -> None:
    """Train mode, except a frozen backbone (no gradients, BatchNorm statistics kept: eval mode), with
    ``trainable`` only the parameters under those module-path globs, and with ``freeze_bn`` every BatchNorm
    layer in eval mode (running statistics used and kept; its affine weights still train)."""
    model.train()
    if backbone is not None:
        backbone.requires_grad_(not frozen)
        if frozen:
            backbone.eval()
    if trainable:
        for name, p in model.named_parameters():
            if not any(_under(name, g) for g in trainable):
                p.requires_grad_(False)
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


@torch.no_grad()
def evaluate(model: nn.Module, metric_fn: MetricFn) -> dict[str, Any]:
    """Run ``metric_fn(model)`` in eval mode without gradients, then restore every module's mode."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        return metric_fn(model)
    finally:
        for m, training in modes:
            m.training = training


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------
def model_fingerprint(model: nn.Module) -> str:
    """SHA-1 of the model's state (names, shapes, values): a checkpoint belongs to one starting student."""
    h = hashlib.sha1()
    for name, t in model.state_dict().items():
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike[str], model: nn.Module, optimizer: torch.optim.Optimizer, step: int,
                    run: dict[str, Any], config: dict[str, Any], lr: float, cpu_seconds: float = 0.0) -> None:
    """Write a resumable checkpoint atomically (a kill leaves the previous one intact).

    A safetensors file (:mod:`ocrslim.models.io`): the model's state dict, the optimizer's state, the RNG
    states, the step, the run key and the resolved config; nothing in it is pickled.
    ``cpu_seconds``: process CPU time spent on the run up to ``step``, across resumes."""
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": {"name": config.get("schedule"), "last_lr": lr},  # the schedule is lr_at(step, config)
        "rng": _rng_state(),
    }
    packed, tensors = pack(state)
    tensors.update({f"model.{k}": v for k, v in model.state_dict().items()})
    write_safetensors(path, tensors, {"format": CKPT_FORMAT, "state": packed, "step": step, "run": run,
                                      "config": config, "cpu_seconds": cpu_seconds})


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """A checkpoint written by :func:`save_checkpoint`, or ``None`` if absent or unreadable (with a warning).

    Returns ``{"model": state dict, "optimizer", "rng", "step", "run", "config", "cpu_seconds"}``.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        tensors, info = read_safetensors(path)
    except ArtifactError as exc:
        print(f"{exc} Starting over.", file=sys.stderr)
        return None
    if info.get("format") != CKPT_FORMAT:
        print(f"{path}: not an {CKPT_FORMAT} checkpoint, starting over.", file=sys.stderr)
        return None
    state = unpack(info["state"], tensors)
    model = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    return {"model": model, "optimizer": state["optimizer"], "rng": state["rng"], "step": info["step"],
            "run": info["run"], "config": info["config"], "cpu_seconds": info.get("cpu_seconds", 0.0)}


# --------------------------------------------------------------------------------------------
# dvclive
# --------------------------------------------------------------------------------------------
def _truncate_live(live_dir: Path, step: int) -> None:
    """Drop logged rows after ``step`` (written between the checkpoint and a kill), so resumed steps appear once."""
    for tsv in (live_dir / "plots" / "metrics").rglob("*.tsv"):
        with tsv.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh, delimiter="\t"))
        if not rows or "step" not in rows[0]:
            continue
        col = rows[0].index("step")
        kept = [rows[0], *(r for r in rows[1:] if int(r[col]) <= step)]
        with tsv.open("w", newline="", encoding="utf-8") as fh:
            csv.writer(fh, delimiter="\t").writerows(kept)


@contextlib.contextmanager
def _live(live_dir: Path | None, resume_step: int) -> Iterator[Any]:
    """A dvclive ``Live`` writing only under ``live_dir`` (no dvc.yaml, no experiment, no network)."""
    if live_dir is None:
        yield None
        return
    _no_network()
    from dvclive import Live

    if resume_step > 0:
        _truncate_live(live_dir, resume_step)
    live = Live(dir=str(live_dir), resume=resume_step > 0, save_dvc_exp=False, dvcyaml=None, report=None)
    try:
        yield live
    finally:
        live.end()


def _log(live: Any, step: int, values: dict[str, float]) -> None:
    if live is None:
        return
    live.step = step
    for k, v in values.items():
        live.log_metric(k, v)
    live.next_step()


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------
def _numbers(d: dict[str, Any], prefix: str) -> dict[str, float]:
    return {f"{prefix}/{k}": float(v) for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def fit(
    model: nn.Module,
    cfg: FitConfig,
    out: str | os.PathLike[str],
    *,
    batch_fn: BatchFn,
    loss_fn: LossFn,
    metric_fn: MetricFn,
    run: dict[str, Any] | None = None,
    max_steps: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``model`` in place for ``cfg.steps`` optimizer steps, resuming from ``<out>/ckpt/last.safetensors``.

    Args:
        model: the student (any module; ``model.backbone`` is frozen for ``cfg.freeze_backbone_steps``).
        cfg: optimisation settings (lr, schedule, freezing, eval/ckpt cadence, seed, device, threads).
        out: run directory: ``ckpt/last.pt`` and ``dvclive/`` are written there (rank 0 only).
        batch_fn: ``(step, rank, world) -> batch``, deterministic.
        loss_fn: ``(model, batch) -> {"loss": scalar tensor, **parts}``.
        metric_fn: ``(model) -> {name: number}``, run through :func:`evaluate` (rank 0 only).
        run: extra identity of the run (task, data fingerprints), part of the resume key.
        max_steps: stop after this step as if killed (tests, time-boxed runs); the schedule still
            follows ``cfg.steps``.
        progress: show a tqdm bar (rank 0).

    Returns:
        ``{"start_step", "end_step", "resumed", "train": last step's loss parts, "val": last metrics,
        "val_step", "seconds", "cpu_seconds", "steps_per_s", "device", "world_size", "rank"}`` (``val`` is empty on
        ranks other than 0).

    Raises:
        ConfigError: the backbone is to be frozen but the model has none; CUDA asked for and absent.
        ArtifactError: the loss became NaN/inf.
    """
    out = Path(out)
    device = resolve_device(cfg.device)
    info = init_distributed(device)
    threads_before = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(cfg.threads)
    backbone = getattr(model, "backbone", None)
    if cfg.freeze_backbone_steps > 0 and not isinstance(backbone, nn.Module):
        raise ConfigError(
            f"params.yaml: distill.freeze_backbone_steps is {cfg.freeze_backbone_steps} but "
            f"{type(model).__name__} has no .backbone. Set it to 0 for this model."
        )
    model.to(device)
    if device.type == "cpu" and cfg.channels_last:  # oneDNN convolutions run faster in NHWC
        model.to(memory_format=torch.channels_last)
    config = to_dict(cfg)
    key = {
        "config": {k: v for k, v in config.items() if k not in _RUNTIME_FIELDS},
        "world": info.world,
        "student": model_fingerprint(model),
        **{k: ({kk: vv for kk, vv in v.items() if kk not in _RUNTIME_FIELDS} if isinstance(v, dict) else v)
           for k, v in (run or {}).items()},
    }
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr)
    ckpt_path = out / "ckpt" / "last.safetensors"

    start, cpu_before = 0, 0.0
    ckpt = load_checkpoint(ckpt_path)
    if ckpt is not None and ckpt.get("run") == key:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        _set_rng_state(ckpt["rng"])
        start = int(ckpt["step"])
        cpu_before = float(ckpt.get("cpu_seconds", 0.0))
    else:
        if ckpt is not None and info.main:
            print(f"{ckpt_path}: from another config or student, starting over.", file=sys.stderr)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
    del ckpt
    if info.world > 1:
        _broadcast_state(model, buffers_only=False)
        dist.barrier()  # every rank has read the checkpoint before rank 0 may overwrite it

    end = cfg.steps if max_steps is None else min(cfg.steps, max_steps)
    params = list(model.parameters())
    train_parts: dict[str, float] = {}
    val: dict[str, Any] = {}
    val_step: int | None = None
    lr = lr_at(start, cfg)
    t0, cpu0 = time.perf_counter(), time.process_time()

    def validate(step: int) -> None:
        nonlocal val, val_step
        if info.main:
            val, val_step = evaluate(model, metric_fn), step
            _log(live, step, _numbers(val, "val"))
        if info.world > 1:
            dist.barrier()

    def checkpoint(step: int) -> None:
        if info.main:
            save_checkpoint(ckpt_path, model, optimizer, step, key, config, lr,
                            cpu_before + time.process_time() - cpu0)
        if info.world > 1:
            dist.barrier()

    with _live(out / "dvclive" if info.main else None, start) as live:
        bar = tqdm(total=cfg.steps, initial=start, desc="distill", disable=not (progress and info.main),
                   file=sys.stderr)
        for step in range(start, end):
            _set_mode(model, backbone, frozen=step < cfg.freeze_backbone_steps, freeze_bn=cfg.freeze_bn,
                      trainable=cfg.trainable)
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr

            parts = loss_fn(model, batch_fn(step, info.rank, info.world))
            loss = parts["loss"]
            if not torch.isfinite(loss):
                raise ArtifactError(
                    f"distill: the loss is {float(loss)} at step {step}. Lower distill.lr or raise "
                    "distill.warmup_steps, then re-run."
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if info.world > 1:
                _allreduce_grads(params, info.world)
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], cfg.grad_clip)
            optimizer.step()
            if info.world > 1:
                _broadcast_state(model, buffers_only=True)  # BatchNorm statistics follow rank 0, as in DDP

            done = step + 1
            train_parts = {k: float(v.detach()) for k, v in parts.items()}
            _log(live, done, {**_numbers(train_parts, "train"), "train/lr": lr})
            bar.update(1)
            bar.set_postfix(loss=f"{train_parts['loss']:.4f}", lr=f"{lr:.2e}")
            if cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.steps:
                validate(done)
            if done % cfg.ckpt_every == 0 or done == end:
                checkpoint(done)
        bar.close()
        if end == cfg.steps and val_step != cfg.steps:
            validate(cfg.steps)

    seconds = time.perf_counter() - t0
    torch.set_num_threads(threads_before)
    model.to(memory_format=torch.contiguous_format)
    model.eval()
    return {
        "start_step": start,
        "end_step": max(start, end),
        "resumed": start > 0,
        "train": train_parts,
        "val": val,
        "val_step": val_step,
        "seconds": round(seconds, 2),
        # the whole run's, summed over resumes: this process, all threads (teacher included)
        "cpu_seconds": round(cpu_before + time.process_time() - cpu0, 1),
        "steps_per_s": round((end - start) / seconds, 3) if end > start and seconds > 0 else None,
        "device": str(device),
        "world_size": info.world,
        "rank": info.rank,
    }
