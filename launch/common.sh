# shellcheck shell=bash
# Shared helpers for launch/*.sh: declared flags, --help from the script's header, --dry_run,
# fail-fast checks for required flags and tools, and the TPU VM ssh wrapper.
#
# Not run on its own; each script sources it:
#   source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
#   flag zone "" "TPU zone, e.g. us-central2-b"      # -> $ZONE
#   bool_flag spot "create a spot TPU"              # -> $SPOT (0/1)
#   parse_flags "$@"; require zone
# Expected runtime: instant (it only defines functions).

LAUNCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(dirname "$LAUNCH_DIR")
export LAUNCH_DIR REPO_ROOT
DRY_RUN=0
# shellcheck disable=SC2034  # arguments after `--`, read by the scripts that source this file
EXTRA_ARGS=()
_FLAGS=()
_BOOL_FLAGS=()
declare -A _FLAG_HELP=()
declare -A _FLAG_DEFAULT=()

die() {
  printf '%s: error: %s\n' "$(basename "$0")" "$*" >&2
  exit 2
}

_var() { local name=$1; printf '%s' "${name^^}"; }

# flag NAME DEFAULT HELP: a valued flag --NAME, stored in the upper-case variable $NAME.
flag() {
  _FLAGS+=("$1")
  _FLAG_DEFAULT[$1]=$2
  _FLAG_HELP[$1]=$3
  printf -v "$(_var "$1")" '%s' "$2"
}

# bool_flag NAME HELP: a switch --NAME (also --NAME=true/false), stored as 0/1 in $NAME.
bool_flag() {
  _BOOL_FLAGS+=("$1")
  _FLAG_HELP[$1]=$2
  printf -v "$(_var "$1")" '%s' 0
}

usage() {
  # The script's header comment (after the shebang, up to the first non-comment line).
  # Lint directives (lines starting "# shellcheck") belong to the code, not to the help text.
  sed -n '2,/^[^#]/{/^# shellcheck /d;/^#/s/^# \{0,1\}//p}' "$0"
  printf '\nFlags:\n'
  local name
  for name in "${_FLAGS[@]}"; do
    printf '  --%-20s %s' "$name" "${_FLAG_HELP[$name]}"
    [[ -n ${_FLAG_DEFAULT[$name]} ]] && printf ' (default: %s)' "${_FLAG_DEFAULT[$name]}"
    printf '\n'
  done
  for name in "${_BOOL_FLAGS[@]}"; do
    printf '  --%-20s %s\n' "$name" "${_FLAG_HELP[$name]}"
  done
  printf '  --%-20s %s\n' dry_run "print the exact commands instead of running them" help "this text"
}

_set_flag() {
  local name=${1#--} value=$2 known
  for known in "${_FLAGS[@]}"; do
    if [[ $known == "$name" ]]; then printf -v "$(_var "$name")" '%s' "$value"; return; fi
  done
  for known in "${_BOOL_FLAGS[@]}"; do
    if [[ $known == "$name" ]]; then
      case $value in
        1|true|True|yes) printf -v "$(_var "$name")" '%s' 1 ;;
        0|false|False|no) printf -v "$(_var "$name")" '%s' 0 ;;
        *) die "--$name takes no value or true/false, found '$value'" ;;
      esac
      return
    fi
  done
  die "unknown flag --$name (see $(basename "$0") --help)"
}

_is_bool() {
  local known
  for known in "${_BOOL_FLAGS[@]}"; do [[ $known == "${1#--}" ]] && return 0; done
  return 1
}

# parse_flags "$@": sets the flag variables; arguments after `--` go to EXTRA_ARGS.
# shellcheck disable=SC2034  # EXTRA_ARGS is read by the scripts that source this file
parse_flags() {
  while (($#)); do
    case $1 in
      -h|--help) usage; exit 0 ;;
      --dry_run|--dry_run=true) DRY_RUN=1 ;;
      --dry_run=false) DRY_RUN=0 ;;
      --)
        shift
        EXTRA_ARGS=("$@")
        local arg
        for arg in "$@"; do
          [[ $arg != --dry_run* ]] || die "--dry_run after '--' would go to the remote program; put it before '--'"
        done
        break
        ;;
      --*=*) _set_flag "${1%%=*}" "${1#*=}" ;;
      --*)
        if _is_bool "$1"; then
          _set_flag "$1" 1
        else
          (($# >= 2)) || die "flag $1 needs a value: $1 VALUE (${_FLAG_HELP[${1#--}]:-see --help})"
          _set_flag "$1" "$2"
          shift
        fi
        ;;
      *) die "unexpected argument '$1': flags are --name VALUE (see $(basename "$0") --help)" ;;
    esac
    shift
  done
}

# require NAME...: fail fast naming every missing flag and what it is for.
require() {
  local name var missing=()
  for name in "$@"; do
    var=$(_var "$name")
    [[ -n ${!var} ]] || missing+=("--$name (${_FLAG_HELP[$name]})")
  done
  if ((${#missing[@]})); then
    printf '%s: error: missing required flag(s):\n' "$(basename "$0")" >&2
    printf '  %s\n' "${missing[@]}" >&2
    printf 'Run %s --help for all flags.\n' "$(basename "$0")" >&2
    exit 2
  fi
}

# require_tools TOOL...: commands that a real (not --dry_run) run needs on PATH.
require_tools() {
  ((DRY_RUN)) && return 0
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found on PATH; install it (gcloud/gsutil: the Google Cloud CLI, https://cloud.google.com/sdk/docs/install) or use --dry_run to only print the commands"
  done
}

# require_gs NAME: the flag must be a gs:// URL (TPU hosts share checkpoints and data through GCS).
require_gs() {
  local var
  var=$(_var "$1")
  [[ ${!var} == gs://* ]] || die "--$1 must be a gs:// URL (every TPU host reads and writes it), found '${!var}'"
}

# quote ARG: ARG as the shell would need it, single-quoted only when it has to be.
quote() {
  if [[ $1 =~ ^[A-Za-z0-9_./:=@%+,~-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

quote_cmd() {
  local out=() arg
  for arg in "$@"; do out+=("$(quote "$arg")"); done
  printf '%s\n' "${out[*]}"
}

# run CMD...: prints CMD (stdout) under --dry_run, else echoes it to stderr and runs it.
run() {
  if ((DRY_RUN)); then
    quote_cmd "$@"
  else
    printf '+ %s' "$(quote_cmd "$@")" >&2
    printf '\n' >&2
    "$@"
  fi
}

# tpu_ssh WORKER REMOTE_COMMAND: runs a command on one worker (or "all") of $NAME.
tpu_ssh() {
  # shellcheck disable=SC2153  # NAME, ZONE, PROJECT come from tpu_flags
  run gcloud compute tpus tpu-vm ssh "$NAME" --zone "$ZONE" --project "$PROJECT" \
    "--worker=$1" --command "$2"
}

# Runtime (software) version for an accelerator type, per Cloud TPU's documentation.
default_runtime_version() {
  case $1 in
    v4-*) echo tpu-ubuntu2204-base ;;
    v5litepod-*|v5e-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    *) die "no default runtime version for --accelerator_type $1; pass --runtime_version (gcloud compute tpus tpu-vm versions list --zone ZONE)" ;;
  esac
}

# The remote environment every TPU command starts with: repo dir, data root, venv.
remote_prelude() {
  printf 'set -euo pipefail; cd %s; source .venv/bin/activate; export DSBS_DATA_ROOT=%s' \
    "$(quote "$REMOTE_DIR")" "$(quote "$DATA_ROOT")"
}

# Flags that every TPU script shares.
tpu_flags() {
  flag name "" "TPU VM (and queued resource) name"
  flag zone "" "zone that offers the accelerator type, e.g. us-central2-b for v4 (gcloud compute tpus accelerator-types list --zone Z)"
  flag project "" "GCP project id"
}
