"""Teacher → student CTC class map, for distillation between recognisers with different dictionaries.

PP-OCR recognisers have ``blank + characters + space`` classes (``ocrslim.infer.postprocess.ctc_charset``):
PP-OCRv4 mobile 6,625 (6,623 characters), PP-OCRv6 small 18,710 (18,708). KD compares the two
per-frame distributions on the characters both know; :func:`class_index_map` says where each
student class sits in the teacher's output.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["class_index_map", "coverage"]


def class_index_map(teacher_chars: Sequence[str], student_chars: Sequence[str]) -> np.ndarray:
    """For each student CTC class, the teacher class holding the same character, or -1.

    Args:
        teacher_chars: the teacher's character list (as stored in the ONNX ``character`` metadata or
            a model's ``meta["characters"]``), without blank and space.
        student_chars: the student's character list, same convention.

    Returns:
        int64 array of length ``len(student_chars) + 2`` (the student's classes): entry 0 (blank) is
        0, the last entry (space) is the teacher's last class, entry ``i`` (1..n) is ``1 + j`` where
        ``teacher_chars[j] == student_chars[i - 1]`` (first occurrence), else -1.

    >>> class_index_map(["a", "b", "c"], ["c", "x", "a"]).tolist()
    [0, 3, -1, 1, 4]
    """
    first: dict[str, int] = {}
    for j, ch in enumerate(teacher_chars):
        first.setdefault(ch, 1 + j)
    t_space = len(teacher_chars) + 1
    out = np.full(len(student_chars) + 2, -1, dtype=np.int64)
    out[0] = 0
    out[1:-1] = [first.get(ch, -1) for ch in student_chars]
    out[-1] = t_space
    return out


def coverage(index_map: np.ndarray) -> float:
    """Fraction of student classes the teacher knows (1.0 when the dictionaries match)."""
    return float((np.asarray(index_map) >= 0).mean()) if len(index_map) else 0.0
