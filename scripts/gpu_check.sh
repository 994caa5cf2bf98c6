#!/usr/bin/env bash
# The prepared GPU check: CUDA-only tests, MaskIoU targets with CUDA
# proposals against mmdet's, the speed benchmark at 2x800x1333 without and
# with --amp, and 20 iterations of --amp training of the R-50 config on
# generated data, within 8 minutes on one GPU (ms_rcnn_mm/analysis/gpu_check.py
# holds the steps). Writes gpu_check.json, gpu_check.md and logs/ into the
# output folder.
#
# Usage: scripts/gpu_check.sh [OUTPUT_FOLDER] [OPTIONS...]
#   OUTPUT_FOLDER  default: $OUT if set, else work_dirs/gpu_check
#   OPTIONS        of `python -m ms_rcnn_mm.analysis.gpu_check --help`
#                  (--steps, --speed-config, --budget-s, --smoke)
# Environment: GPU_CHECK_PYTHON, the Python with the stack installed
#   (default .venv/bin/python where it exists, else python).
# Runs from a fresh checkout: the package need not be installed; where its
# C kernel is not built, it is built in place first.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${GPU_CHECK_PYTHON:-}" ]; then
  PY=$GPU_CHECK_PYTHON
elif [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
else
  PY=python
fi
command -v "$PY" >/dev/null 2>&1 || { echo "gpu_check: no Python at '$PY' (set GPU_CHECK_PYTHON)" >&2; exit 2; }

OUTDIR=${OUT:-work_dirs/gpu_check}
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
  OUTDIR=$1
  shift
fi

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c 'import ms_rcnn_mm.models._box_areas' 2>/dev/null; then
  echo "gpu_check: building the MaskIoU-target kernel in place"
  "$PY" setup.py -q build_ext --inplace \
    || echo "gpu_check: the kernel did not build; the targets step reports the portable path" >&2
fi
exec "$PY" -m ms_rcnn_mm.analysis.gpu_check --out "$OUTDIR" "$@"
