#!/usr/bin/env bash
# The built-in example: a synthesized clip-caption corpus, tiny EAT / LLM / CLAP models made on the spot,
# every stage on CPU in a few minutes. Options are those of aac.sh (./aac.sh --help).
set -euo pipefail

./aac.sh \
    --stop_stage 1 \
    "$@"
