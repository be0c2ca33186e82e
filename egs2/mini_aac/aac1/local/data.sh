#!/usr/bin/env bash
# Stage 1 of the mini recipe: synthesize a small clip-caption corpus (nothing is downloaded) and turn it
# into Kaldi-style data dirs: data/train (2 captions per clip), data/valid and data/test (5 references
# per clip, text_spk1..5), plus data/local/synth/paraphrases.jsonl for stage 2.
set -euo pipefail

n_train=160
n_valid=16
n_test=24
seconds=4.0

help_message="Usage: $0 [--n_train N] [--n_valid N] [--n_test N] [--seconds S]"
. utils/parse_options.sh
. ./path.sh

synth_dir=data/local/synth
python local/synth_data.py "${synth_dir}" --n_train "${n_train}" --n_valid "${n_valid}" --n_test "${n_test}" \
    --seconds "${seconds}"
