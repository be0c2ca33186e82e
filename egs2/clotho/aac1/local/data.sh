#!/usr/bin/env bash
# Stage 1 of the Clotho recipe (corpora: db.sh): Clotho v2.1 as data/clotho_dev and data/clotho_val (one
# utterance per caption) and data/clotho_eval (one per clip, its 5 references as text_spk1..5); for
# pre-training, AudioCaps train as data/audiocaps_train when db.sh names AudioCaps, and each
# PRETRAIN_MANIFESTS entry name=path as data/<name>.
set -euo pipefail
. ./db.sh

utils/prepare_subset.sh clotho dev
utils/prepare_subset.sh clotho val
utils/prepare_subset.sh --eval true --expect_refs 5 clotho eval
if [ -n "${AUDIOCAPS}${AUDIOCAPS_MANIFESTS}" ]; then
    utils/prepare_subset.sh audiocaps train
else
    echo "$0: AUDIOCAPS is empty in db.sh: pre-training without AudioCaps (SLAM-AAC pre-trains with it)"
fi
. ./path.sh
for item in ${PRETRAIN_MANIFESTS}; do
    [ -f "data/${item%%=*}/wav.scp" ] || python -m espnet_slam_aac.bin.prepare_data "${item#*=}" "data/${item%%=*}"
done
