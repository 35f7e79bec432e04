"""Fonts for synthetic text: a hashed lock file (the default), globs or files, with the characters each draws.

The default ``data.fonts`` is ``conf/fonts.lock``: one line per font file — sha256, path, Debian package,
package version — loaded in the lock's order, each file's sha256 checked, so the synthetic data does not
depend on which other fonts a machine happens to carry (``bash setup.sh`` installs the packages the lock
names). A missing or different font is a one-line error naming its package. After a deliberate change,
``python -m ocrslim.data.fonts --lock`` rewrites the lock from the system font folders (note: that changes
the synthetic data). Globs (``/usr/share/fonts/**/*.ttf``) stay accepted but are not reproducible: they
take whatever the machine has installed. Pillow's bundled font (``ImageFont.load_default``, Latin only) is
``"default"``, so tests run on a machine without system fonts.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import functools
import glob
import hashlib
import io
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from PIL import ImageFont

from ocrslim.core.config import FONT_LOCK, SYSTEM_FONT_GLOBS, DataConfig
from ocrslim.core.errors import DataError
from ocrslim.core.fsutil import write_text

__all__ = ["DEFAULT_FONT", "Font", "FONT_PACKAGES", "LockEntry", "discover_fonts", "load_font", "pil_font",
           "read_font_lock", "write_font_lock"]

DEFAULT_FONT = "default"  # Pillow's bundled Latin font
# for messages when no lock names the package (setup.sh installs the packages conf/fonts.lock names)
FONT_PACKAGES = "fonts-wqy-microhei fonts-dejavu-core fonts-dejavu-extra fonts-liberation2 fonts-freefont-ttf"
LOCK_SUFFIX = ".lock"
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


@dataclasses.dataclass(frozen=True)
class LockEntry:
    """One line of a font lock: the file's sha256, its path, and the Debian package (and version) it comes from."""

    sha256: str
    path: str
    package: str
    version: str = "-"


def read_font_lock(lock: str | Path) -> list[LockEntry]:
    """The entries of a font lock file, in file order (``#`` comments and blank lines skipped).

    Raises:
        DataError: the lock file is missing or a line is not ``sha256 path package [version]``.
    """
    lock = Path(lock)
    try:
        text = lock.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{lock}: font lock file not found (data.fonts). Run from the repository root, or set "
                        "data.fonts to font files or globs.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{lock}: font lock file not readable ({type(e).__name__}). Restore it from git.") from None
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        if len(parts) not in (3, 4) or len(parts[0]) != 64 or any(c not in "0123456789abcdef" for c in parts[0]):
            raise DataError(f"{lock}:{number}: expected 'sha256 path debian-package [version]'. Restore it from git "
                            "or rewrite it with python -m ocrslim.data.fonts --lock.")
        entries.append(LockEntry(*parts))
    if not entries:
        raise DataError(f"{lock}: font lock lists no font. Rewrite it with python -m ocrslim.data.fonts --lock.")
    return entries


def _load_locked(lock: str, entry: LockEntry) -> Font:
    """Load one locked font and check its hash; a missing or different file names the package to install."""
    pkg = entry.package if entry.version in ("", "-") else f"{entry.package} (locked version {entry.version})"
    if not Path(entry.path).is_file():
        raise DataError(f"{entry.path}: font listed in {lock} is missing; it comes from Debian package {pkg}. "
                        f"Run bash setup.sh (or apt-get install {entry.package}).")
    font = load_font(entry.path)
    if font.sha256 != entry.sha256:
        raise DataError(f"{entry.path}: sha256 {font.sha256[:12]}... differs from {lock} ({entry.sha256[:12]}...): "
                        f"another build of Debian package {pkg}, which would change the synthetic data. Install the "
                        "locked version (bash setup.sh on the Debian release the lock was made on), or, deliberately, "
                        "rewrite the lock: python -m ocrslim.data.fonts --lock.")
    return font


def discover_fonts(patterns: Sequence[str], exclude: Sequence[str] = (), need_cjk: bool = False) -> list[Font]:
    """Fonts named by ``patterns``, minus ``exclude`` file-name globs, in the order given.

    Each pattern is a font lock file (``*.lock``: its fonts in lock order, each sha256 checked), a glob
    (sorted matches; not reproducible across machines), a font file, or ``"default"`` (Pillow's bundled font).
    A pattern naming one file that does not exist is an error; a glob that matches nothing is not.

    Raises:
        DataError: no font found, a named or locked font is missing, unreadable or (locked) has another
            sha256, or ``need_cjk`` and no font draws Chinese.
    """
    paths: list[tuple[str, tuple[str, LockEntry] | None]] = []
    for pat in patterns:
        if pat == DEFAULT_FONT:
            paths.append((DEFAULT_FONT, None))
        elif pat.endswith(LOCK_SUFFIX):
            paths += [(e.path, (pat, e)) for e in read_font_lock(pat)]
        elif glob.has_magic(pat):
            paths += [(p, None) for p in sorted(glob.glob(pat, recursive=True)) if p.lower().endswith(_SUFFIXES)]
        else:
            paths.append((pat, None))  # a named file: load_font reports it if missing
    seen: set[str] = set()
    fonts = []
    for p, locked in paths:
        if p in seen or any(fnmatch.fnmatch(Path(p).name, x) for x in exclude):
            continue
        seen.add(p)
        fonts.append(_load_locked(*locked) if locked else load_font(p))
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


# -------------------------------------------------------------------------------------- writing the lock
def _debian_package(path: str) -> tuple[str, str]:
    """(package, version) that installed ``path``, from dpkg; ("-", "-") where dpkg does not know it."""
    if not shutil.which("dpkg"):
        return "-", "-"
    res = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
    if res.returncode != 0 or ":" not in res.stdout:
        return "-", "-"
    pkg = res.stdout.split(":", 1)[0].split(",")[0].strip()
    ver = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True).stdout.strip()
    return pkg, ver or "-"


def write_font_lock(out: str | Path, patterns: Sequence[str], exclude: Sequence[str] = ()) -> list[LockEntry]:
    """Write a font lock of the fonts ``patterns`` give (after ``exclude``), in discovery order; return its entries."""
    fonts = [f for f in discover_fonts(patterns, exclude) if f.path != DEFAULT_FONT]
    entries = [LockEntry(f.sha256, f.path, *_debian_package(f.path)) for f in fonts]
    header = (
        "# Fonts of the synthetic data (data.fonts), loaded in this order; the data stage checks each sha256.\n"
        "# sha256  path  debian-package  version.  setup.sh installs these packages.\n"
        "# Rewrite after a deliberate change (it changes the synthetic data): python -m ocrslim.data.fonts --lock\n"
    )
    write_text(out, header + "".join(f"{e.sha256}  {e.path}  {e.package}  {e.version}\n" for e in entries))
    return entries


def main(argv: list[str] | None = None) -> int:
    """``python -m ocrslim.data.fonts --lock``: rewrite the font lock from the system font folders."""
    p = argparse.ArgumentParser(prog="python -m ocrslim.data.fonts", description=main.__doc__)
    p.add_argument("--lock", action="store_true", help="write the lock file (otherwise list the fonts found)")
    p.add_argument("--out", default=FONT_LOCK, help="lock file to write (default: %(default)s)")
    p.add_argument("--fonts", nargs="+", default=list(SYSTEM_FONT_GLOBS), help="globs or files to lock")
    p.add_argument("--exclude", nargs="*", default=list(DataConfig().font_exclude), help="file-name globs left out")
    args = p.parse_args(argv)
    if args.lock:
        entries = write_font_lock(args.out, args.fonts, args.exclude)
        pkgs = sorted({e.package for e in entries})
        print(f"wrote {args.out}: {len(entries)} fonts from {', '.join(pkgs)}")
    else:
        for f in discover_fonts(args.fonts, args.exclude):
            print(f"{f.sha256}  {f.path}")
    return 0


if __name__ == "__main__":
    from ocrslim.core.errors import OcrslimError

    try:
        sys.exit(main())
    except OcrslimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
