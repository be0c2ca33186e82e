#!/usr/bin/env bash
# SLAM-AAC recipe template: every stage of a recipe, once. egs2/<corpus>/aac1/run.sh sets the corpus
# options and calls this script; every option below can also be given to run.sh.
#
# Stages (fixed numbers):
#    1  data preparation      local/data.sh -> data/<set> (Kaldi-style data dirs; see the recipe's db.sh)
#    2  paraphrase            data/<set> -> data/<set>_para for --paraphrase_sets (back-translation or a file)
#    3  format and validate   data/<set> -> dump/raw/<set> (16 kHz), checked; pre-training sets merged
#    4  pre-train statistics  shapes of the pre-training and validation sets (ESPnet collect-stats)
#    5  pre-train             exp/pretrain_<tag> (ESPnet trainer: DDP over --ngpu, --num_nodes, resume)
#    6  fine-tune statistics  shapes of the fine-tuning set
#    7  fine-tune             exp/finetune_<tag>, initialized from stage 5 (or --pretrained_model)
#    8  decode                n-best captions of each test set (beam sizes of --decode_config), in jobs
#    9  CLAP-Refine           the best candidate of each clip by CLAP audio-text similarity
#   10  score                 aac-metrics on all references -> <exp>/RESULTS.md
#   11  pack                  <exp>/packed: config, trainable weights, RESULTS.md, model card
#   12  upload                the packed model to the Hugging Face Hub (--hf_repo)
#
# A stage whose outputs are complete (a .done marker, written last) is skipped, so rerunning the same
# command resumes where it stopped; training resumes from its last epoch (ESPnet --resume). To redo a
# stage, remove its output (or its .done). Stage 10's marker (score/.done in each decode dir) records what
# it scored: new captions or other scoring options score again.
# One run at a time writes an output dir: a stage whose dir another live run holds stops with that run's
# PID (utils/lock.sh). Killing the run (Ctrl-C, kill, kill -9 of run.sh or of its process group) stops
# every job it started (utils/run.py). Training prints a progress line (epoch, batch, loss, time left)
# on the console every 30 s (--train_args "--progress_interval N"); the full log is exp/*/train.log.
set -euo pipefail

log() { echo "$(date '+%Y-%m-%dT%H:%M:%S') (${0##*/}:${BASH_LINENO[0]}) $*"; }
fail() { echo "$(date '+%Y-%m-%dT%H:%M:%S') (${0##*/}:${BASH_LINENO[0]}) ERROR: $*" >&2; exit 1; }
min() { local m=$1; for x in "$@"; do [ "$x" -lt "$m" ] && m=$x; done; echo "$m"; }

run_args=("$@")

# General
stage=1                # first stage to run
stop_stage=12          # last stage to run
ngpu=1                 # GPUs per node for training (0: CPU)
num_nodes=1            # nodes for training (needs cmd_backend=slurm in cmd.sh)
nj=8                   # parallel jobs (and workers) for data preparation and statistics
inference_nj=4         # parallel decoding jobs
gpu_inference=true     # decode and refine on GPU (one per job)
python=python          # the python that has espnet-slam-aac
dumpdir=dump           # formatted data
expdir=exp             # experiments

# Stage switches
skip_data_prep=false   # skip stages 1-4
skip_paraphrase=false  # skip stage 2 (pre-training then uses the sets without paraphrases)
skip_pretrain=false    # skip stages 4-5 (fine-tune from --pretrained_model, or from scratch)
skip_train=false       # skip stages 4-7
skip_eval=false        # skip stages 8-10
skip_refine=false      # skip stage 9 (score the plain beam-search captions only)
skip_packing=false     # skip stage 11
skip_upload=false      # skip stage 12 (it is skipped anyway without --hf_repo)

# Data
local_data_opts=""     # options of local/data.sh
pretrain_sets=""       # data sets merged into the pre-training set (after paraphrasing, where done)
pretrain_set=pretrain  # name of the merged pre-training set
train_set=""           # fine-tuning set
valid_set=""           # validation set (checkpoint selection)
test_sets=""           # evaluation sets (all references: text_spk1..N)
paraphrase_sets=""     # sets augmented with paraphrases in stage 2
paraphrase_config=""   # YAML of `espnet-slam-aac paraphrase` (default: MarianMT en->zh->en)
paraphrase_file=""     # jsonl {text, paraphrases}: take paraphrases from it instead of translating
paraphrase_args=""     # more options of `espnet-slam-aac paraphrase`

# Training
pretrain_config=""     # train YAML of stage 5
train_config=""        # train YAML of stage 7
pretrain_args=""       # more options of aac_train in stage 5
train_args=""          # more options of aac_train in stage 7
pretrain_tag=""        # exp/pretrain_<tag> (default: the config's name)
train_tag=""           # exp/finetune_<tag> (default: the config's name)
pretrained_model=""    # model file initializing fine-tuning (default: stage 5's --pretrain_model)
pretrain_model=valid.loss.best.pth   # which stage-5 checkpoint initializes fine-tuning
inference_model=valid.loss.best.pth  # which fine-tuned checkpoint is decoded and packed
speech_fold_length=480000            # folded batching: samples (30 s) ...
text_fold_length=150                 # ... and tokens above which batches shrink

# Decoding, CLAP-Refine, scoring
decode_config=""       # decode YAML (beam sizes, lengths)
decode_args=""         # more options of aac_inference
decode_tag=""          # exp/.../decode_<tag> (default: the config's name and the model's)
refine_config=""       # CLAP-Refine YAML (which CLAP, lm_weight)
clap=""                # the CLAP of stage 9 (overrides refine_config's clap:), e.g. from db.sh
refine_args=""         # more options of clap_refine
refine_tune_set=""     # stage 9 tunes the LM weight on this set (e.g. the validation set), then refines with it
refine_tune_metric=spider_fl  # the metric choosing the LM weight (cider_d, meteor: no SPICE/FENSE needed)
refine_lm_weights="0 0.05 0.1 0.2 0.5 1"  # LM weights w tried: CLAP similarity + w * mean token log-probability
score_args=""          # more options of aac_score
score_untrained=false  # also decode and score the model before training (random projector, LoRA at zero)
download_model=""      # decode a packed model (folder or Hugging Face id) instead of training one

# Packing and upload
pack_args=""           # more options of `espnet-slam-aac pack`
hf_repo=""             # Hugging Face repository to upload to (e.g. me/slam-aac-clotho)

help_message=$(sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//')"

Options (default):
$(sed -n '/^# General/,/^hf_repo=/p' "$0" | grep -E '^[a-z_]+=' \
    | sed -E 's/^([a-z_]+)=("[^"]*"|[^ ]*) *(# *)?(.*)/--\1 \2\t\4/' | awk -F'\t' '{printf "  %-36s %s\n", $1, $2}')"

log "$0 ${run_args[*]}"
. utils/parse_options.sh
[ $# -eq 0 ] || fail "unexpected argument(s): $* (options are --name value)"
# whole-number options (name:least[:greatest]); a bad value would otherwise break a test in every stage silently
for _spec in stage:1:12 stop_stage:1:12 ngpu:0 num_nodes:1 nj:1 inference_nj:1 speech_fold_length:1 \
    text_fold_length:1; do
    IFS=: read -r _name _min _max <<< "${_spec}"
    _range="of at least ${_min}"; [ -z "${_max}" ] || _range="from ${_min} to ${_max}"
    [[ ${!_name} =~ ^[0-9]+$ ]] && [ "${!_name}" -ge "${_min}" ] && [ "${!_name}" -le "${_max:-${!_name}}" ] \
        || fail "--${_name} must be a whole number ${_range}, got '${!_name}'"
done
[ "${stop_stage}" -ge "${stage}" ] || fail "--stop_stage ${stop_stage} is before --stage ${stage}: no stage would run"
. ./path.sh
. ./cmd.sh
. utils/lock.sh

[ -n "${train_set}" ] || [ -n "${download_model}" ] || fail "--train_set is required"
[ -n "${valid_set}" ] || [ -n "${download_model}" ] || fail "--valid_set is required"
[ -n "${test_sets}" ] || "${skip_eval}" || fail "--test_sets is required"
if "${skip_train}" || [ -n "${download_model}" ]; then skip_pretrain=true; fi
if [ -n "${download_model}" ]; then skip_train=true; fi
[ -n "${pretrain_sets}" ] || skip_pretrain=true
[ -n "${paraphrase_sets}" ] || skip_paraphrase=true
_inference_ngpu=0; if "${gpu_inference}"; then _inference_ngpu=1; fi
_device=cpu; if "${gpu_inference}"; then _device=cuda; fi

# The data dir a pre-training set is read from: <set>_para where stage 2 paraphrased it (paraphrases are
# for pre-training, as in SLAM-AAC; fine-tuning and evaluation read the sets as they are).
pretrain_source() {
    local s
    for s in ${paraphrase_sets}; do
        if [ "$s" = "$1" ] && ! "${skip_paraphrase}"; then echo "data/$1_para"; return; fi
    done
    echo "data/$1"
}
stem() { local b; b=$(basename "$1"); echo "${b%.*}"; }

pretrain_exp=${expdir}/pretrain_${pretrain_tag:-$(stem "${pretrain_config:-none}")}
train_exp=${expdir}/finetune_${train_tag:-$(stem "${train_config:-none}")}
if [ -n "${download_model}" ]; then
    # named after its last two path parts: org_name for a Hub id, parent_folder for a local folder
    train_exp=${expdir}/download_$(echo "${download_model%/}" | rev | cut -d/ -f1-2 | rev | tr '/' '_')
fi

# ----------------------------------------------------------------------------------------------- stages
if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ] && ! "${skip_data_prep}"; then
    log "Stage 1: data preparation (local/data.sh ${local_data_opts})"
    # shellcheck disable=SC2086
    local/data.sh ${local_data_opts}
fi

if [ "${stage}" -le 2 ] && [ "${stop_stage}" -ge 2 ] && ! "${skip_data_prep}" && ! "${skip_paraphrase}"; then
    for set in ${paraphrase_sets}; do
        out=data/${set}_para
        if [ -f "${out}/.done" ]; then log "Stage 2: ${out} is complete: skipped"; continue; fi
        hold "${out}"
        log "Stage 2: paraphrases of data/${set} -> ${out}"
        _opts=(--cache data/local/paraphrase_cache.jsonl)
        [ -z "${paraphrase_config}" ] || _opts+=(--config "${paraphrase_config}")
        [ -z "${paraphrase_file}" ] || _opts+=(--paraphrases "${paraphrase_file}")
        _cmd=${train_cmd}; _gpu=0
        if [ -z "${paraphrase_file}" ] && "${gpu_inference}"; then _cmd=${cuda_cmd}; _gpu=1; fi
        # shellcheck disable=SC2086
        ${_cmd} --gpu "${_gpu}" "${expdir}/logs/paraphrase.${set}.log" \
            ${python} -m espnet_slam_aac.bin.paraphrase "data/${set}" "${out}" "${_opts[@]}" ${paraphrase_args} \
            || fail "paraphrasing failed; see ${expdir}/logs/paraphrase.${set}.log"
        touch "${out}/.done"
        release "${out}"
    done
fi

if [ "${stage}" -le 3 ] && [ "${stop_stage}" -ge 3 ] && ! "${skip_data_prep}"; then
    _sources=""
    for set in ${valid_set} ${test_sets}; do _sources+=" data/${set}"; done
    "${skip_train}" || _sources+=" data/${train_set}"
    if ! "${skip_pretrain}"; then
        for set in ${pretrain_sets}; do _sources+=" $(pretrain_source "${set}")"; done
    fi
    for src in $(echo ${_sources} | tr ' ' '\n' | sort -u); do
        out=${dumpdir}/raw/$(basename "${src}")
        if [ -f "${out}/.done" ]; then log "Stage 3: ${out} is complete: skipped"; continue; fi
        hold "${out}"
        log "Stage 3: ${src} -> ${out} (audio at 16 kHz), checked"
        ${train_cmd} --num_threads "${nj}" "${expdir}/logs/format.$(basename "${src}").log" \
            ${python} utils/format_data.py --num_workers "${nj}" "${src}" "${out}" \
            || fail "formatting failed; see ${expdir}/logs/format.$(basename "${src}").log"
        ${python} -m espnet_slam_aac.bin.validate_data_dir "${out}" --num_workers "${nj}"
        touch "${out}/.done"
        release "${out}"
    done
    if ! "${skip_pretrain}"; then
        out=${dumpdir}/raw/${pretrain_set}
        if [ -f "${out}/.done" ]; then
            log "Stage 3: ${out} is complete: skipped"
        else
            hold "${out}"
            _members=()
            for set in ${pretrain_sets}; do _members+=("${dumpdir}/raw/$(basename "$(pretrain_source "${set}")")"); done
            log "Stage 3: ${_members[*]} -> ${out}"
            ${python} utils/format_data.py "${_members[@]}" "${out}"
            touch "${out}/.done"
            release "${out}"
        fi
    fi
fi

# collect_stats TRAIN_SET VALID_SET CONFIG OUT_DIR: ESPnet collect-stats in jobs, then aggregated.
collect_stats() {
    local _train=$1 _valid=$2 _config=$3 _out=$4
    if [ -f "${_out}/.done" ]; then log "${_out} is complete: skipped"; return; fi
    [ -n "${_config}" ] || fail "no training config for ${_out}"
    hold "${_out}"
    local _logdir=${_out}/logdir _tr=${dumpdir}/raw/${_train} _va=${dumpdir}/raw/${_valid}
    local _nj
    _nj=$(min "${nj}" "$(wc -l < "${_tr}/wav.scp")" "$(wc -l < "${_va}/wav.scp")")
    rm -rf "${_logdir}"
    ${python} utils/split_keys.py "${_tr}/wav.scp" "${_nj}" "${_logdir}/train"
    ${python} utils/split_keys.py "${_va}/wav.scp" "${_nj}" "${_logdir}/valid"
    log "collect-stats of ${_tr} and ${_va} in ${_nj} jobs: ${_logdir}/stats.*.log"
    ${train_cmd} JOB=1:"${_nj}" "${_logdir}/stats.JOB.log" \
        ${python} -m espnet_slam_aac.bin.aac_train --collect_stats true --ngpu 0 --config "${_config}" \
            --train_data_path_and_name_and_type "${_tr}/wav.scp,speech,sound" \
            --train_data_path_and_name_and_type "${_tr}/text,text,text" \
            --valid_data_path_and_name_and_type "${_va}/wav.scp,speech,sound" \
            --valid_data_path_and_name_and_type "${_va}/text,text,text" \
            --train_shape_file "${_logdir}/train/keys.JOB.scp" --valid_shape_file "${_logdir}/valid/keys.JOB.scp" \
            --output_dir "${_logdir}/stats.JOB" || fail "collect-stats failed; see ${_logdir}/stats.*.log"
    local _inputs=()
    for i in $(seq "${_nj}"); do _inputs+=(--input_dir "${_logdir}/stats.${i}"); done
    ${python} -m espnet2.bin.aggregate_stats_dirs "${_inputs[@]}" --output_dir "${_out}"
    touch "${_out}/.done"
    release "${_out}"
}

# train EXP_DIR CONFIG STATS_DIR TRAIN_SET VALID_SET INIT EXTRA_ARGS: ESPnet training, resumable.
train() {
    local _exp=$1 _config=$2 _stats=$3 _train=$4 _valid=$5 _init=$6 _args=$7
    if [ -f "${_exp}/.done" ]; then log "${_exp} is complete: skipped"; return; fi
    local _tr=${dumpdir}/raw/${_train} _va=${dumpdir}/raw/${_valid}
    hold "${_exp}"
    mkdir -p "${_exp}"
    # The command that made this experiment, to rerun it as it was.
    printf '#!/usr/bin/env bash\n# %s\ncd %q && %q' "$(date)" "${PWD}" "$0" > "${_exp}/run.sh"
    printf ' %q' "${run_args[@]}" >> "${_exp}/run.sh"; echo >> "${_exp}/run.sh"
    chmod +x "${_exp}/run.sh"
    local _dist=(--multiprocessing_distributed true) _cmd_opts=(--gpu "${ngpu}") _launch=()
    if [ "${num_nodes}" -gt 1 ]; then
        # One task per node, each spawning --ngpu workers; ranks from slurm, rendezvous on a shared file.
        _cmd_opts+=(--num_nodes "${num_nodes}")
        _launch=(srun --export=ALL)
        _dist+=(--dist_launcher slurm --dist_init_method "file://$(realpath "${_exp}")/.dist_init_$$")
    fi
    [ "${ngpu}" -gt 0 ] || _dist+=(--dist_backend gloo)
    local _init_opts=()
    [ -z "${_init}" ] || _init_opts=(--init_param "${_init}")
    log "training ${_exp} (log: ${_exp}/train.log; progress below)"
    # shellcheck disable=SC2086
    ${cuda_cmd} "${_cmd_opts[@]}" --tee "progress:" "${_exp}/train.log" "${_launch[@]}" \
        ${python} -m espnet_slam_aac.bin.aac_train --config "${_config}" --ngpu "${ngpu}" "${_dist[@]}" \
            --train_data_path_and_name_and_type "${_tr}/wav.scp,speech,sound" \
            --train_data_path_and_name_and_type "${_tr}/text,text,text" \
            --valid_data_path_and_name_and_type "${_va}/wav.scp,speech,sound" \
            --valid_data_path_and_name_and_type "${_va}/text,text,text" \
            --train_shape_file "${_stats}/train/speech_shape" --train_shape_file "${_stats}/train/text_shape" \
            --valid_shape_file "${_stats}/valid/speech_shape" --valid_shape_file "${_stats}/valid/text_shape" \
            --fold_length "${speech_fold_length}" --fold_length "${text_fold_length}" \
            --resume true "${_init_opts[@]}" --output_dir "${_exp}" ${_args} \
        || fail "training failed; see ${_exp}/train.log"
    touch "${_exp}/.done"
    release "${_exp}"
}

pretrain_stats=${expdir}/stats_${pretrain_set}
train_stats=${expdir}/stats_${train_set}

if [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 4 ] && ! "${skip_pretrain}"; then
    log "Stage 4: pre-training statistics -> ${pretrain_stats}"
    collect_stats "${pretrain_set}" "${valid_set}" "${pretrain_config}" "${pretrain_stats}"
fi

if [ "${stage}" -le 5 ] && [ "${stop_stage}" -ge 5 ] && ! "${skip_pretrain}"; then
    log "Stage 5: pre-train -> ${pretrain_exp}"
    train "${pretrain_exp}" "${pretrain_config}" "${pretrain_stats}" "${pretrain_set}" "${valid_set}" "" \
        "${pretrain_args}"
fi

if [ "${stage}" -le 6 ] && [ "${stop_stage}" -ge 6 ] && ! "${skip_train}"; then
    log "Stage 6: fine-tuning statistics -> ${train_stats}"
    collect_stats "${train_set}" "${valid_set}" "${train_config}" "${train_stats}"
fi

if [ "${stage}" -le 7 ] && [ "${stop_stage}" -ge 7 ] && ! "${skip_train}"; then
    _init=${pretrained_model}
    if [ -z "${_init}" ] && ! "${skip_pretrain}"; then
        _init=${pretrain_exp}/${pretrain_model}
        [ -f "${_init}" ] || fail "${_init} not found: run stage 5, or give --pretrained_model"
    fi
    log "Stage 7: fine-tune -> ${train_exp}${_init:+ (from ${_init})}"
    train "${train_exp}" "${train_config}" "${train_stats}" "${train_set}" "${valid_set}" "${_init}" "${train_args}"
fi

# The models decoded: "model-name options" lines. The trained one (or --download_model's packed model), and
# with --score_untrained the same model before training, as a baseline.
decodes() {
    if [ -n "${download_model}" ]; then
        echo "$(stem "${download_model}") --model ${download_model}"
        return
    fi
    local exp_opts="--train_config ${train_exp}/config.yaml --model_file ${train_exp}"
    echo "$(stem "${inference_model}") ${exp_opts}/${inference_model}"
    if "${score_untrained}"; then
        echo "untrained ${exp_opts}/untrained.pth"
    fi
}
decode_dir() { echo "${train_exp}/decode_${decode_tag:-$(stem "${decode_config:-default}")}_$1/$2"; }
# --refine_tune_set as an evaluation set (text_spk1..N): itself if it is one, else <set>_refs, one utterance
# per clip with the clip's captions as references (made from the dump in stage 8, decoded there, scored in 9).
tuning() { [ -n "${refine_tune_set}" ] && ! "${skip_refine}"; }
tune_set() {
    if [ -f "${dumpdir}/raw/${refine_tune_set}/text_spk1" ]; then echo "${refine_tune_set}"
    else echo "${refine_tune_set}_refs"; fi
}
tuned_weight() { sed -n 's/^lm_weight: //p' "${train_exp}/refine_tune_${refine_tune_set}/lm_weight.yaml"; }

if [ "${stage}" -le 8 ] && [ "${stop_stage}" -ge 8 ] && ! "${skip_eval}"; then
    if "${score_untrained}" && [ ! -f "${train_exp}/untrained.pth" ]; then
        ${python} utils/untrained_model.py "${train_exp}/config.yaml" "${train_exp}/untrained.pth"
    fi
    if tuning && [ ! -f "${dumpdir}/raw/$(tune_set)/wav.scp" ]; then
        [ -f "${dumpdir}/raw/${refine_tune_set}/wav.scp" ] \
            || fail "--refine_tune_set ${refine_tune_set}: no ${dumpdir}/raw/${refine_tune_set} (stage 3 formats" \
                "the validation and test sets)"
        log "Stage 8: ${dumpdir}/raw/${refine_tune_set} -> ${dumpdir}/raw/$(tune_set) (one utterance per clip)"
        ${python} utils/references_view.py "${dumpdir}/raw/${refine_tune_set}" "${dumpdir}/raw/$(tune_set)"
    fi
    mapfile -t _decodes < <(decodes)
    for _decode in "${_decodes[@]}"; do
        name=${_decode%% *} model_opts=${_decode#* }
        _sets=${test_sets}  # and the set CLAP-Refine is tuned on, decoded by the trained model
        if tuning && [ "${name}" != untrained ]; then _sets+=" $(tune_set)"; fi
        for set in ${_sets}; do
            _dir=$(decode_dir "${name}" "${set}")
            if [ -f "${_dir}/.done" ]; then log "Stage 8: ${_dir} is complete: skipped"; continue; fi
            hold "${_dir}"
            _data=${dumpdir}/raw/${set}
            _logdir=${_dir}/logdir
            _nj=$(min "${inference_nj}" "$(wc -l < "${_data}/wav.scp")")
            # Jobs whose output is complete (aac_inference writes `text` last) are not run again, so a rerun
            # decodes only what is missing; a different number of jobs starts over.
            if [ ! -f "${_logdir}/keys.${_nj}.scp" ] || [ -f "${_logdir}/keys.$((_nj + 1)).scp" ]; then
                rm -rf "${_logdir}"
                ${python} utils/split_keys.py "${_data}/wav.scp" "${_nj}" "${_logdir}"
            fi
            log "Stage 8: decoding ${_data} in ${_nj} jobs -> ${_dir} (logs: ${_logdir}/decode.*.log)"
            _opts=()
            [ -z "${decode_config}" ] || _opts+=(--decode_config "${decode_config}")
            # shellcheck disable=SC2086
            ${decode_cmd} --gpu "${_inference_ngpu}" JOB=1:"${_nj}" "${_logdir}/decode.JOB.log" \
                test -f "${_logdir}/output.JOB/text" '||' \
                ${python} -m espnet_slam_aac.bin.aac_inference ${model_opts} "${_opts[@]}" \
                    --wav_scp "${_data}/wav.scp" --key_file "${_logdir}/keys.JOB.scp" \
                    --output_dir "${_logdir}/output.JOB" --device "${_device}" ${decode_args} \
                || fail "decoding failed; see ${_logdir}/decode.*.log"
            _outputs=()
            for i in $(seq "${_nj}"); do _outputs+=("${_logdir}/output.${i}"); done
            ${python} -m espnet_slam_aac.bin.aac_inference --merge "${_outputs[@]}" --output_dir "${_dir}" \
                --key_file "${_data}/wav.scp"
            touch "${_dir}/.done"
            release "${_dir}"
        done
    done
fi

if [ "${stage}" -le 9 ] && [ "${stop_stage}" -ge 9 ] && ! "${skip_eval}" && ! "${skip_refine}"; then
    [ -n "${refine_config}${clap}" ] || fail "stage 9 needs --refine_config or --clap (or --skip_refine true)"
    _opts=()
    [ -z "${refine_config}" ] || _opts+=(--config "${refine_config}")
    [ -z "${clap}" ] || _opts+=(--clap "${clap}")
    if tuning; then
        _tdir=$(decode_dir "$(decodes | head -n 1 | cut -d' ' -f1)" "$(tune_set)")
        _tune=${train_exp}/refine_tune_${refine_tune_set}
        if [ -f "${_tune}/.done" ]; then
            log "Stage 9: ${_tune} is complete: skipped"
        else
            log "Stage 9: LM weight (${refine_lm_weights}) by ${refine_tune_metric} on ${_tdir} -> ${_tune}"
            mkdir -p "${_tune}"
            # shellcheck disable=SC2086
            ${decode_cmd} --gpu "${_inference_ngpu}" "${_tune}/tune.log" \
                ${python} -m espnet_slam_aac.bin.refine_tune --candidates "${_tdir}/candidates.jsonl" \
                    --data_dir "data/${refine_tune_set}" --ref_dir "${dumpdir}/raw/$(tune_set)" \
                    --metric "${refine_tune_metric}" --lm_weights ${refine_lm_weights} --out_dir "${_tune}" \
                    "${_opts[@]}" --device "${_device}" ${refine_args} \
                || fail "tuning the CLAP-Refine LM weight failed; see ${_tune}/tune.log"
            touch "${_tune}/.done"
        fi
        log "Stage 9: LM weight $(tuned_weight), tuned on ${refine_tune_set} (curve: ${_tune}/curve.png)"
    fi
    for set in ${test_sets}; do
        _dir=$(decode_dir "$(decodes | head -n 1 | cut -d' ' -f1)" "${set}")  # the trained model's
        _out=${_dir}/clap_refine
        if [ -f "${_out}/.done" ]; then log "Stage 9: ${_out} is complete: skipped"; continue; fi
        hold "${_dir}"
        log "Stage 9: CLAP-Refine of ${_dir}/candidates.jsonl -> ${_out}"
        # The CLAP reads the original audio (it has its own rate), not the 16 kHz dump.
        # shellcheck disable=SC2086
        ${decode_cmd} --gpu "${_inference_ngpu}" "${_dir}/logdir/refine.log" \
            ${python} -m espnet_slam_aac.bin.clap_refine --candidates "${_dir}/candidates.jsonl" \
                --data_dir "data/${set}" --out_dir "${_out}" "${_opts[@]}" --device "${_device}" ${refine_args} \
                $(if tuning; then echo --lm_weight "$(tuned_weight)"; fi) \
            || fail "CLAP-Refine failed; see ${_dir}/logdir/refine.log"
        touch "${_out}/.done"
        release "${_dir}"
    done
fi

# score_inputs DECODE_DIR REF_DIR COMMAND...: what a decode dir's scores depend on (stage 10's marker): the
# scoring command and the checksums of the captions and references it reads.
score_inputs() {
    local _d=$1 _r=$2 _f
    shift 2
    printf '%s\n' "$*"
    for _f in "${_d}/text" "${_d}"/*/text "${_r}"/text_spk*; do [ ! -f "${_f}" ] || md5sum "${_f}"; done
}

if [ "${stage}" -le 10 ] && [ "${stop_stage}" -ge 10 ] && ! "${skip_eval}"; then
    _opts=()
    [ -n "${download_model}" ] || _opts+=(--model_config "${train_exp}/config.yaml")
    [ -z "${decode_config}" ] || _opts+=(--decode_config "${decode_config}")
    if ! "${skip_refine}"; then
        [ -z "${refine_config}" ] || _opts+=(--refine_config "${refine_config}")
        [ -z "${clap}" ] || _opts+=(--info "clap=${clap}")
        if tuning && [ -f "${train_exp}/refine_tune_${refine_tune_set}/lm_weight.yaml" ]; then
            _opts+=(--info "clap_refine lm_weight=$(tuned_weight) (tuned: refine_tune_${refine_tune_set}/)")
        fi
    fi
    mapfile -t _decodes < <(decodes)
    for _decode in "${_decodes[@]}"; do
        name=${_decode%% *}
        _model=()  # the baseline has its own tables in RESULTS.md; its 1-best joins the set's figure
        [ "${name}" != untrained ] || _model=(--model_name untrained)
        for set in ${test_sets}; do
            _dir=$(decode_dir "${name}" "${set}")
            # shellcheck disable=SC2206
            _score=(${python} -m espnet_slam_aac.bin.aac_score --ref_dir "${dumpdir}/raw/${set}" --decode_dir "${_dir}"
                --set_name "${set}" "${_model[@]}" "${_opts[@]}" ${score_args})
            _inputs=$(score_inputs "${_dir}" "${dumpdir}/raw/${set}" "${_score[@]}")
            if [ -f "${_dir}/score/.done" ] && [ "$(cat "${_dir}/score/.done")" = "${_inputs}" ]; then
                log "Stage 10: ${_dir} is scored: skipped"; continue
            fi
            hold "${_dir}"
            log "Stage 10: scoring ${_dir} (1-best, every beam size, CLAP-Refine) against ${dumpdir}/raw/${set}"
            # shellcheck disable=SC2086
            ${decode_cmd} "${_dir}/logdir/score.log" "${_score[@]}" || fail "scoring failed; see ${_dir}/logdir/score.log"
            printf '%s\n' "${_inputs}" > "${_dir}/score/.done"
            release "${_dir}"
        done
    done
    ${python} -m espnet_slam_aac.bin.aac_score --collect "${train_exp}" --results_md "${train_exp}/RESULTS.md" \
        --title "${train_exp}"
    cat "${train_exp}/RESULTS.md"
fi

if [ "${stage}" -le 11 ] && [ "${stop_stage}" -ge 11 ] && ! "${skip_packing}" && [ -z "${download_model}" ]; then
    log "Stage 11: pack ${train_exp} -> ${train_exp}/packed"
    hold "${train_exp}/packed"
    _opts=(--name "${hf_repo:-$(basename "${train_exp}")}")
    [ ! -f "${train_exp}/RESULTS.md" ] || _opts+=(--results "${train_exp}/RESULTS.md")
    [ ! -d "${train_exp}/images" ] || _opts+=(--images "${train_exp}/images")
    [ -z "${decode_config}" ] || _opts+=(--decode_config "${decode_config}")
    if ! "${skip_refine}"; then
        [ -z "${refine_config}" ] || _opts+=(--refine_config "${refine_config}")
        [ -z "${clap}" ] || _opts+=(--clap "${clap}")
    fi
    # shellcheck disable=SC2086
    ${python} -m espnet_slam_aac.bin.pack --train_config "${train_exp}/config.yaml" \
        --model_file "${train_exp}/${inference_model}" "${_opts[@]}" --out_dir "${train_exp}/packed" ${pack_args}
    release "${train_exp}/packed"
fi

if [ "${stage}" -le 12 ] && [ "${stop_stage}" -ge 12 ] && ! "${skip_upload}" && [ -z "${download_model}" ]; then
    if [ -z "${hf_repo}" ]; then
        log "Stage 12: no --hf_repo: nothing uploaded"
    else
        log "Stage 12: upload ${train_exp}/packed -> https://huggingface.co/${hf_repo}"
        ${python} -m espnet_slam_aac.bin.upload "${train_exp}/packed" --hf_repo "${hf_repo}"
    fi
fi

log "Done (stages ${stage}..${stop_stage})"
