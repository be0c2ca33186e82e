#!/usr/bin/env bash
# SLAM-AAC on AudioCaps, as the reference: pre-train on AudioCaps train, Clotho development with
# back-translated paraphrases and the PRETRAIN_MANIFESTS of db.sh (WavCaps, MACS, ...); fine-tune on
# AudioCaps train; decode the test split with beams 2..8; CLAP-Refine; score (aac-metrics). The pre-training
# is the Clotho recipe's: to reuse one, skip it with
#   ./run.sh --pretrained_model ../../clotho/aac1/exp/pretrain_train_pretrain/valid.loss.best.pth --skip_pretrain true
# Corpora and the CLAP: db.sh. Options: those of aac.sh (./aac.sh --help), e.g. --stage, --ngpu.
set -euo pipefail
. ./db.sh

pretrain_sets="audiocaps_train clotho_dev"
for item in ${PRETRAIN_MANIFESTS}; do pretrain_sets+=" ${item%%=*}"; done
refine=(--refine_config conf/refine.yaml)
if [ -n "${CLAP}" ]; then
    refine+=(--clap "${CLAP}")
else
    echo "$0: CLAP is empty in db.sh: stage 9 (CLAP-Refine) is skipped"
    refine+=(--skip_refine true)
fi

# exec: this script becomes aac.sh, so stopping it (Ctrl-C, kill, kill -9) stops the whole run
exec ./aac.sh \
    --pretrain_sets "${pretrain_sets}" \
    --paraphrase_sets clotho_dev \
    --paraphrase_config conf/paraphrase.yaml \
    --train_set audiocaps_train \
    --valid_set audiocaps_val \
    --test_sets audiocaps_test \
    --pretrain_config conf/train_pretrain.yaml \
    --train_config conf/train_finetune.yaml \
    --decode_config conf/decode.yaml \
    "${refine[@]}" \
    "$@"
