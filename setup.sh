#!/usr/bin/env bash
# Install everything ocrslim needs on a fresh Debian machine with Python 3.11: fonts for the
# synthetic data (Debian packages), then the package and its pinned dependencies (PyPI).
set -euo pipefail
cd "$(dirname "$0")"
# The Debian packages conf/fonts.lock names (the data stage checks each font's sha256 against the lock)
FONTS=$(awk '!/^#/ && NF >= 3 && $3 != "-" {print $3}' conf/fonts.lock | sort -u | tr '\n' ' ')
if command -v apt-get >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  missing=$(for p in $FONTS; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
  if [ -n "$missing" ]; then
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq $missing >/dev/null
  fi
fi
# constraints.txt pins the whole dependency closure of ocrslim[dev] (reproducible builds: the same versions on
# every machine); python scripts/constraints.py --check tells whether this environment matches it.
# The base install is the runtime (reading with a bundle); [pipeline] adds training, export and the DAG.
python -m pip install -q -c constraints.txt -e '.[dev,pipeline]'
