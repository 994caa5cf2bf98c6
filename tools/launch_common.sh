# Sourced by dist_train.sh, dist_test.sh, slurm_train.sh and slurm_test.sh:
# run tools/<train|test>.py on every rank, with the repository on PYTHONPATH.
# PYTHON (default: python) is the interpreter of every rank.

TOOLS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export PYTHONPATH="$TOOLS_DIR/..${PYTHONPATH:+:$PYTHONPATH}"
PYTHON=${PYTHON:-python}

usage() { printf 'usage: %s\n' "$*" >&2; exit 2; }

# torchrun_tool TOOL NPROC ARGS...: NPROC processes on this node, --launcher
# pytorch; NNODES, NODE_RANK, PORT and MASTER_ADDR as in mmdet's scripts.
torchrun_tool() {
  local tool=$1 nproc=$2
  shift 2
  "$PYTHON" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" \
    --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --master_port="${PORT:-29500}" \
    --nproc_per_node="$nproc" \
    "$TOOLS_DIR/$tool" "$@" --launcher pytorch
}

# srun_tool PARTITION JOB_NAME TOOL ARGS...: GPUS tasks through srun,
# --launcher slurm. GPUS_PER_NODE=0 runs on CPUs: no --gres, tasks placed by
# SLURM, OMP_NUM_THREADS=CPUS_PER_TASK unless set.
srun_tool() {
  local partition=$1 job_name=$2 tool=$3
  shift 3
  local gpus=${GPUS:-8} gpus_per_node=${GPUS_PER_NODE:-8}
  local cpus_per_task=${CPUS_PER_TASK:-5} placement=()
  if [ "$gpus_per_node" -gt 0 ]; then
    placement=(--gres="gpu:$gpus_per_node" --ntasks-per-node="$gpus_per_node")
  else
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$cpus_per_task}
  fi
  export MASTER_PORT=${MASTER_PORT:-29500}
  set -x
  # SRUN_ARGS is split into words on purpose, as in mmdet's scripts
  # shellcheck disable=SC2086
  srun -p "$partition" \
    --job-name="$job_name" \
    --ntasks="$gpus" \
    ${placement[@]+"${placement[@]}"} \
    --cpus-per-task="$cpus_per_task" \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS:-} \
    "$PYTHON" -u "$TOOLS_DIR/$tool" "$@" --launcher=slurm
}
