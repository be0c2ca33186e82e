#!/usr/bin/env bash
# The built-in example: a synthesized clip-caption corpus, tiny EAT / LLM / CLAP models made on the spot,
# every stage on CPU in a few minutes. Options are those of aac.sh (./aac.sh --help).
set -euo pipefail

# exec: this script becomes aac.sh, so stopping it (Ctrl-C, kill, kill -9) stops the whole run
exec ./aac.sh \
    --ngpu 0 \
    --gpu_inference false \
    --nj 2 \
    --inference_nj 2 \
    --pretrain_sets "train" \
    --train_set train \
    --valid_set valid \
    --test_sets test \
    --paraphrase_sets train \
    --paraphrase_file data/local/synth/paraphrases.jsonl \
    --pretrain_config conf/train_pretrain.yaml \
    --train_config conf/train_finetune.yaml \
    --decode_config conf/decode.yaml \
    --refine_config conf/refine.yaml \
    --refine_tune_set valid \
    --refine_tune_metric cider_d \
    --refine_lm_weights "0 0.1 0.5 1 2" \
    --inference_model valid.loss.best.pth \
    --score_untrained true \
    "$@"
