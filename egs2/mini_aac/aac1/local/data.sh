#!/usr/bin/env bash
# Stage 1 of the mini recipe: synthesize a small clip-caption corpus (nothing is downloaded) and turn it
# into Kaldi-style data dirs: data/train (2 captions per clip, one utterance each), data/valid (the same
# layout, for the validation loss) and data/test (5 references per clip: text_spk1..5). The other
# wordings of each training clip go to data/local/synth/paraphrases.jsonl for stage 2. The frozen models the
# configs name (downloads/eat, downloads/llm, downloads/clap) are made here too, tiny and random.
set -euo pipefail

n_train=160
n_valid=16
n_test=24
seconds=2.0

help_message="Usage: $0 [--n_train N] [--n_valid N] [--n_test N] [--seconds S]"
. utils/parse_options.sh
. ./path.sh

synth=data/local/synth
if [ ! -f "${synth}/.done" ]; then
    python local/synth_data.py "${synth}" --n_train "${n_train}" --n_valid "${n_valid}" --n_test "${n_test}" \
        --seconds "${seconds}"
    touch "${synth}/.done"
fi
# prepare-data writes a data dir atomically: one that exists is complete.
[ -f data/train/wav.scp ] || python -m espnet_slam_aac.bin.prepare_data "${synth}/train.jsonl" data/train
[ -f data/valid/wav.scp ] || python -m espnet_slam_aac.bin.prepare_data "${synth}/valid.jsonl" data/valid
[ -f data/test/wav.scp ] || \
    python -m espnet_slam_aac.bin.prepare_data "${synth}/test.jsonl" data/test --eval --expect_refs 5
if [ ! -f downloads/.done ]; then
    python local/make_tiny_models.py "${synth}/train.jsonl" downloads
    touch downloads/.done
fi
