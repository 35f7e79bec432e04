"""constraints.txt: exact pins of the dependency closure of ocrslim with all its extras, from installed metadata.

    python scripts/constraints.py --write    # rewrite constraints.txt from this environment
    python scripts/constraints.py --check    # exit 1 (one line per problem) if it and this environment disagree

The closure starts from what pyproject.toml declares — the dependencies and every extra (the runtime, the
pipeline, dev: what ``setup.sh`` installs) — and follows every ``Requires-Dist`` (extras included, environment
markers evaluated for this interpreter) through the installed distributions; nothing is downloaded. Each package is
pinned at its installed version with the local label dropped (``torch==2.13.0``, installed as ``2.13.0+cpu``:
``setup.sh`` takes the CPU wheel on disk by that exact pin). ``--check`` fails when a pin is outside the
closure (a stray package from a ``pip freeze``), a closure member is not pinned, or an installed version
differs from its pin (the environment is not the one the results were made with).
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import sys
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
CONSTRAINTS = REPO / "constraints.txt"
PYPROJECT = REPO / "pyproject.toml"
ROOT = "ocrslim with all extras"
HEADER = """\
# Exact versions of the dependency closure of ocrslim and all its extras (pip constraints; setup.sh installs
# with them).
# Written from installed metadata by: python scripts/constraints.py --write   (check: --check)
# opencv-python and opencv-python-headless are both in the closure (rapidocr_onnxruntime requires the first,
# ocrslim and rapidocr the second); both install the same cv2 module, so they are pinned to the same version.
"""


def _requires(dist: md.Distribution, extras: frozenset[str]) -> list[Requirement]:
    out = []
    for line in dist.requires or []:
        req = Requirement(line)
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in (extras or {""})):
            continue
        out.append(req)
    return out


def root_requirements(pyproject: Path = PYPROJECT) -> list[Requirement]:
    """What pyproject.toml declares: the dependencies and every optional-dependency group (self-references out)."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    lines = list(project.get("dependencies", []))
    for group in project.get("optional-dependencies", {}).values():
        lines += group
    reqs = [Requirement(line) for line in lines]
    return [r for r in reqs if canonicalize_name(r.name) != canonicalize_name(project["name"])
            and (r.marker is None or r.marker.evaluate({"extra": ""}))]


def closure(pyproject: Path = PYPROJECT) -> dict[str, tuple[str, str]]:
    """``{canonical name: (distribution name, installed version)}`` of everything pyproject.toml's project needs
    (with all extras), itself excluded.

    Raises:
        SystemExit: a required distribution is not installed (run ``bash setup.sh``).
    """
    found: dict[str, tuple[str, str]] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    stack = root_requirements(pyproject)
    while stack:
        req = stack.pop()
        name, extras = canonicalize_name(req.name), frozenset(req.extras)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            raise SystemExit(f"{req.name}: required by {ROOT} but not installed. Run bash setup.sh first.") from None
        found[name] = (dist.metadata["Name"], dist.version)
        stack += _requires(dist, extras)
    return found


def pin(version: str) -> str:
    """The version a pin names: the installed one without its local label (``2.13.0+cpu`` → ``2.13.0``)."""
    return version.split("+", 1)[0]


def render(found: dict[str, tuple[str, str]]) -> str:
    """constraints.txt text: the header, then ``Name==version`` sorted case-insensitively."""
    rows = sorted(found.values(), key=lambda nv: canonicalize_name(nv[0]))
    return HEADER + "".join(f"{name}=={pin(version)}\n" for name, version in rows)


def read_pins(path: Path = CONSTRAINTS) -> dict[str, str]:
    """``{canonical name: pinned version}`` of a constraints file (comments and blank lines skipped)."""
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==":
            raise SystemExit(f"{path}: {line!r} is not an exact pin (name==version).")
        pins[canonicalize_name(req.name)] = specs[0].version
    return pins


def problems(pins: dict[str, str], found: dict[str, tuple[str, str]]) -> list[str]:
    """What disagrees between the pins and the installed closure, one line each."""
    out = [f"{n}=={v}: pinned but not in the dependency closure of {ROOT}. Remove it (python scripts/constraints.py "
           "--write)." for n, v in sorted(pins.items()) if n not in found]
    out += [f"{found[n][0]}: in the closure of {ROOT} but not pinned. Run python scripts/constraints.py --write."
            for n in sorted(found) if n not in pins]
    out += [f"{found[n][0]}: installed {found[n][1]}, pinned {pins[n]}. Run bash setup.sh (or, after a deliberate "
            "upgrade, python scripts/constraints.py --write)." for n in sorted(found)
            if n in pins and pin(found[n][1]) != pins[n]]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true", help="rewrite constraints.txt from this environment")
    group.add_argument("--check", action="store_true", help="compare constraints.txt with this environment")
    p.add_argument("--file", type=Path, default=CONSTRAINTS)
    args = p.parse_args(argv)
    found = closure()
    if args.write:
        args.file.write_text(render(found), encoding="utf-8")
        print(f"wrote {args.file}: {len(found)} pins")
        return 0
    bad = problems(read_pins(args.file), found)
    for line in bad:
        print(f"{args.file.name}: {line}", file=sys.stderr)
    if not bad:
        print(f"{args.file.name}: {len(found)} pins, the closure of {ROOT} at the installed versions")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
