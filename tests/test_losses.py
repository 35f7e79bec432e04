"""KD / CTC / DB losses and the teacher→student class map, on tiny hand-checkable inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ocrslim.compress.charmap import class_index_map, coverage
from ocrslim.compress.losses import ctc_gt_loss, ctc_kd_loss, db_loss, det_kd_loss, rec_distill_loss
from ocrslim.core.errors import ConfigError
from ocrslim.data.targets import make_db_targets


def _probs(n: int, t: int, c: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n, t, c, generator=g) * 3, dim=2)


# ------------------------------------------------------------------ charmap
def test_class_index_map_tiny_dictionaries() -> None:
    teacher = ["a", "b", "c", "d"]  # classes: blank a b c d space → 0..5
    student = ["c", "x", "a", "d"]  # classes: blank c x a d space → 0..5
    assert class_index_map(teacher, student).tolist() == [0, 3, -1, 1, 4, 5]
    # Bigger student dictionary: the teacher's space is its own last class.
    assert class_index_map(["a"], ["b", "a"]).tolist() == [0, -1, 1, 2]
    same = class_index_map(teacher, teacher)
    assert same.tolist() == list(range(6)) and coverage(same) == 1.0
    # A duplicated teacher character maps to its first occurrence.
    assert class_index_map(["a", "a", "b"], ["b", "a"]).tolist() == [0, 3, 1, 4]


# ------------------------------------------------------------------ CTC KD
def test_kd_zero_when_student_equals_teacher() -> None:
    p = _probs(2, 5, 7)
    loss = ctc_kd_loss(p.log(), p, np.arange(7), T=6.0)
    assert abs(float(loss)) < 1e-6


def test_kd_positive_otherwise_and_gradient_only_to_student() -> None:
    p = _probs(2, 5, 7).requires_grad_(True)
    z = torch.randn(2, 5, 7, requires_grad=True)
    loss = ctc_kd_loss(z, p, np.arange(7))
    assert loss.item() > 1e-3
    loss.backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    assert p.grad is None


def test_kd_temperature_squared_hand_computed() -> None:
    """One frame, three classes: T² · Σ q log(q / s), q = softmax(log p / T), s = softmax(z / T)."""
    p, z, temp = [0.7, 0.2, 0.1], [1.0, 0.5, -1.0], 4.0

    def soft(v: list[float]) -> list[float]:
        e = [math.exp(x / temp) for x in v]
        return [x / sum(e) for x in e]

    q, s = soft([math.log(x) for x in p]), soft(z)
    expected = temp**2 * sum(qi * math.log(qi / si) for qi, si in zip(q, s, strict=True))
    got = ctc_kd_loss(torch.tensor([[z]], dtype=torch.float64), torch.tensor([[p]], dtype=torch.float64),
                      np.arange(3), T=temp)
    assert float(got) == pytest.approx(expected, rel=1e-9)
    kl_t1 = ctc_kd_loss(torch.tensor([[z]], dtype=torch.float64), torch.tensor([[p]], dtype=torch.float64),
                        np.arange(3), T=1.0)
    s1 = torch.softmax(torch.tensor(z, dtype=torch.float64), 0).tolist()
    assert float(kl_t1) == pytest.approx(sum(pi * math.log(pi / si) for pi, si in zip(p, s1, strict=True)), rel=1e-9)


def test_kd_maps_between_dictionaries() -> None:
    """Teacher knows a, b; student knows b, x, a: x is masked, the rest is compared after remapping."""
    t_probs = torch.tensor([[[0.1, 0.6, 0.2, 0.1]]])  # blank a b space
    imap = class_index_map(["a", "b"], ["b", "x", "a"])  # student: blank b x a space
    assert imap.tolist() == [0, 2, -1, 1, 3]
    student = torch.full((1, 1, 5), -30.0)
    student[0, 0, [0, 1, 3, 4]] = t_probs[0, 0, [0, 2, 1, 3]].log()
    student[0, 0, 2] = 5.0  # a class the teacher lacks: no KD signal either way
    assert float(ctc_kd_loss(student, t_probs, imap)) < 1e-6


def test_kd_shape_errors_are_one_line() -> None:
    with pytest.raises(ConfigError, match="frames") as err:
        ctc_kd_loss(torch.zeros(1, 8, 5), _probs(1, 16, 5), np.arange(5))
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="class map"):
        ctc_kd_loss(torch.zeros(1, 8, 5), _probs(1, 8, 5), np.arange(4))


# ------------------------------------------------------------------ CTC GT
def test_ctc_loss_finite_and_decreases_after_sgd_step() -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 6)
    x = torch.randn(2, 10, 4)
    targets = torch.tensor([[1, 2, 3], [4, 5, 0]])
    lengths = torch.tensor([3, 2])
    before = ctc_gt_loss(layer(x), targets, lengths)
    assert torch.isfinite(before)
    before.backward()
    with torch.no_grad():  # one plain SGD step (torch.optim's first import costs ~2 s)
        for p in layer.parameters():
            p -= 0.5 * p.grad
    with torch.no_grad():
        after = ctc_gt_loss(layer(x), targets, lengths)
    assert after.item() < before.item()
    # An impossible alignment (label longer than the frames) counts 0 instead of inf.
    assert float(ctc_gt_loss(torch.zeros(1, 2, 6), torch.tensor([[1, 2, 3]]), torch.tensor([3]))) == 0.0


def test_rec_distill_loss_mixes() -> None:
    p = _probs(2, 10, 6)
    z = torch.randn(2, 10, 6)
    targets, lengths = torch.tensor([[1, 2], [3, 0]]), torch.tensor([2, 1])
    out = rec_distill_loss(z, p, np.arange(6), targets, lengths, alpha=0.25)
    assert float(out["loss"]) == pytest.approx(0.25 * float(out["kd"]) + 0.75 * float(out["ctc"]), rel=1e-6)
    with pytest.raises(ConfigError, match="alpha"):
        rec_distill_loss(z, p, np.arange(6), targets, lengths, alpha=1.5)


# ------------------------------------------------------------------ DB
RECT = np.array([[8, 8], [56, 8], [56, 40], [8, 40]], dtype=np.float32)


def test_db_targets_one_rectangle() -> None:
    t = make_db_targets([RECT], [False], 48, 64)
    prob, thresh = t["gt_prob"], t["gt_thresh"]
    assert {k: v.shape for k, v in t.items()} == {k: (48, 64) for k in t}
    ys, xs = np.nonzero(prob)
    assert len(xs) > 0
    assert xs.min() > 8 and xs.max() < 56 and ys.min() > 8 and ys.max() < 40  # strictly inside the polygon
    assert prob.sum() < (56 - 8) * (40 - 8)
    assert thresh.min() >= 0.3 and thresh.max() <= 0.7
    assert thresh[8, 30] == pytest.approx(0.7, abs=0.02)  # on the top edge
    assert thresh[0, 0] == pytest.approx(0.3)  # far outside
    assert t["gt_thresh_mask"][8, 30] == 1 and t["gt_thresh_mask"][0, 0] == 0
    assert t["gt_mask"].min() == 1.0
    ignored = make_db_targets([RECT], [True], 48, 64)
    assert ignored["gt_prob"].sum() == 0 and ignored["gt_mask"][24, 32] == 0


def _targets_batch() -> dict[str, torch.Tensor]:
    t = make_db_targets([RECT], [False], 48, 64)
    return {k: torch.from_numpy(v)[None] for k, v in t.items()}


def test_db_loss_small_when_pred_equals_targets() -> None:
    t = _targets_batch()
    perfect = {"prob": t["gt_prob"][:, None], "thresh": t["gt_thresh"][:, None], "binary": t["gt_prob"][:, None]}
    good = db_loss(perfect, **t)
    g = torch.Generator().manual_seed(0)
    noisy = {k: torch.rand(1, 1, 48, 64, generator=g) for k in ("prob", "thresh", "binary")}
    bad = db_loss(noisy, **t)
    assert float(good["loss"]) < 1e-3
    assert float(bad["loss"]) > 1.0
    assert set(good) == {"loss", "prob", "thresh", "binary"}


def test_det_kd_loss() -> None:
    teacher = torch.rand(2, 1, 16, 16).requires_grad_(True)
    student = torch.rand(2, 1, 16, 16, requires_grad=True)
    assert float(det_kd_loss(teacher.detach(), teacher)) == 0.0
    loss = det_kd_loss(student, teacher)
    assert loss.item() > 0
    loss.backward()
    assert student.grad is not None and teacher.grad is None
    assert det_kd_loss(student, teacher, kind="bce").item() > 0
