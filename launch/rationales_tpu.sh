#!/usr/bin/env bash
# Generates teacher rationales on a TPU VM slice, one shard per host, then merges the shards.
#
#   launch/rationales_tpu.sh --name dsbs-v4-32 --zone us-central2-b --project my-proj \
#     --num_hosts 4 --dataset cqa --split train --src gs://my-bucket/dsbs/inputs/cqa \
#     --out gs://my-bucket/dsbs/data -- --teacher jax --jax_checkpoint gs://my-bucket/teacher
#
# Host i runs `dsbs rationales --src SRC --out OUT ... --num_shards NUM_HOSTS --shard_index i`
# (all hosts at once, each over its share of the inputs, resumable); with more than one host
# the last step, `dsbs rationales merge --out OUT --dataset D --split S --num_shards N` on
# worker 0, joins the shards into {out}/{dataset}/ and writes the manifest (one host merges by
# itself). --src is what `dsbs rationales --src` reads: a dataset dir from `dsbs import`, a
# release root, or a JSONL/CSV file. Flags after `--` go to `dsbs rationales` (teacher, model,
# sampling; see `dsbs rationales --help`). Using the paper's PaLM
# rationales instead needs no TPU: `dsbs import --format release` (docs/tpu.md).
# Expected runtime: (inputs / NUM_HOSTS) x the teacher's time per output; not measured.
# shellcheck disable=SC2153  # upper-case flag variables are assigned by flag() in common.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

tpu_flags
flag num_hosts "" "hosts in the slice (v4-8, v5litepod-8: 1; v4-32: 4; v5litepod-32: 8)"
flag dataset "" "dataset name, e.g. cqa"
flag split "train" "split to annotate"
flag src "" "inputs: a dataset dir from dsbs import, a release root or a JSONL/CSV file (gs://)"
flag out "" "gs:// data root; the rationales go to {out}/{dataset}/ (\$DSBS_DATA_ROOT of training)"
flag remote_dir "dsbs-jax" "where launch/setup_tpu.sh installed the project (relative to the worker's home)"
parse_flags "$@"
require name zone project num_hosts dataset split src out remote_dir
require_gs out
DATA_ROOT=$OUT  # remote_prelude exports it as DSBS_DATA_ROOT
[[ $NUM_HOSTS =~ ^[1-9][0-9]*$ ]] || die "--num_hosts must be a positive integer, found '$NUM_HOSTS'"
require_tools gcloud

common=(dsbs rationales --dataset "$DATASET" --split "$SPLIT" --src "$SRC" --out "$OUT" --num_shards "$NUM_HOSTS")
pids=()
for ((host = 0; host < NUM_HOSTS; host++)); do
  # One ssh per worker, in parallel: the shard index is the worker number.
  tpu_ssh "$host" "$(remote_prelude); $(quote_cmd "${common[@]}" --shard_index "$host" "${EXTRA_ARGS[@]}")" &
  pids+=($!)
  ((DRY_RUN)) && wait "${pids[-1]}"  # keep the printed commands in host order
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
((failed == 0)) || die "a shard failed; re-run the same command: finished examples are skipped"
if ((NUM_HOSTS > 1)); then
  merge=(dsbs rationales merge --out "$OUT" --dataset "$DATASET" --split "$SPLIT" --num_shards "$NUM_HOSTS")
  tpu_ssh 0 "$(remote_prelude); $(quote_cmd "${merge[@]}")"
fi
