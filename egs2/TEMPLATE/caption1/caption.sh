#!/usr/bin/env bash
# Caption a corpus with a SLAM-AAC model: a folder of audio files (searched recursively), a wav.scp or a jsonl
# ({"key", "source"} lines), in --nj jobs run by cmd.sh's job runner (this machine, spread over its visible
# GPUs with --gpu_inference true, or a slurm array with cmd_backend=slurm), then merged. Run it from its folder:
#
#     ./caption.sh --model me/slam-aac-clotho --audio /data/unlabelled --out exp/captions --nj 8 --gpu_inference true
#
# Output (--out): captions.jsonl (one record per clip, in input order: key, path, duration, caption, candidates
# with beam size, log-probability and, with --refine, CLAP similarity), captions.tsv (key<TAB>caption),
# failed.tsv (key<TAB>path<TAB>reason: unreadable, empty, too short or non-finite audio, bad input lines),
# summary.json, logs/caption.<job>.log. Progress (clips, clips/s, time left) is printed every
# --progress_interval seconds, a summary at the end. Exit status 0: every input has a caption; 1: some failed
# (they are listed; the rest is written) or a job stopped (rerun).
#
# Resuming: jobs append to <out>/results/ batch by batch; kill anything at any point and rerun the same command:
# only what is missing is captioned, and the output equals that of an uninterrupted run (--nj may change
# between runs; the model and decoding settings may not: a rerun with others is refused).
set -euo pipefail

log() { echo "$(date '+%Y-%m-%dT%H:%M:%S') (${0##*/}) $*"; }
fail() { log "ERROR: $*" >&2; exit 1; }

run_args=("$@")

model=""               # packed model folder, experiment dir or Hugging Face Hub id
audio=""               # folder of audio files (recursive), wav.scp or jsonl
out=""                 # output folder
nj=4                   # parallel jobs (local processes or slurm array tasks)
gpu_inference=false    # one GPU per job (locally: spread over the visible GPUs)
refine=""              # CLAP-Refine with this CLAP (folder, .pt or Hub id), or "true": the model's refine.yaml
refine_config=""       # refine YAML (lm_weight, CLAP options)
decode_config=""       # decode YAML (default: the packed model's decode.yaml)
batch_size=8           # clips per forward pass
num_workers=2          # loader processes per job decoding and resampling audio
dtype=auto             # float32, bfloat16, float16 or auto (bfloat16 on GPU)
progress_interval=30   # seconds between progress lines
python=python          # the python that has espnet-slam-aac
caption_args=""        # more options of `espnet-slam-aac caption-corpus` (e.g. "--beams 2..8 --window 256")

help_message=$(sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//')"

Options (default):
$(sed -n '/^model=/,/^caption_args=/p' "$0" | sed -E 's/^([a-z_]+)=("[^"]*"|[^ ]*) *(# *)?(.*)/--\1 \2\t\4/' \
    | awk -F'\t' '{printf "  %-28s %s\n", $1, $2}')"

. utils/parse_options.sh
[ $# -eq 0 ] || fail "unexpected argument(s): $* (options are --name value)"
[ -n "${model}" ] || fail "--model is required: a packed model folder, an experiment dir or a Hugging Face id"
[ -n "${audio}" ] || fail "--audio is required: a folder of audio files, a wav.scp or a jsonl"
[ -n "${out}" ] || fail "--out is required: the output folder"
[[ ${nj} =~ ^[1-9][0-9]*$ ]] || fail "--nj must be a positive whole number, got '${nj}'"
[[ ${progress_interval} =~ ^[1-9][0-9]*$ ]] || fail "--progress_interval must be a positive whole number of seconds"
log "$0 ${run_args[*]}"
. ./path.sh
. ./cmd.sh

_device=cpu; _ngpu=0; if "${gpu_inference}"; then _device=cuda; _ngpu=1; fi
_opts=(--model "${model}" --audio "${audio}" --out "${out}" --batch_size "${batch_size}" --dtype "${dtype}")
if [ "${refine}" = true ]; then _opts+=(--refine); elif [ -n "${refine}" ]; then _opts+=(--refine "${refine}"); fi
[ -z "${refine_config}" ] || _opts+=(--refine_config "${refine_config}")
[ -z "${decode_config}" ] || _opts+=(--decode_config "${decode_config}")
_caption=("${python}" -m espnet_slam_aac.bin.caption_corpus)

_start=$(date +%s)
# shellcheck disable=SC2086
"${_caption[@]}" --check "${_opts[@]}" ${caption_args} || fail "nothing was captioned (see the error above)"
mkdir -p "${out}/logs"
log "captioning ${audio} in ${nj} jobs -> ${out} (logs: ${out}/logs/caption.*.log)"
# shellcheck disable=SC2086
# each job: the model's process and its loader workers (slurm: --cpus-per-task)
${decode_cmd} --gpu "${_ngpu}" --num_threads "$((num_workers + 1))" JOB=1:"${nj}" "${out}/logs/caption.JOB.log" \
    "${_caption[@]}" "${_opts[@]}" --num_workers "${num_workers}" --device "${_device}" ${caption_args} \
    --job JOB --nj "${nj}" &
_runner=$!
trap 'kill -TERM "${_runner}" 2>/dev/null || true; wait "${_runner}" 2>/dev/null || true; exit 130' INT TERM
_waited=0
while kill -0 "${_runner}" 2>/dev/null; do
    sleep 1
    _waited=$((_waited + 1))
    if [ "${_waited}" -ge "${progress_interval}" ]; then
        _waited=0
        log "progress: $("${_caption[@]}" --progress --out "${out}" --nj "${nj}" --since "${_start}" 2>&1 || true)"
    fi
done
_status=0
wait "${_runner}" || _status=$?
trap - INT TERM
[ "${_status}" -eq 0 ] || fail "a captioning job stopped (see ${out}/logs/caption.*.log); rerun the same command to go on"
log "merging the jobs' results"
"${_caption[@]}" --merge --out "${out}" --since "${_start}"
