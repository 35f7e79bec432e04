#!/usr/bin/env bash
# CI metrics diff: what this change did to size, speed and accuracy, like against like (docs/ci.md):
# mode remote (a DVC remote is configured: only the touched stages rerun, against the base's committed
# metrics), else mode base (the tiny profile at HEAD and at its base, both reproduced in temporary clones).
# Prints the report (headline table, full `dvc metrics diff --md`, changed plots), also to
# $GITHUB_STEP_SUMMARY and --out FILE. Exit 3 when a --fail-on rule breaks, else the failing step's code.
#   scripts/ci_metrics_diff.sh [--mode auto|base|remote|committed] [--base auto|REV|none] [--remote NAME]
#                              [--committed] [--all] [--fail-on RULES] [--out FILE] [--plots DIR]
#                              [--keep | --workdir DIR] [hydra override ...]
set -euo pipefail
export DVC_NO_ANALYTICS=1 DO_NOT_TRACK=1
# Relative --out / --plots / --workdir paths are the caller's: the repository is passed, not entered.
exec "${PYTHON:-python}" -m ocrslim.cidiff --repo "$(cd "$(dirname "$0")/.." && pwd)" "$@"
