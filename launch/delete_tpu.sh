#!/usr/bin/env bash
# Tears down a TPU VM slice (and its queued resource): billing stops when this returns.
#
#   launch/delete_tpu.sh --name dsbs-v4 --zone us-central2-b --project my-proj --queued
#
# Expected runtime: a few minutes. Checkpoints, rationales and eval results live in gs://
# and are kept; delete those with gsutil when done.
# shellcheck disable=SC2153  # upper-case flag variables are assigned by flag() in common.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

tpu_flags
bool_flag queued "the slice was created with --queued (deletes the queued resource and its TPU VM)"
parse_flags "$@"
require name zone project
require_tools gcloud

if ((QUEUED)); then
  run gcloud compute tpus queued-resources delete "$NAME" --zone "$ZONE" --project "$PROJECT" --force --quiet
else
  run gcloud compute tpus tpu-vm delete "$NAME" --zone "$ZONE" --project "$PROJECT" --quiet
fi
