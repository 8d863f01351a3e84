#!/usr/bin/env bash
# Trains on GPUs: one host with several GPUs, or several hosts joined by jax.distributed.
#
#   # one host, all its GPUs (embedded trainer or real T5X):
#   launch/train_gpu.sh --trainer dsbs --gin_file gin/experiments/cqa_dsbs_base.gin \
#     --data_root /data/dsbs --model_dir /ckpt/runs
#   # host i of N (run the same command on every host, --process_id 0..N-1):
#   launch/train_gpu.sh --trainer t5x --gin_file gin/t5x/experiments/cqa_dsbs_base.gin \
#     --data_root gs://my-bucket/dsbs/data --model_dir gs://my-bucket/dsbs/runs \
#     --num_processes 2 --process_id 0 --coordinator_address 10.0.0.2:1234 --run_id 20260101_1200
#
# Multi-host: exports JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID (read by
# `dsbs train`) and passes T5X its --multiprocess_gpu flags. MODEL_DIR must be storage that
# every host sees (gs:// or a shared filesystem), and --run_id the same on every host.
# Extra trainer flags go after `--`. T5X's network embeds with one-hot matmuls, which cost
# more on GPU than on TPU (docs/tpu.md); the embedded trainer does not.
# Expected runtime: the gin file states it; on GPUs not measured.
# shellcheck disable=SC2153  # upper-case flag variables are assigned by flag() in common.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

flag trainer "" "dsbs (embedded trainer, gin/experiments/) or t5x (real T5X, gin/t5x/experiments/)"
flag gin_file "" "gin file of the run, relative to the repo root"
flag data_root "" "data root holding {dataset}/manifest.json (\$DSBS_DATA_ROOT)"
flag model_dir "" "folder for runs; MODEL_DIR = {model_dir}/{gin file name}/{run_id}"
flag run_id "" "run folder name (default: UTC timestamp; give it explicitly on multi-host)"
flag num_processes "1" "hosts taking part (one process per host, each using all its GPUs)"
flag process_id "0" "this host's index, 0..num_processes-1"
flag coordinator_address "" "host:port of process 0 (required with --num_processes > 1)"
flag python "python" "Python interpreter of the environment with the project installed"
parse_flags "$@"
require trainer gin_file data_root model_dir num_processes process_id python
[[ $TRAINER == dsbs || $TRAINER == t5x ]] || die "--trainer must be dsbs or t5x, found '$TRAINER'"
[[ -f $REPO_ROOT/$GIN_FILE ]] || die "--gin_file $GIN_FILE: no such file under $REPO_ROOT"
[[ $NUM_PROCESSES =~ ^[1-9][0-9]*$ ]] || die "--num_processes must be a positive integer, found '$NUM_PROCESSES'"
if ! [[ $PROCESS_ID =~ ^[0-9]+$ ]] || ((PROCESS_ID >= NUM_PROCESSES)); then
  die "--process_id must be in 0..$((NUM_PROCESSES - 1)), found '$PROCESS_ID'"
fi
if ((NUM_PROCESSES > 1)); then
  require coordinator_address
  [[ -n $RUN_ID ]] || die "--run_id is required with --num_processes > 1: every host must write the same MODEL_DIR"
fi
require_tools nvidia-smi "$PYTHON"

[[ -n $RUN_ID ]] || RUN_ID=$(date -u +%Y%m%d_%H%M%S)
name=$(basename "$GIN_FILE" .gin)
MODEL_DIR=${MODEL_DIR%/}/$name/$RUN_ID
echo "# MODEL_DIR=$MODEL_DIR" >&2

env_vars=("DSBS_DATA_ROOT=$DATA_ROOT")
if ((NUM_PROCESSES > 1)); then
  env_vars+=("JAX_COORDINATOR_ADDRESS=$COORDINATOR_ADDRESS" "JAX_NUM_PROCESSES=$NUM_PROCESSES" "JAX_PROCESS_ID=$PROCESS_ID")
fi

if [[ $TRAINER == t5x ]]; then
  cmd=("$PYTHON" -m t5x.train "--gin_file=$GIN_FILE" "--gin.MODEL_DIR=\"$MODEL_DIR\"" --alsologtostderr)
  if ((NUM_PROCESSES > 1)); then
    cmd+=(--multiprocess_gpu "--coordinator_address=$COORDINATOR_ADDRESS"
      "--process_count=$NUM_PROCESSES" "--process_index=$PROCESS_ID")
  fi
else
  cmd=("$PYTHON" -m dsbs_jax.cli train "--gin_file=$GIN_FILE" "--gin.MODEL_DIR=\"$MODEL_DIR\"")
fi
cd "$REPO_ROOT"
run env "${env_vars[@]}" "${cmd[@]}" "${EXTRA_ARGS[@]}"
