#!/usr/bin/env bash
# Install everything ocrslim needs on a fresh Debian machine with Python 3.11: fonts for the
# synthetic data (Debian packages), then the package and its pinned dependencies (PyPI).
set -euo pipefail
cd "$(dirname "$0")"
FONTS="fonts-wqy-microhei fonts-dejavu-core fonts-liberation2 fonts-freefont-ttf"
if command -v apt-get >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  missing=$(for p in $FONTS; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
  if [ -n "$missing" ]; then
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq $missing >/dev/null
  fi
fi
# constraints.txt pins the whole dependency set (reproducible builds: same versions on every machine)
python -m pip install -q -c constraints.txt -e '.[dev]'
