"""Fonts for synthetic text: discovered by glob (no fontconfig), with the characters each one can draw.

System fonts come from Debian packages (``apt-get install fonts-wqy-microhei fonts-dejavu-core
fonts-liberation2 fonts-freefont-ttf``). Pillow's bundled font (``ImageFont.load_default``, Latin only) is
the fallback ``"default"``, so tests run on a machine without system fonts.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import glob
import hashlib
import io
from collections.abc import Sequence
from pathlib import Path

from PIL import ImageFont

from ocrslim.core.errors import DataError

__all__ = ["DEFAULT_FONT", "Font", "FONT_PACKAGES", "discover_fonts", "load_font", "pil_font"]

DEFAULT_FONT = "default"  # Pillow's bundled Latin font
FONT_PACKAGES = "fonts-wqy-microhei fonts-dejavu-core fonts-liberation2 fonts-freefont-ttf"
_SUFFIXES = (".ttf", ".ttc", ".otf")


@dataclasses.dataclass(frozen=True)
class Font:
    """A font file (or Pillow's default) and the characters it has glyphs for.

    Attributes:
        path: file path, or ``"default"``.
        chars: characters with a glyph (cmap), as a frozenset.
        cjk: True if it draws CJK ideographs (checked on 中).
        sha256: hash of the font file, recorded in the data manifest.
    """

    path: str
    chars: frozenset[str]
    cjk: bool
    sha256: str

    @property
    def name(self) -> str:
        return Path(self.path).name if self.path != DEFAULT_FONT else "pillow-default"


def _default_bytes() -> bytes:
    return ImageFont.load_default(size=10).font_bytes  # type: ignore[union-attr]


def load_font(path: str) -> Font:
    """Read a font's character map (index 0 of a collection).

    Raises:
        DataError: missing or unreadable file; the message names the Debian packages to install.
    """
    from fontTools.ttLib import TTFont, TTLibError

    data = _default_bytes() if path == DEFAULT_FONT else None
    if data is None:
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise DataError(
                f"{path}: font not readable ({e.strerror}). apt-get install {FONT_PACKAGES}, or fix data.fonts."
            ) from None
    try:
        cmap = TTFont(io.BytesIO(data), fontNumber=0, lazy=True).getBestCmap() or {}
        ImageFont.truetype(io.BytesIO(data), 16)
    except (TTLibError, OSError, ValueError, KeyError, AssertionError) as e:
        raise DataError(
            f"{path}: not a readable TrueType/OpenType font ({type(e).__name__}). "
            f"Remove it from data.fonts or reinstall it (apt-get install --reinstall {FONT_PACKAGES})."
        ) from None
    chars = frozenset(chr(c) for c in cmap if c >= 0x20 and chr(c).isprintable())
    return Font(path, chars, "中" in chars, hashlib.sha256(data).hexdigest())


def discover_fonts(patterns: Sequence[str], exclude: Sequence[str] = (), need_cjk: bool = False) -> list[Font]:
    """Fonts matching glob ``patterns`` (``"default"`` = Pillow's bundled font), minus ``exclude`` name globs.

    A pattern naming one file that does not exist is an error; a glob that matches nothing is not.

    Raises:
        DataError: no font found, a named font is unreadable, or ``need_cjk`` and no font draws Chinese.
    """
    paths: list[str] = []
    for pat in patterns:
        if pat == DEFAULT_FONT:
            paths.append(DEFAULT_FONT)
        elif glob.has_magic(pat):
            paths += sorted(p for p in glob.glob(pat, recursive=True) if p.lower().endswith(_SUFFIXES))
        else:
            paths.append(pat)  # a named file: load_font reports it if missing
    seen: set[str] = set()
    fonts = []
    for p in paths:
        if p in seen or any(fnmatch.fnmatch(Path(p).name, x) for x in exclude):
            continue
        seen.add(p)
        fonts.append(load_font(p))
    if not fonts:
        raise DataError(
            f"data.fonts: no font matches {list(patterns)}. apt-get install {FONT_PACKAGES}, or add 'default' "
            "(Pillow's Latin font) to data.fonts."
        )
    if need_cjk and not any(f.cjk for f in fonts):
        raise DataError(
            "data.fonts: no font draws Chinese, but data.cjk_ratio > 0. apt-get install fonts-wqy-microhei "
            "(or fonts-noto-cjk), or set data.cjk_ratio: 0."
        )
    return fonts


@functools.lru_cache(maxsize=256)
def pil_font(path: str, size: int) -> ImageFont.FreeTypeFont:
    """A Pillow font object at ``size`` px (cached per process)."""
    if path == DEFAULT_FONT:
        return ImageFont.load_default(size=size)  # type: ignore[return-value]
    return ImageFont.truetype(path, size)
