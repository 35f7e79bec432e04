#!/usr/bin/env bash
# CI metrics diff: reproduce the tiny-profile DAG in a temporary clone of this checkout and print
# `dvc metrics diff --md` against HEAD (also appended to $GITHUB_STEP_SUMMARY when set).
# Fails with the failing step's exit code (e.g. a broken `dvc repro`). See docs/ci.md.
#   scripts/ci_metrics_diff.sh [--committed] [--all] [--keep] [hydra override ...]
set -euo pipefail
cd "$(dirname "$0")/.."
export DVC_NO_ANALYTICS=1 DO_NOT_TRACK=1
exec "${PYTHON:-python}" -m ocrslim.cidiff --repo . "$@"
