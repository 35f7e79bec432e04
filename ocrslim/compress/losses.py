"""Training losses for recovering pruned students: CTC + KD for rec, DB + map KD for det.

Recognition (CTC, blank = class 0):

* :func:`ctc_kd_loss`: Hinton KD, ``T² · KL(teacher_T ‖ student_T)`` per frame, teacher given as
  probabilities (what the PP-OCR ONNX teachers output), mapped between dictionaries by
  :func:`ocrslim.compress.charmap.class_index_map`.
* :func:`ctc_gt_loss`: CTC against the labels. :func:`rec_distill_loss` mixes the two.

Detection (DBNet, PaddleOCR ``ppocr/losses/det_db_loss.py`` and ``ppocr/data/imaug/make_shrink_map.py``
/ ``make_border_map.py``, Apache-2.0, re-implemented):

* :func:`db_loss`: ``alpha · BalancedBCE(prob) + beta · MaskedL1(thresh) + Dice(binary)``, alpha 5, beta 10.
* :func:`det_kd_loss`: L2 (or BCE) between the student's and the teacher's probability maps.

Every loss returns a scalar tensor; the composite ones return a dict with ``"loss"`` and its parts.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ocrslim.core.errors import ConfigError

__all__ = ["ctc_gt_loss", "ctc_kd_loss", "db_loss", "det_kd_loss", "rec_distill_loss"]

_EPS = 1e-6


# --------------------------------------------------------------------------------------------
# Recognition
# --------------------------------------------------------------------------------------------
def _index_tensor(index_map: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(index_map) if not isinstance(index_map, torch.Tensor) else index_map,
                           dtype=torch.long, device=device)


def _at_least_f32(x: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 → float32 (log/softmax precision); float64 stays float64."""
    return x if x.dtype == torch.float64 else x.float()


def ctc_kd_loss(
    student_logits: torch.Tensor,
    teacher_probs: torch.Tensor,
    index_map: np.ndarray | torch.Tensor,
    T: float = 6.0,
) -> torch.Tensor:
    """Temperature KD on CTC frames: ``T² · mean over frames of KL(q_T ‖ s_T)``.

    The teacher's probabilities are mapped onto the student's classes (``index_map``), classes the
    teacher lacks (-1) are masked out on both sides, and both distributions are renormalised over
    the shared classes and softened: ``q_T = softmax(log p / T)`` (= ``p^(1/T)`` renormalised),
    ``s_T = softmax(z / T)``. The student is not pushed away from characters only it knows; the
    CTC loss trains those. The teacher gets no gradient.

    Args:
        student_logits: N×T×Cs pre-softmax logits (``model(x, return_logits=True)``).
        teacher_probs: N×T×Ct softmax probabilities of the teacher on the same images (same width,
            so the same frame count: both PP-OCR models emit W/8 frames).
        index_map: length Cs, the teacher class of each student class or -1
            (:func:`ocrslim.compress.charmap.class_index_map`; ``arange(C)`` for the same dictionary).
        T: temperature (> 0).

    Returns:
        Scalar loss (0 when the student matches the teacher on the shared classes).

    Raises:
        ConfigError: frame counts, batch sizes or the class map do not fit the two models.
    """
    if student_logits.ndim != 3 or teacher_probs.ndim != 3:
        raise ConfigError(
            f"ctc_kd_loss: expected N×T×C student logits and teacher probabilities, got {list(student_logits.shape)} "
            f"and {list(teacher_probs.shape)}. Pass rec outputs (model(x, return_logits=True) for the student)."
        )
    (n_s, t_s, c_s), (n_t, t_t, c_t) = student_logits.shape, teacher_probs.shape
    if (n_s, t_s) != (n_t, t_t):
        raise ConfigError(
            f"ctc_kd_loss: teacher gives {n_t}×{t_t} (batch×frames), student {n_s}×{t_s}. Feed both the same "
            "images at the same width, with a teacher of the same horizontal stride (W/8 for PP-OCR)."
        )
    if T <= 0:
        raise ConfigError(f"ctc_kd_loss: temperature T is {T}, must be > 0. Fix the distill temperature.")
    idx = _index_tensor(index_map, student_logits.device)
    if idx.ndim != 1 or len(idx) != c_s or int(idx.max()) >= c_t:
        raise ConfigError(
            f"ctc_kd_loss: the class map has {len(idx)} entries (max {int(idx.max())}) for a student with {c_s} "
            f"and a teacher with {c_t} classes. Build it with class_index_map(teacher_chars, student_chars)."
        )
    valid = idx >= 0
    if not bool(valid.any()):
        raise ConfigError("ctc_kd_loss: teacher and student share no class. Check the two dictionaries.")

    log_p = _at_least_f32(teacher_probs.detach()).clamp_min(1e-12).log()
    log_p = log_p.index_select(2, idx.clamp_min(0)).masked_fill(~valid, float("-inf"))
    log_q = torch.log_softmax(log_p / T, dim=2)
    log_s = torch.log_softmax((_at_least_f32(student_logits) / T).masked_fill(~valid, float("-inf")), dim=2)
    q = log_q.exp()
    kl = (q * (log_q - log_s)).masked_fill(~valid, 0.0).sum(dim=2)  # N×T
    return kl.mean() * (T * T)


def ctc_gt_loss(
    student_logits: torch.Tensor,
    targets: torch.Tensor,
    target_lengths: torch.Tensor,
    input_lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """CTC loss (blank 0) summed over each sequence, then averaged over the batch (as PaddleOCR's CTCLoss).

    Args:
        student_logits: N×T×C logits.
        targets: N×S padded class indices (1..C-1), or the 1-D concatenation of all targets.
        target_lengths: N label lengths.
        input_lengths: N frame counts; default T for every sample.

    Returns:
        Scalar loss; impossible alignments (label longer than the frames allow) count 0
        (``zero_infinity=True``) instead of poisoning the batch with inf.
    """
    n, t, _ = student_logits.shape
    log_probs = torch.log_softmax(student_logits.float(), dim=2).transpose(0, 1)  # T×N×C
    if input_lengths is None:
        input_lengths = torch.full((n,), t, dtype=torch.long, device=student_logits.device)
    loss = F.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="none",
                      zero_infinity=True)
    return loss.mean()


def rec_distill_loss(
    student_logits: torch.Tensor,
    teacher_probs: torch.Tensor,
    index_map: np.ndarray | torch.Tensor,
    targets: torch.Tensor,
    target_lengths: torch.Tensor,
    alpha: float = 0.5,
    T: float = 6.0,
) -> dict[str, torch.Tensor]:
    """``alpha · ctc_kd_loss + (1 − alpha) · ctc_gt_loss``.

    Args: as :func:`ctc_kd_loss` and :func:`ctc_gt_loss`; ``alpha`` in [0, 1] (1 = KD only).

    Returns:
        ``{"loss": total, "kd": kd, "ctc": ctc}`` (scalars; log ``kd``/``ctc`` detached).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"rec_distill_loss: alpha is {alpha}, must be in [0, 1]. Fix the distill alpha.")
    kd = ctc_kd_loss(student_logits, teacher_probs, index_map, T)
    ctc = ctc_gt_loss(student_logits, targets, target_lengths)
    return {"loss": alpha * kd + (1.0 - alpha) * ctc, "kd": kd, "ctc": ctc}


# --------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------
def _nhw(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """N×1×H×W or N×H×W (tensor or array) → float N×H×W."""
    t = torch.as_tensor(x, dtype=torch.float32)
    return t[:, 0] if t.ndim == 4 else t


def _balanced_bce(
    pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, negative_ratio: float = 3.0
) -> torch.Tensor:
    """BCE over all positives and the hardest ``negative_ratio ×`` as many negatives (OHEM)."""
    positive = gt * mask
    negative = (1.0 - gt) * mask
    n_pos = int(positive.sum().item())
    n_neg = int(min(negative.sum().item(), n_pos * negative_ratio))
    loss = F.binary_cross_entropy(pred.clamp(_EPS, 1 - _EPS), gt, reduction="none")
    pos_loss = (loss * positive).sum()
    neg_loss = torch.topk((loss * negative).reshape(-1), n_neg).values.sum() if n_neg > 0 else loss.new_zeros(())
    return (pos_loss + neg_loss) / (n_pos + n_neg + _EPS)


def _masked_l1(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return ((pred - gt).abs() * mask).sum() / (mask.sum() + _EPS)


def _dice(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    inter = (pred * gt * mask).sum()
    union = (pred * mask).sum() + (gt * mask).sum() + _EPS
    return 1.0 - 2.0 * inter / union


def db_loss(
    pred: dict[str, torch.Tensor],
    gt_prob: torch.Tensor | np.ndarray,
    gt_mask: torch.Tensor | np.ndarray,
    gt_thresh: torch.Tensor | np.ndarray,
    gt_thresh_mask: torch.Tensor | np.ndarray,
    alpha: float = 5.0,
    beta: float = 10.0,
    ohem_ratio: float = 3.0,
) -> dict[str, torch.Tensor]:
    """PaddleOCR's DBLoss with a balanced-BCE main loss.

    ``loss = alpha · BalancedBCE(prob, gt_prob; gt_mask, negatives:positives ≤ ohem_ratio)
    + beta · L1(thresh, gt_thresh; gt_thresh_mask) + Dice(binary, gt_prob; gt_mask)``, with
    alpha = 5 and beta = 10 as in PaddleOCR's DB configs (the threshold map is a regression target
    in [0.3, 0.7] whose L1 is small, hence its larger weight).

    Args:
        pred: the training-mode DBNet output ``{"prob", "thresh", "binary"}``, each N×1×H×W in [0, 1]
            (``model.head.enable_threshold(); model.train()``).
        gt_prob, gt_mask, gt_thresh, gt_thresh_mask: N×H×W (or N×1×H×W) targets from
            :func:`make_db_targets`, stacked over the batch.
        alpha, beta, ohem_ratio: weights and the hard-negative ratio.

    Returns:
        ``{"loss", "prob", "thresh", "binary"}``: the total and its weighted parts.
    """
    missing = {"prob", "thresh", "binary"} - set(pred)
    if missing:
        raise ConfigError(
            f"db_loss: prediction lacks {sorted(missing)}. Call model.head.enable_threshold() and train() the model."
        )
    device = pred["prob"].device
    gp, gm = _nhw(gt_prob).to(device), _nhw(gt_mask).to(device)
    gt, gtm = _nhw(gt_thresh).to(device), _nhw(gt_thresh_mask).to(device)
    loss_prob = alpha * _balanced_bce(_nhw(pred["prob"]), gp, gm, ohem_ratio)
    loss_thresh = beta * _masked_l1(_nhw(pred["thresh"]), gt, gtm)
    loss_binary = _dice(_nhw(pred["binary"]), gp, gm)
    return {"loss": loss_prob + loss_thresh + loss_binary, "prob": loss_prob, "thresh": loss_thresh,
            "binary": loss_binary}


def det_kd_loss(
    student_prob: torch.Tensor, teacher_prob: torch.Tensor, kind: str = "l2", mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Distillation on DB probability maps: mean squared error (default) or BCE against the teacher.

    L2 is the default (STYLE.md; the PROBE recovery used KD on the maps): it stays bounded on the
    large, confidently-empty background. ``kind="bce"`` treats the teacher map as soft labels and
    gives stronger gradients on confident text pixels.

    Args:
        student_prob: N×1×H×W probabilities (the student's eval output or ``pred["prob"]``).
        teacher_prob: N×1×H×W teacher probabilities on the same images (no gradient).
        kind: "l2" or "bce".
        mask: optional N×1×H×W (or N×H×W) weights, e.g. the ignore mask.

    Returns:
        Scalar loss, averaged over (masked) pixels.
    """
    if student_prob.shape != teacher_prob.shape:
        raise ConfigError(
            f"det_kd_loss: student map {list(student_prob.shape)} and teacher map {list(teacher_prob.shape)} differ. "
            "Feed both models the same images."
        )
    target = teacher_prob.detach().float()
    s = student_prob.float()
    if kind == "l2":
        per_pixel = (s - target) ** 2
    elif kind == "bce":
        per_pixel = F.binary_cross_entropy(s.clamp(_EPS, 1 - _EPS), target.clamp(0.0, 1.0), reduction="none")
    else:
        raise ConfigError(f"det_kd_loss: kind {kind!r} is unknown. Use 'l2' or 'bce'.")
    if mask is None:
        return per_pixel.mean()
    m = torch.as_tensor(mask, dtype=per_pixel.dtype, device=per_pixel.device).reshape(per_pixel.shape)
    return (per_pixel * m).sum() / (m.sum() + _EPS)
