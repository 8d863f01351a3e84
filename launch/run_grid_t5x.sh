#!/usr/bin/env bash
# Runs a whole T5X grid (`dsbs sweep --emit t5x --out gs://...`) on every worker of a TPU VM slice.
#
#   launch/run_grid_t5x.sh --name dsbs-v4 --zone us-central2-b --project my-proj \
#     --grid gs://my-bucket/dsbs/grids/cqa
#
# Every worker runs the grid's run_all.sh logic (python -m dsbs_jax.experiments.t5x_runner): each run in
# turn with real t5x.train, then its t5x.eval on the test split; finished runs are skipped, an
# interrupted run resumes from its MODEL_DIR, a failed run does not stop the rest, and the summary
# names the failed ones (exit 1). Re-run the same command after a preemption (launch/resume_t5x.sh
# recreates a lost slice first). The grid, its gin files and MODEL_DIRs live in the bucket, so the
# workers need only this project installed (launch/setup_tpu.sh). Logs go to ~/dsbs_grid_logs on
# each worker. Collect afterwards, anywhere: dsbs sweep --collect --out GRID.
# Expected runtime: the sum of the grid's runs (each experiment's FINETUNE_STEPS at T5X's
# timing/steps_per_second) plus a test-split decode per run; not measured on a TPU here.
# shellcheck disable=SC2153  # upper-case flag variables are assigned by flag() in common.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

tpu_flags
flag grid "" "the gs:// --out directory of dsbs sweep --emit t5x (holds grid.json)"
flag only "" "comma-separated run names to run (default: every run)"
flag remote_dir "dsbs-jax" "where launch/setup_tpu.sh installed the project (relative to the worker's home)"
parse_flags "$@"
require name zone project grid remote_dir
require_gs grid
require_tools gcloud

runner=(python -m dsbs_jax.experiments.t5x_runner --grid "${GRID%/}" --work_dir dsbs_grid_logs)
[[ -n $ONLY ]] && runner+=(--only "$ONLY")
((${#EXTRA_ARGS[@]})) && runner+=(-- "${EXTRA_ARGS[@]}")
# Every worker runs the same command; JAX joins the hosts of the slice by itself. The data root and
# vocabulary come from grid.json, so no DSBS_DATA_ROOT is needed here.
tpu_ssh all "set -euo pipefail; cd $(quote "$REMOTE_DIR"); source .venv/bin/activate; cd ~; $(quote_cmd "${runner[@]}")"
