#!/usr/bin/env bash
# Creates a Cloud TPU VM slice, directly or as a queued resource (waits for capacity).
#
#   launch/create_tpu.sh --name dsbs-v4 --zone us-central2-b --project my-proj \
#     --accelerator_type v4-8 --spot --queued
#
# Expected runtime: seconds to submit; a queued resource then waits for capacity (minutes to
# hours, spot capacity especially), a direct create takes a few minutes or fails at once
# when the zone has none. Next: launch/setup_tpu.sh with the same --name/--zone/--project.
# shellcheck disable=SC2153  # upper-case flag variables are assigned by flag() in common.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

tpu_flags
flag accelerator_type "" "slice type: v4-8, v4-32, v5litepod-8, v5litepod-16, v5p-8, v6e-8, ..."
flag runtime_version "" "TPU software version (default: the one for the accelerator type)"
bool_flag spot "spot capacity: much cheaper, preemptible at any time (resume with launch/resume_t5x.sh)"
bool_flag preemptible "legacy preemptible TPU (24 h limit); prefer --spot"
bool_flag queued "create through a queued resource (recommended for spot and large slices)"
parse_flags "$@"
require name zone project accelerator_type
[[ -n $RUNTIME_VERSION ]] || RUNTIME_VERSION=$(default_runtime_version "$ACCELERATOR_TYPE")
((SPOT && PREEMPTIBLE)) && die "--spot and --preemptible are exclusive; use --spot"
((QUEUED && PREEMPTIBLE)) && die "queued resources take --spot, not --preemptible"
require_tools gcloud

capacity=()
((SPOT)) && capacity=(--spot)
((PREEMPTIBLE)) && capacity=(--preemptible)

if ((QUEUED)); then
  run gcloud compute tpus queued-resources create "$NAME" --node-id "$NAME" \
    --zone "$ZONE" --project "$PROJECT" --accelerator-type "$ACCELERATOR_TYPE" \
    --runtime-version "$RUNTIME_VERSION" "${capacity[@]}"
  # Print, do not wait: capacity can take hours. ACTIVE means the TPU VM exists.
  run gcloud compute tpus queued-resources describe "$NAME" --zone "$ZONE" --project "$PROJECT" \
    --format 'value(state.state)'
else
  run gcloud compute tpus tpu-vm create "$NAME" --zone "$ZONE" --project "$PROJECT" \
    --accelerator-type "$ACCELERATOR_TYPE" --version "$RUNTIME_VERSION" "${capacity[@]}"
fi
