#!/usr/bin/env bash
# Testing on a SLURM cluster through srun, one task per GPU.
#   tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args]
# Environment: as tools/slurm_train.sh.
set -euo pipefail
source "$(dirname "$0")/launch_common.sh"
[ $# -ge 4 ] || usage "$0 PARTITION JOB_NAME CONFIG CHECKPOINT [test.py arguments]"
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
CHECKPOINT=$4
shift 4
srun_tool "$PARTITION" "$JOB_NAME" test.py "$CONFIG" "$CHECKPOINT" "$@"
