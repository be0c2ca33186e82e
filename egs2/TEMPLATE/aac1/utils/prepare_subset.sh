#!/usr/bin/env bash
# Make data/<corpus>_<subset> from db.sh's corpus: your manifest (<CORPUS>_MANIFESTS/<subset>.jsonl) or
# aac-datasets (downloading into <CORPUS> what is missing). A data dir that exists is complete (prepare-data
# writes it atomically) and is kept.
#
#   utils/prepare_subset.sh [--root DIR] [--eval true --expect_refs 5] clotho|audiocaps SUBSET
set -euo pipefail

root=""          # aac-datasets folder (default: db.sh's CLOTHO / AUDIOCAPS)
eval=false       # evaluation set: one utterance per clip, all captions as text_spk1..N
expect_refs=""   # with --eval: every clip must have this many captions

help_message=$(sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//')
. utils/parse_options.sh
[ $# -eq 2 ] || { echo "${help_message}" >&2; exit 2; }
corpus=$1 subset=$2
. ./db.sh
. ./path.sh

out=data/${corpus}_${subset}
[ ! -f "${out}/wav.scp" ] || { echo "${out} exists: kept"; exit 0; }

upper=$(echo "${corpus}" | tr '[:lower:]' '[:upper:]')
manifests_var=${upper}_MANIFESTS
manifests=${!manifests_var:-}
if [ -n "${manifests}" ]; then
    jsonl=${manifests}/${subset}.jsonl
    [ -f "${jsonl}" ] || { echo "$0: ${manifests_var}=${manifests} has no ${subset}.jsonl" >&2; exit 1; }
else
    root=${root:-${!upper:-}}
    [ -n "${root}" ] || { echo "$0: set ${upper} (or ${manifests_var}) in db.sh" >&2; exit 1; }
    jsonl=data/local/${corpus}_${subset}.jsonl
    python utils/aac_datasets_manifest.py "${corpus}" "${subset}" "${jsonl}" --root "${root}" --download
fi
opts=()
if "${eval}"; then opts+=(--eval); fi
[ -z "${expect_refs}" ] || opts+=(--expect_refs "${expect_refs}")
python -m espnet_slam_aac.bin.prepare_data "${jsonl}" "${out}" "${opts[@]}"
