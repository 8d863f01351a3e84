#!/usr/bin/env bash
# Runs real T5X finetuning of one gin/t5x experiment on every worker of a TPU VM slice.
#
#   launch/train_t5x.sh --name dsbs-v4 --zone us-central2-b --project my-proj \
#     --experiment cqa_dsbs_base --data_root gs://my-bucket/dsbs/data \
#     --model_dir gs://my-bucket/dsbs/runs
#
# Writes checkpoints and TensorBoard logs to MODEL_DIR = {model_dir}/{experiment}/{run_id}
# (run_id: a UTC timestamp unless given; printed first). Re-running with the same MODEL_DIR
# (launch/resume_t5x.sh) continues from its latest checkpoint. Extra T5X flags go after `--`,
# e.g. -- --gin.EVAL_PERIOD=500. Evaluate afterwards with launch/eval_t5x.sh.
# Expected runtime: see the experiment's gin file (gin/t5x/experiments/{experiment}.gin).
# shellcheck disable=SC2153  # upper-case flag variables are assigned by flag() in common.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

tpu_flags
flag experiment "" "a gin/t5x/experiments/*.gin name, e.g. cqa_dsbs_base"
flag data_root "" "gs:// data root holding {dataset}/manifest.json (\$DSBS_DATA_ROOT on the workers)"
flag model_dir "" "gs:// folder for runs; MODEL_DIR = {model_dir}/{experiment}/{run_id}"
flag run_id "" "run folder name (default: UTC timestamp); pass the old one to resume"
flag remote_dir "dsbs-jax" "where launch/setup_tpu.sh installed the project (relative to the worker's home)"
bool_flag exact_model_dir "use --model_dir as MODEL_DIR itself (resume of a printed MODEL_DIR)"
parse_flags "$@"
require name zone project experiment data_root model_dir remote_dir
require_gs data_root
require_gs model_dir
gin_file=gin/t5x/experiments/$EXPERIMENT.gin
[[ -f $REPO_ROOT/$gin_file ]] || die "no experiment '$EXPERIMENT': $REPO_ROOT/$gin_file does not exist (ls gin/t5x/experiments)"
[[ $EXPERIMENT != *_eval_* ]] || die "'$EXPERIMENT' is an evaluation config: use launch/eval_t5x.sh"
require_tools gcloud

if ((EXACT_MODEL_DIR)); then
  MODEL_DIR=${MODEL_DIR%/}
else
  [[ -n $RUN_ID ]] || RUN_ID=$(date -u +%Y%m%d_%H%M%S)
  MODEL_DIR=${MODEL_DIR%/}/$EXPERIMENT/$RUN_ID
fi
echo "# MODEL_DIR=$MODEL_DIR" >&2

t5x_args=(python -m t5x.train "--gin_file=$gin_file" "--gin.MODEL_DIR=\"$MODEL_DIR\"" --alsologtostderr "${EXTRA_ARGS[@]}")
# Every worker runs the same program; JAX connects the hosts of the slice by itself.
tpu_ssh all "$(remote_prelude); $(quote_cmd "${t5x_args[@]}")"
