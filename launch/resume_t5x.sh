#!/usr/bin/env bash
# Resumes a T5X run after a spot/preemptible interruption: same MODEL_DIR, latest checkpoint.
#
#   launch/resume_t5x.sh --name dsbs-v4 --zone us-central2-b --project my-proj --queued --spot \
#     --accelerator_type v4-8 --experiment cqa_dsbs_base --data_root gs://my-bucket/dsbs/data \
#     --model_dir gs://my-bucket/dsbs/runs/cqa_dsbs_base/20260101_120000
#
# If the slice is gone (queued resource SUSPENDED/FAILED/missing, TPU VM PREEMPTED/missing) or
# --recreate is given, it is deleted, created again with the same flags and set up again.
# T5X then restores the newest checkpoint in MODEL_DIR (at most CHECKPOINT_PERIOD steps lost).
# Expected runtime: set-up (~10 min, plus waiting for capacity) + the remaining training steps.
# shellcheck disable=SC2153  # upper-case flag variables are assigned by flag() in common.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

tpu_flags
flag accelerator_type "" "slice type used at creation, e.g. v4-8 (needed to recreate)"
flag runtime_version "" "TPU software version (default: the one for the accelerator type)"
flag experiment "" "the gin/t5x/experiments/*.gin name that the run trains"
flag data_root "" "gs:// data root (\$DSBS_DATA_ROOT on the workers)"
flag model_dir "" "the interrupted run's MODEL_DIR, exactly as launch/train_t5x.sh printed it"
flag remote_dir "dsbs-jax" "where the project lives on each worker (relative to its home)"
bool_flag queued "the slice is a queued resource"
bool_flag spot "recreate with spot capacity"
bool_flag recreate "delete and recreate the slice whatever its state"
parse_flags "$@"
require name zone project accelerator_type experiment data_root model_dir
require_gs model_dir
require_tools gcloud

common=(--name "$NAME" --zone "$ZONE" --project "$PROJECT")
dry=()
((DRY_RUN)) && dry=(--dry_run)
queued=()
((QUEUED)) && queued=(--queued)

if ((!RECREATE)); then
  if ((QUEUED)); then
    describe=(gcloud compute tpus queued-resources describe "$NAME" --zone "$ZONE" --project "$PROJECT" --format 'value(state.state)')
    healthy=ACTIVE
  else
    describe=(gcloud compute tpus tpu-vm describe "$NAME" --zone "$ZONE" --project "$PROJECT" --format 'value(state)')
    healthy=READY
  fi
  if ((DRY_RUN)); then
    run "${describe[@]}"
    echo "# if that is not $healthy, the slice is recreated (as with --recreate)"
  else
    state=$(run "${describe[@]}" 2>/dev/null || echo MISSING)
    echo "# state of $NAME: ${state:-MISSING}" >&2
    [[ $state == "$healthy" ]] || RECREATE=1
  fi
fi

if ((RECREATE)); then
  create=("${common[@]}" --accelerator_type "$ACCELERATOR_TYPE")
  [[ -n $RUNTIME_VERSION ]] && create+=(--runtime_version "$RUNTIME_VERSION")
  ((SPOT)) && create+=(--spot)
  # A missing slice makes delete fail; that is the state we want.
  "$LAUNCH_DIR/delete_tpu.sh" "${common[@]}" "${queued[@]}" "${dry[@]}" || true
  "$LAUNCH_DIR/create_tpu.sh" "${create[@]}" "${queued[@]}" "${dry[@]}"
  if ((QUEUED && !DRY_RUN)); then
    echo "# waiting for the queued resource to become ACTIVE" >&2
    until [[ $(gcloud compute tpus queued-resources describe "$NAME" --zone "$ZONE" --project "$PROJECT" --format 'value(state.state)') == ACTIVE ]]; do
      sleep 60
    done
  fi
  "$LAUNCH_DIR/setup_tpu.sh" "${common[@]}" --remote_dir "$REMOTE_DIR" "${dry[@]}"
fi

"$LAUNCH_DIR/train_t5x.sh" "${common[@]}" --experiment "$EXPERIMENT" --data_root "$DATA_ROOT" \
  --model_dir "$MODEL_DIR" --exact_model_dir --remote_dir "$REMOTE_DIR" "${dry[@]}" -- "${EXTRA_ARGS[@]}"
