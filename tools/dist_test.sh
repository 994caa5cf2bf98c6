#!/usr/bin/env bash
# Distributed testing with torchrun: NPROC processes on this node.
#   tools/dist_test.sh CONFIG CHECKPOINT NPROC [tools/test.py arguments]
# Environment: as tools/dist_train.sh.
set -euo pipefail
source "$(dirname "$0")/launch_common.sh"
[ $# -ge 3 ] || usage "$0 CONFIG CHECKPOINT NPROC [test.py arguments]"
CONFIG=$1
CHECKPOINT=$2
NPROC=$3
shift 3
torchrun_tool test.py "$NPROC" "$CONFIG" "$CHECKPOINT" "$@"
