"""Seed students: small architectures built from scratch (random init), for users who train on a GPU.

Unlike the pruned PP-OCRv4 teachers, these start untrained: train them (DB / CTC losses, optionally
with KD from a teacher) before use. Both follow the teachers' I/O contracts, so export, MNN
conversion, pruning and distillation treat them like any other ocrslim model.

* ``mobilenetv3_small_fpn`` (det): :class:`~ocrslim.models.mobilenetv3.MobileNetV3Small` (scale 1.0)
  → RSE-FPN (96) → DB head; N×3×H×W → N×1×H×W.
* ``vit_6x192`` (rec): :class:`~ocrslim.models.vit.ViTRec` (6 blocks, width 192, 6 heads, MLP ratio 2)
  → :class:`~ocrslim.models.vit.Im2Seq` → CTC head; N×3×48×W → N×(W/8)×num_classes.

>>> build_seed_student("rec", num_classes=37)(torch.zeros(1, 3, 48, 64)).shape
torch.Size([1, 8, 37])
"""

from __future__ import annotations

import copy

import torch  # noqa: F401  (doctests)
from torch import nn

from ocrslim.core.errors import ArtifactError, ConfigError
from ocrslim.models.det import build_dbnet
from ocrslim.models.mobilenetv3 import MobileNetV3Small  # noqa: F401  (registers the component)
from ocrslim.models.rec import build_ctc_recognizer
from ocrslim.models.registry import lookup, names
from ocrslim.models.vit import Im2Seq, ViTRec  # noqa: F401  (registers the components)

__all__ = ["build_seed_student"]


def build_seed_student(
    task: str, num_classes: int | None = None, name: str | None = None, *, with_threshold: bool = False
) -> nn.Module:
    """Build a randomly initialised seed student.

    Args:
        task: "det" or "rec".
        num_classes: rec only (required): CTC classes, ``len(characters) + 2`` (blank first, space last:
            ``ocrslim.infer.postprocess.ctc_charset``); ignored for det.
        name: a ``student`` of ``task`` in :mod:`ocrslim.models.registry`; default the task's student when the
            registry has one (the pipeline names its choice in ``conf/student/seed.yaml``).
        with_threshold: det only: add the DB threshold branch now (needed by the DB loss). Leave it off
            to prune first (``prune_model`` refuses a det model that has one), then call
            ``model.head.enable_threshold()``.

    Returns:
        det: a :class:`~ocrslim.models.det.DBNet` (N×3×H×W → N×1×H×W probabilities, H and W multiples
        of 32); rec: a :class:`~ocrslim.models.rec.CTCRecognizer` (N×3×48×W → N×W/8×num_classes
        softmax, W a multiple of 8). Both in training mode, as built.

    Raises:
        ConfigError: unknown task or name, a name of the other task, no name where the task has several
            students, or a missing / too small ``num_classes`` for rec.
    """
    if task not in ("det", "rec"):
        raise ConfigError(f"build_seed_student: task {task!r} is unknown (known: det, rec). Pass 'det' or 'rec'.")
    if name is None:
        students = names("student", task)
        if len(students) != 1:
            raise ConfigError(f"build_seed_student: {task} has {len(students)} registered students "
                              f"({', '.join(students) or 'none'}). Pass name=.")
        name = students[0]
    try:
        entry = lookup(name, "student", task, what="build_seed_student")
    except ArtifactError as exc:
        raise ConfigError(str(exc)) from None
    spec = copy.deepcopy(entry.spec or {})
    if task == "det":
        head = {**spec["head"], "with_threshold": with_threshold}
        return build_dbnet(spec["backbone"], spec["neck"], head)
    if num_classes is None or isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(
            f"build_seed_student: num_classes is {num_classes!r} for rec, must be an int >= 2. "
            "Pass len(characters) + 2 (class 0 is the CTC blank, the last the space)."
        )
    return build_ctc_recognizer(spec["backbone"], spec["neck"], {**spec["head"], "num_classes": num_classes})
