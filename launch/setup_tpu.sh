#!/usr/bin/env bash
# Installs this project and real T5X on every worker of a TPU VM slice.
#
#   launch/setup_tpu.sh --name dsbs-v4 --zone us-central2-b --project my-proj
#
# Copies this checkout to REMOTE_DIR on all workers (or clones --repo_url), creates a venv
# there and installs `.[tpu,t5x]` plus T5X, airio and jestimator at the git commits pinned in
# requirements-t5x.txt (--no-deps; the combination verified in docs/tpu.md "Checked here").
# Expected runtime: about 5-10 minutes, mostly pip downloads on each worker (not measured).
# shellcheck disable=SC2153  # upper-case flag variables are assigned by flag() in common.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

tpu_flags
flag remote_dir "dsbs-jax" "where the project lives on each worker (relative to its home)"
flag repo_url "" "git URL to clone on the workers instead of copying this checkout"
flag t5x_ref "" "override the pinned T5X commit of requirements-t5x.txt (unverified; default: the pin)"
parse_flags "$@"
require name zone project remote_dir
require_tools gcloud

if [[ -n $REPO_URL ]]; then
  fetch="rm -rf $(quote "$REMOTE_DIR") && git clone $(quote "$REPO_URL") $(quote "$REMOTE_DIR")"
  tpu_ssh all "$fetch"
else
  # A clean archive of the checkout (tracked files only), unpacked on every worker. Grids from
  # `dsbs sweep --emit t5x` travel through the bucket instead, so only code changes need a commit.
  changed=$(git -C "$REPO_ROOT" status --porcelain --untracked-files=no | wc -l)
  if ((changed)); then
    echo "# warning: $changed tracked file(s) have uncommitted changes, which git archive HEAD does not ship; commit them first" >&2
  fi
  archive=/tmp/dsbs-jax-src.tar.gz
  run git -C "$REPO_ROOT" archive --format=tar.gz -o "$archive" HEAD
  run gcloud compute tpus tpu-vm scp "$archive" "$NAME:/tmp/dsbs-jax-src.tar.gz" \
    --zone "$ZONE" --project "$PROJECT" --worker=all
  tpu_ssh all "rm -rf $(quote "$REMOTE_DIR") && mkdir -p $(quote "$REMOTE_DIR") && tar -xzf /tmp/dsbs-jax-src.tar.gz -C $(quote "$REMOTE_DIR")"
fi

install=(
  "set -euo pipefail"
  "(python3 -m venv --help >/dev/null 2>&1 && python3 -c 'import ensurepip' 2>/dev/null) || (sudo apt-get update -q && sudo apt-get install -y -q python3-venv)"
  "cd $(quote "$REMOTE_DIR")"
  "python3 -m venv .venv"
  "source .venv/bin/activate"
  "pip install -q -U pip"
  "pip install -q -e '.[tpu,t5x]'"
  # T5X's own requirements pull flax/optax/seqio from git HEAD; install the pinned commits
  # without them (the recipe checked in docs/tpu.md).
  "pip install -q --no-deps -r requirements-t5x.txt"
)
if [[ -n $T5X_REF ]]; then
  install+=("pip install -q --no-deps $(quote "t5x @ git+https://github.com/google-research/t5x@$T5X_REF")")
fi
install+=("python -c 'import jax, t5x.train; print(jax.process_index(), jax.device_count(), jax.devices()[0].device_kind)'")
joined=$(printf '%s; ' "${install[@]}")
tpu_ssh all "${joined%; }"
