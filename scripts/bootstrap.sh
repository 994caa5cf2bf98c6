#!/usr/bin/env bash
# Create or update .venv with the pinned stack (requirements/constraints.txt)
# and this package in editable mode. Used by `make test` and `make demo`.
# Idempotent: a stamp of the inputs makes a second run return at once.
#
# Environment: PYTHON (default python3), VENV (default .venv).
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
CONSTRAINTS=requirements/constraints.txt
STAMP="$VENV/.ms_rcnn_mm-bootstrap"

say() { printf '[bootstrap] %s\n' "$*"; }
die() { printf '[bootstrap] error: %s\n' "$*" >&2; exit 1; }

# The names of the files shipped as ms_rcnn_mm/.mim count too: the editable
# install holds one forwarding stub per file, so adding or removing a config
# or a tool needs a reinstall (editing one does not).
shipped_files() {
  (shopt -s globstar nullglob; printf '%s\n' configs/** tools/** model-index.yml) \
    | grep -v __pycache__
}

# The C sources count too: the editable install holds the extension they
# were compiled into.
inputs_hash() {
  { cat "$CONSTRAINTS" setup.cfg setup.py MANIFEST.in scripts/bootstrap.sh \
      ms_rcnn_mm/models/csrc/*.c; shipped_files; } \
    | sha256sum | cut -d' ' -f1
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(inputs_hash)" ] \
    && "$VENV/bin/python" -c 'import ms_rcnn_mm' 2>/dev/null; then
  exit 0
fi

command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found: install Python 3.10-3.12 or set PYTHON=/path/to/python3"
"$PYTHON" -c 'import sys; sys.exit(not ((3, 10) <= sys.version_info[:2] <= (3, 12)))' \
  || die "$("$PYTHON" -V 2>&1) found, but Python 3.10-3.12 is required (set PYTHON=/path/to/python3.11)"
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null \
  || die "$PYTHON has no venv/ensurepip module (Debian/Ubuntu: apt-get install python3-venv)"
command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 \
  || die "no C++ compiler (c++ or g++) found: mmcv's ops are compiled from source (Debian/Ubuntu: apt-get install g++)"

if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -c 'import sys; sys.exit(not ((3, 10) <= sys.version_info[:2] <= (3, 12)))' 2>/dev/null; then
  say "$VENV was made with another Python; recreating it"
  rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV with $("$PYTHON" -V 2>&1)"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

say "installing torch, setuptools<81 and numpy (pinned in $CONSTRAINTS)"
"${PIP[@]}" install -q -c "$CONSTRAINTS" torch setuptools wheel numpy ninja

if "$VENV/bin/python" -c 'import mmcv, sys; from mmcv.ops import RoIAlign, nms; sys.exit(mmcv.__version__ != "2.1.0")' 2>/dev/null; then
  say "mmcv 2.1.0 with compiled ops is installed"
else
  say "building mmcv 2.1.0 with its C++ ops from source: about 9 minutes on 2 cores the first time, seconds afterwards (pip caches the wheel)"
  MMCV_WITH_OPS=1 "${PIP[@]}" install -c "$CONSTRAINTS" --no-build-isolation mmcv==2.1.0
  "$VENV/bin/python" -c 'from mmcv.ops import RoIAlign, nms' \
    || die "mmcv was installed but its compiled ops do not import"
fi

say "installing mmdet, mmengine and ms_rcnn_mm (editable) with the test, deploy and boundary extras"
"${PIP[@]}" install -q -c "$CONSTRAINTS" --no-build-isolation -e '.[tests,deploy,boundary]'
# openmim (the [mim] extra; the tests run `mim train`) depends on openxlab,
# which pins setuptools~=60.2 and so cannot be resolved together with the
# constraints' setuptools: install it on its own, then put setuptools back
# (mmcv and mmengine need pkg_resources, torch needs setuptools>=77).
if ! "$VENV/bin/python" -c 'import mim' 2>/dev/null; then
  say "installing openmim (mim train/test), then restoring setuptools"
  "${PIP[@]}" install -q "$(grep '^openmim==' "$CONSTRAINTS")"
  say "(pip's dependency-conflict messages about setuptools are expected: openxlab pins 60.2, torch needs >= 77; the import check below decides)"
fi
"${PIP[@]}" install -q -c "$CONSTRAINTS" setuptools
# the stack still imports (compiled ops, pkg_resources) after the setuptools swap
"$VENV/bin/python" -W ignore - <<'PY'
from importlib.metadata import version

import mim, mmcv, mmdet, pkg_resources, torch  # noqa: F401
from mmcv.ops import RoIAlign, nms  # noqa: F401

import ms_rcnn_mm

print(f'[bootstrap] ready: ms_rcnn_mm {ms_rcnn_mm.__version__}, '
      f'mmdet {mmdet.__version__}, mmcv {mmcv.__version__}, '
      f'torch {torch.__version__}, openmim {version("openmim")}')
PY
inputs_hash > "$STAMP"
