"""What every synthetic sample is drawn from: the config, the filtered corpus, the fonts, and its own seed."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from ocrslim.core.config import DataConfig
from ocrslim.data.fonts import Font, discover_fonts
from ocrslim.data.text import Corpus, build_corpus, load_charset

__all__ = ["SPLITS", "SynthContext", "is_doc_page", "make_context", "sample_rng"]

SPLITS = ("train", "val", "test")
_TASK_ID = {"det": 0, "rec": 1}
_SPLIT_ID = {s: i for i, s in enumerate(SPLITS)}


@dataclasses.dataclass
class SynthContext:
    """What every worker needs: the config, the filtered corpus and the fonts."""

    cfg: DataConfig
    corpus: Corpus
    fonts: list[Font]
    charset: list[str]


def make_context(cfg: DataConfig, charset: Sequence[str] | None = None) -> SynthContext:
    """Resolve the dictionary, discover the fonts and build the corpus (done once, in the parent process).

    Raises:
        DataError: no usable font, no CJK font while ``cfg.cjk_ratio > 0``, or an empty corpus.
    """
    chars = list(charset) if charset is not None else load_charset(cfg.dictionary)
    fonts = discover_fonts(cfg.fonts, cfg.font_exclude, need_cjk=cfg.cjk_ratio > 0)
    drawable = set().union(*(f.chars for f in fonts))
    corpus = build_corpus(chars, drawable, cjk_ratio=cfg.cjk_ratio, max_chars=cfg.max_chars)
    return SynthContext(cfg, corpus, fonts, chars)


def sample_rng(seed: int, task: str, split: str, index: int) -> np.random.Generator:
    """The generator of one sample: a function of (seed, task, split, index) only."""
    return np.random.default_rng([seed, _TASK_ID[task], _SPLIT_ID[split], index])


def is_doc_page(cfg: DataConfig, split: str, index: int) -> bool:
    """Whether det page ``index`` of ``split`` is a printed document: drawn from its own stream, so the
    scene pages render the same bytes whatever ``cfg.doc_ratio`` is."""
    return bool(np.random.default_rng([cfg.seed, 2, _SPLIT_ID[split], index]).random() < cfg.doc_ratio)
