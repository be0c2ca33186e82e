#!/usr/bin/env bash
# SLAM-AAC recipe template. egs2/<corpus>/aac1/run.sh sets the corpus options and calls this script.
set -euo pipefail

log() { echo "$(date '+%Y-%m-%dT%H:%M:%S') (${0##*/}:${BASH_LINENO[0]}) $*"; }

stage=1
stop_stage=12
skip_data_prep=false
local_data_opts=""

help_message="Usage: $0 [options]
Stages:
  1  data preparation: local/data.sh -> data/<set>
Options:
  --stage N, --stop_stage N   run stages N..M (default ${stage}..${stop_stage})
  --skip_data_prep BOOL       skip stage 1 (default ${skip_data_prep})
  --local_data_opts STR       options passed to local/data.sh
"

log "$0 $*"
. utils/parse_options.sh
[ $# -eq 0 ] || { echo "${help_message}" >&2; exit 2; }
. ./path.sh
. ./cmd.sh

if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ] && ! "${skip_data_prep}"; then
    log "Stage 1: data preparation (local/data.sh ${local_data_opts})"
    # shellcheck disable=SC2086
    local/data.sh ${local_data_opts}
fi

log "Done (stages ${stage}..${stop_stage})"
