#!/usr/bin/env bash
# Training on a SLURM cluster through srun, one task per GPU.
#   tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args]
# Environment: GPUS (8 tasks), GPUS_PER_NODE (8; 0 = CPU tasks, no --gres),
# CPUS_PER_TASK (5), SRUN_ARGS, MASTER_PORT (29500), PYTHON (python).
set -euo pipefail
source "$(dirname "$0")/launch_common.sh"
[ $# -ge 4 ] || usage "$0 PARTITION JOB_NAME CONFIG WORK_DIR [train.py arguments]"
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
shift 4
srun_tool "$PARTITION" "$JOB_NAME" train.py "$CONFIG" --work-dir="$WORK_DIR" "$@"
