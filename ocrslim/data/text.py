"""Text for synthetic OCR data: Chinese words by real frequency, English words, numbers, dates, prices.

Sources ship in installed packages, so nothing is downloaded:

- Chinese: jieba's ``dict.txt`` (349k words with corpus frequencies, ``<word> <freq> <tag>``).
- English: the ``english-words`` package's GCIDE list (``gcide_alpha``, mixed case, letters only).

Every line is drawn from characters the student recogniser can emit (its dictionary plus space) and the
fonts can draw: :class:`Corpus` filters its word lists once, and :meth:`Corpus.line` only ever returns
such text. Sampling is driven by a ``numpy.random.Generator``, so a line depends only on its seed.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import pickle
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ocrslim.core.errors import ArtifactError, DataError

__all__ = ["KINDS", "Corpus", "build_corpus", "is_cjk", "load_charset", "read_jieba_dict", "read_english_words"]

# Kinds of line; "zh" is drawn with probability cjk_ratio, the others share the rest equally.
KINDS = ("zh", "en", "number", "date", "price", "mixed")
_LATIN_KINDS = KINDS[1:]

_ZH_PUNCT = "，。、：；！？（）《》“”"
_EN_PUNCT = ",.:;!?()-'\"/&"
_CURRENCIES = ("$", "¥", "￥", "€", "£", "RM", "USD ", "CNY ")


def is_cjk(ch: str) -> bool:
    """True for CJK ideographs, CJK punctuation and full-width forms (the "script" of a line)."""
    o = ord(ch)
    return (
        0x3000 <= o <= 0x303F  # CJK symbols and punctuation
        or 0x3400 <= o <= 0x4DBF  # extension A
        or 0x4E00 <= o <= 0x9FFF  # unified ideographs
        or 0xF900 <= o <= 0xFAFF  # compatibility ideographs
        or 0xFF00 <= o <= 0xFFEF  # half/full-width forms
        or 0x20000 <= o <= 0x2FA1F  # extensions B+
    )


def load_charset(spec: str) -> list[str]:
    """The student's character list: a zoo rec model name (its ONNX metadata) or a dictionary file path.

    >>> len(load_charset("ppocrv4_mobile_rec"))  # doctest: +SKIP
    6623
    """
    from ocrslim.core.artifacts import onnx_characters, read_dict_file
    from ocrslim.models.registry import REGISTRY, names, teacher_onnx_path

    if spec in REGISTRY and REGISTRY[spec].kind == "teacher" and REGISTRY[spec].task == "rec":
        chars = onnx_characters(teacher_onnx_path(spec))
        if not chars:
            raise ArtifactError(f"{spec}: its ONNX has no 'character' metadata. Set data.dictionary to a dict file.")
        return chars
    if Path(spec).is_file():
        return read_dict_file(spec)
    raise ArtifactError(
        f"data.dictionary={spec!r}: neither a registered rec teacher ({', '.join(names('teacher', 'rec'))}) "
        "nor a dictionary file. Fix it in conf/data/."
    )


def _package_file(package: str, relpath: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"{package}: not installed (text source for synthetic data). pip install {pip_name}, re-run.")
    path = Path(next(iter(spec.submodule_search_locations))) / relpath
    if not path.is_file():
        raise DataError(f"{path}: missing from the installed {package}. pip install --force-reinstall {pip_name}.")
    return path


def read_jieba_dict() -> tuple[list[str], np.ndarray]:
    """Words and frequencies from jieba's ``dict.txt`` (without importing jieba)."""
    path = _package_file("jieba", "dict.txt", "jieba==0.42.1")
    words: list[str] = []
    freqs: list[float] = []
    for line in path.read_text(encoding="utf-8").split("\n"):
        parts = line.split(" ")
        if len(parts) >= 2 and parts[1].isdigit():
            words.append(parts[0])
            freqs.append(float(parts[1]))
    return words, np.asarray(freqs, dtype=np.float64)


def read_english_words() -> list[str]:
    """English words (GCIDE, letters only, mixed case) from the ``english-words`` package, sorted."""
    path = _package_file("english_words", "data/gcide_alpha.pickle", "english-words==2.0.2")
    # The package's own loader unpickles this same file; read it with an unpickler that builds containers of
    # strings only (no class lookups, so no code can run), and skip the package's import-time work.
    with path.open("rb") as fh:
        words = _DataOnlyUnpickler(fh).load()
    return sorted(w for w in words if isinstance(w, str) and 1 <= len(w) <= 14)


class _DataOnlyUnpickler(pickle.Unpickler):
    """Unpickles builtin containers and strings; any class or function reference is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise DataError(f"english-words data file: refers to {module}.{name}, not plain data. "
                        "pip install --force-reinstall english-words==2.0.2.")


@dataclasses.dataclass
class Corpus:
    """Word lists filtered to the allowed characters, and the line sampler.

    Attributes:
        allowed: characters a line may contain (dictionary ∩ font coverage, plus space).
        zh_words / zh_cum: Chinese words and cumulative sampling weights (frequency ** 0.75).
        en_words: English words.
        zh_chars: every CJK character of ``allowed``, for the rare-character lines that widen coverage.
    """

    allowed: frozenset[str]
    zh_words: list[str]
    zh_cum: np.ndarray
    en_words: list[str]
    zh_chars: list[str]
    cjk_ratio: float = 0.5
    max_chars: int = 25

    def kind(self, rng: np.random.Generator) -> str:
        if self.zh_words and rng.random() < self.cjk_ratio:
            return "zh"
        return _LATIN_KINDS[int(rng.integers(len(_LATIN_KINDS)))]

    def line(self, rng: np.random.Generator, kind: str | None = None, max_chars: int | None = None) -> str:
        """One line of text (1..max_chars characters, all in ``allowed``, no leading/trailing space)."""
        kind = kind or self.kind(rng)
        limit = max(1, min(max_chars or self.max_chars, self.max_chars))
        for _ in range(20):
            raw = self._zh(rng, limit) if kind == "zh" else getattr(self, f"_{kind}")(rng)
            text = self._clean(raw, limit)
            if text:
                return text
        return self._clean(self._number(rng), limit) or "0"

    # ---------------------------------------------------------------------------------------- helpers
    def _clean(self, text: str, limit: int) -> str:
        text = "".join(c for c in text if c in self.allowed)
        text = " ".join(text.split())  # no double spaces: they are invisible in the image
        return text[:limit].strip()

    def _zh_word(self, rng: np.random.Generator) -> str:
        i = int(np.searchsorted(self.zh_cum, rng.random() * self.zh_cum[-1], side="right"))
        return self.zh_words[min(i, len(self.zh_words) - 1)]

    def _en_word(self, rng: np.random.Generator) -> str:
        w = self.en_words[int(rng.integers(len(self.en_words)))]
        r = rng.random()
        return w.upper() if r < 0.15 else w.capitalize() if r < 0.45 else w.lower() if r < 0.9 else w

    def _zh(self, rng: np.random.Generator, limit: int) -> str:
        n = int(rng.integers(1, limit + 1))
        out = ""
        while len(out) < n:
            r = rng.random()
            if r < 0.08 and self.zh_chars:  # rare characters: frequency sampling alone never reaches most
                out += "".join(self.zh_chars[int(k)] for k in rng.integers(len(self.zh_chars), size=rng.integers(1, 4)))
            elif r < 0.16:
                out += _ZH_PUNCT[int(rng.integers(len(_ZH_PUNCT)))]
            elif r < 0.2:
                out += str(int(rng.integers(0, 10000)))
            else:
                out += self._zh_word(rng)
        return out

    def _en(self, rng: np.random.Generator) -> str:
        words = []
        for _ in range(int(rng.integers(1, 6))):
            w = self._en_word(rng)
            if rng.random() < 0.15:
                w += _EN_PUNCT[int(rng.integers(len(_EN_PUNCT)))]
            words.append(w)
        return " ".join(words)

    def _number(self, rng: np.random.Generator) -> str:
        r = rng.random()
        if r < 0.3:
            return str(int(rng.integers(0, 10 ** int(rng.integers(1, 10)))))
        if r < 0.5:
            return f"{rng.integers(0, 10**6):,}"
        if r < 0.7:  # phone number
            return f"{rng.integers(100, 1000)}-{rng.integers(1000, 10000)}-{rng.integers(1000, 10000)}"
        if r < 0.85:
            return f"{rng.random() * 100:.{int(rng.integers(1, 4))}f}%"
        return f"No.{rng.integers(1, 100000)}"

    def _date(self, rng: np.random.Generator) -> str:
        y, m, d = int(rng.integers(1970, 2040)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
        hh, mm = int(rng.integers(0, 24)), int(rng.integers(0, 60))
        fmts = (
            f"{y}-{m:02d}-{d:02d}",
            f"{d:02d}/{m:02d}/{y}",
            f"{y}/{m}/{d} {hh:02d}:{mm:02d}",
            f"{y}年{m}月{d}日",
            f"{d}.{m}.{y}",
            f"{hh:02d}:{mm:02d}:{int(rng.integers(0, 60)):02d}",
        )
        return fmts[int(rng.integers(len(fmts)))]

    def _price(self, rng: np.random.Generator) -> str:
        cur = _CURRENCIES[int(rng.integers(len(_CURRENCIES)))]
        amount = rng.random() * 10 ** int(rng.integers(1, 5))
        value = f"{amount:,.2f}" if rng.random() < 0.5 else f"{amount:.2f}"
        r = rng.random()
        if r < 0.3:
            return f"{cur}{value}"
        if r < 0.6:
            return f"{self._en_word(rng).upper()} {cur}{value}"
        if r < 0.8 and self.zh_words:
            return f"{self._zh_word(rng)}：{cur}{value}"
        return f"{value} {cur.strip()}"

    def _mixed(self, rng: np.random.Generator) -> str:
        parts = []
        for _ in range(int(rng.integers(2, 5))):
            pick = rng.random()
            if pick < 0.4 and self.zh_words:
                parts.append(self._zh_word(rng))
            elif pick < 0.7:
                parts.append(self._en_word(rng))
            else:
                parts.append(self._number(rng) if rng.random() < 0.5 else self._date(rng))
        return (" " if rng.random() < 0.6 else "").join(parts)


def build_corpus(
    charset: Sequence[str], drawable: Iterable[str] | None = None, cjk_ratio: float = 0.5, max_chars: int = 25
) -> Corpus:
    """Filter the word sources to ``charset`` (∩ ``drawable``, the characters some font can draw).

    Raises:
        DataError: nothing is left after filtering (wrong dictionary, or fonts that draw none of it).
    """
    allowed = set(charset) | {" "}
    if drawable is not None:
        allowed &= set(drawable) | {" "}
    allowed_f = frozenset(allowed)
    zh_words: list[str] = []
    zh_freq: list[float] = []
    if cjk_ratio > 0:
        words, freqs = read_jieba_dict()
        for w, f in zip(words, freqs, strict=True):
            if any(is_cjk(c) for c in w) and all(c in allowed_f for c in w):
                zh_words.append(w)
                zh_freq.append(f)
    en_words = [w for w in read_english_words() if all(c in allowed_f for c in w)]
    if not en_words and not zh_words:
        raise DataError(
            f"data.dictionary: no Chinese or English word is left after keeping only the {len(allowed_f)} characters "
            "that are both in the dictionary and drawable by the fonts. Check data.dictionary and install the fonts "
            "(apt-get install fonts-wqy-microhei fonts-dejavu-core)."
        )
    zh_chars = sorted(c for c in allowed_f if is_cjk(c))
    cum = np.cumsum(np.asarray(zh_freq, dtype=np.float64) ** 0.75) if zh_words else np.zeros(1)
    return Corpus(allowed_f, zh_words, cum, en_words, zh_chars, cjk_ratio if zh_words else 0.0, max_chars)

