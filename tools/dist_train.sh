#!/usr/bin/env bash
# Distributed training with torchrun: NPROC processes on this node (one per
# GPU; on a machine without CUDA, CPU processes with gloo).
#   tools/dist_train.sh CONFIG NPROC [tools/train.py arguments]
# Environment: NNODES (1), NODE_RANK (0), PORT (29500), MASTER_ADDR
# (127.0.0.1), PYTHON (python).
set -euo pipefail
source "$(dirname "$0")/launch_common.sh"
[ $# -ge 2 ] || usage "$0 CONFIG NPROC [train.py arguments]"
CONFIG=$1
NPROC=$2
shift 2
torchrun_tool train.py "$NPROC" "$CONFIG" "$@"
