#!/usr/bin/env bash
# Stage 1 of the AudioCaps recipe (corpora: db.sh): AudioCaps v1 as data/audiocaps_train and
# data/audiocaps_val (one utterance per caption) and data/audiocaps_test (one per clip, its 5 references as
# text_spk1..5), downloaded into db.sh's AUDIOCAPS (default: downloads) by aac-datasets from YouTube when
# missing: clips whose videos are gone are left out and listed in data/local/audiocaps_*.missing.tsv, so
# report the test clip count (data/audiocaps_test/wav.scp) with the scores. For pre-training: Clotho v2.1
# development as data/clotho_dev, and each PRETRAIN_MANIFESTS entry name=path as data/<name>.
set -euo pipefail
. ./db.sh

root=(--root "${AUDIOCAPS:-downloads}")
utils/prepare_subset.sh "${root[@]}" audiocaps train
utils/prepare_subset.sh "${root[@]}" audiocaps val
utils/prepare_subset.sh "${root[@]}" --eval true --expect_refs 5 audiocaps test
utils/prepare_subset.sh clotho dev
. ./path.sh
for item in ${PRETRAIN_MANIFESTS}; do
    [ -f "data/${item%%=*}/wav.scp" ] || python -m espnet_slam_aac.bin.prepare_data "${item#*=}" "data/${item%%=*}"
done
