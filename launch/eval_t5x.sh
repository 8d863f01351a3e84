#!/usr/bin/env bash
# Evaluates a finetuned T5X run on a gold-label test split with t5x.eval on a TPU VM slice.
#
#   launch/eval_t5x.sh --name dsbs-v4 --zone us-central2-b --project my-proj \
#     --eval_config cqa_eval_base --data_root gs://my-bucket/dsbs/data \
#     --model_dir gs://my-bucket/dsbs/runs/cqa_dsbs_base/20260101_120000
#
# Restores the latest checkpoint in --model_dir (or --checkpoint_step N) and writes metrics to
# {model_dir}/eval_{split}/ (TensorBoard and {task}-metrics.jsonl); prints them at the end.
# Expected runtime: greedy decoding of one split: minutes on a v4-8 for base (not measured).
# shellcheck disable=SC2153  # upper-case flag variables are assigned by flag() in common.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

tpu_flags
flag eval_config "" "a gin/t5x/experiments/*_eval_*.gin name, e.g. cqa_eval_base"
flag data_root "" "gs:// data root (\$DSBS_DATA_ROOT on the workers)"
flag model_dir "" "the run's MODEL_DIR (printed by launch/train_t5x.sh)"
flag checkpoint_step "" "evaluate checkpoint_N (default: the latest in --model_dir)"
flag split "test" "SeqIO split to decode"
flag remote_dir "dsbs-jax" "where launch/setup_tpu.sh installed the project (relative to the worker's home)"
parse_flags "$@"
require name zone project eval_config data_root model_dir split remote_dir
require_gs data_root
require_gs model_dir
gin_file=gin/t5x/experiments/$EVAL_CONFIG.gin
[[ -f $REPO_ROOT/$gin_file ]] || die "no eval config '$EVAL_CONFIG': $REPO_ROOT/$gin_file does not exist (ls gin/t5x/experiments/*_eval_*)"
require_tools gcloud

MODEL_DIR=${MODEL_DIR%/}
output_dir=$MODEL_DIR/eval_$SPLIT
if [[ -n $CHECKPOINT_STEP ]]; then
  restore=("--gin.CHECKPOINT_PATH=\"$MODEL_DIR/checkpoint_$CHECKPOINT_STEP\"")
else
  restore=("--gin.CHECKPOINT_PATH=\"$MODEL_DIR\"" "--gin.utils.RestoreCheckpointConfig.mode=\"latest\"")
fi
eval_args=(python -m t5x.eval "--gin_file=$gin_file" "${restore[@]}" "--gin.EVAL_OUTPUT_DIR=\"$output_dir\""
  "--gin.utils.DatasetConfig.split=\"$SPLIT\"" --alsologtostderr "${EXTRA_ARGS[@]}")
tpu_ssh all "$(remote_prelude); $(quote_cmd "${eval_args[@]}")"
run gsutil cat "$output_dir/inference_eval/*-metrics.jsonl"
