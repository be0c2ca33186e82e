"""The command-line options every captioning command shares (``decode``, ``caption``): the model, and the
decoding options of ``DecodingOptions`` as flags over a decode YAML."""

import argparse
import dataclasses
from pathlib import Path
from typing import List

from espnet2.utils.types import str2bool

from espnet_slam_aac.clap.refine import RefineConfig
from espnet_slam_aac.errors import ConfigError
from espnet_slam_aac.inference.decoding import DecodingOptions
from espnet_slam_aac.inference.speech2caption import Speech2Caption

REFINE_BEAMS = "2..8"  # the candidate set of CLAP-Refine (SLAM-AAC's), unless --beams says otherwise
DECODING_HELP = {
    "beam_sizes": "beam sizes whose top hypotheses are the candidates: 4, 2..8 or 2,4,8",
    "nbest": "hypotheses kept per beam size",
    "text_beam_size": "beam size whose top-1 is the 1-best text",
    "max_new_tokens": "longest caption, in tokens",
    "min_new_tokens": "shortest caption, in tokens (EOS forbidden before)",
    "length_penalty": "finished score = sum log p / length ** length_penalty",
    "repetition_penalty": "transformers' repetition penalty over the generated tokens",
    "early_stopping": "true, false (transformers' heuristic) or never",
    "schedule": "combined (all beam sizes in one search) or sequential (less memory)",
    "stop_rule": "transformers (today's generate) or slam_aac (transformers 4.35.2's, as SLAM-AAC decoded)",
}


def _early_stopping(value: str):
    table = {"true": True, "false": False, "never": "never"}
    if value.lower() not in table:
        raise argparse.ArgumentTypeError(f"expected true, false or never, got {value!r}")
    return table[value.lower()]


def add_model_arguments(parser: argparse.ArgumentParser, device: str, dtype: str) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", help="packed model folder, experiment dir, or Hugging Face Hub id")
    group.add_argument("--train_config", help="the model's config.yaml (instead of --model)")
    group.add_argument("--model_file", help="the model's weights (.safetensors or ESPnet .pth)")
    group.add_argument("--device", default=device, help=f"cpu, cuda, cuda:N or auto [{device}]")
    group.add_argument("--dtype", default=dtype, help=f"float32, bfloat16, float16 or auto (bf16 on GPU) [{dtype}]")
    group.add_argument(
        "--batch_size", type=int, default=None, help="clips per forward pass [what the GPU's free memory holds; CPU: 8]"
    )
    group.add_argument(
        "--merge_lora",
        type=str2bool,
        default=True,
        help="fold LoRA into the frozen weights for inference (same outputs to the dtype's rounding, faster) [true]",
    )
    group.add_argument("--decode_config", help="decode YAML (conf/decode.yaml); the flags below override it")
    group = parser.add_argument_group("decoding options (decode YAML keys; defaults in brackets)")
    defaults = DecodingOptions()
    types = {f.name: type(getattr(defaults, f.name)) for f in dataclasses.fields(DecodingOptions)}
    types.update(beam_sizes=str, text_beam_size=int, early_stopping=_early_stopping)
    for name, help_ in DECODING_HELP.items():
        default = getattr(defaults, name)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        shown = "4 if decoded, else the first" if name == "text_beam_size" else shown
        flags = [f"--{name}", "--beams"] if name == "beam_sizes" else [f"--{name}"]
        group.add_argument(*flags, dest=name, type=types[name], default=None, help=f"{help_} [{shown}]")


def add_refine_arguments(parser: argparse.ArgumentParser) -> None:
    """clap-refine's inputs, output and CLAP-Refine settings (``RefineConfig``, over a refine YAML), shared with
    refine-tune."""
    parser.add_argument("--candidates", required=True, help="candidates.jsonl of the decoded set")
    parser.add_argument("--data_dir", required=True, help="data dir whose wav.scp holds the clips' audio")
    parser.add_argument("--out_dir", required=True, help="where text, scores.jsonl and refine.yaml go")
    parser.add_argument("--config", help="refine YAML (e.g. conf/refine.yaml); flags override its keys")
    group = parser.add_argument_group("settings (refine YAML keys; defaults in brackets)")
    defaults = RefineConfig()
    helps = {
        "clap": "CLAP: ASE folder or best_model.pt, LAION .pt, ClapModel folder, or hub id",
        "clap_config": "the ASE's clap_config.yaml, when not beside best_model.pt",
        "tokenizer": "tokenizer folder or hub id [files beside the checkpoint, else roberta-base]",
        "lm_weight": "weight of the mean token log-probability added to the similarity",
        "device": "torch device",
        "batch_size": "clips per audio-encoder call",
        "text_batch_size": "captions per text-encoder call",
        "clips_per_step": "clips read and embedded together",
        "num_workers": "threads reading audio",
        "max_seconds": "seconds of audio used from the start of each clip",
        "whole_clip": "average embeddings over consecutive max_seconds windows covering the whole clip",
        "channel": "channel of multi-channel audio: first | mean",
        "short_clip": "clips under 0.1 s: error | silence (embed 10 s of silence, as the reference does)",
        "max_text_tokens": "caption tokens kept [30 for SLAM-AAC's CLAP, 77 for LAION]",
    }
    types = {
        "whole_clip": str2bool,
        "lm_weight": float,
        "max_seconds": float,
        "batch_size": int,
        "text_batch_size": int,
        "clips_per_step": int,
        "num_workers": int,
        "max_text_tokens": int,
    }
    for name, help_ in helps.items():
        default = getattr(defaults, name)
        shown = f" [{default}]" if default is not None else ""
        group.add_argument(f"--{name}", type=types.get(name, str), default=None, help=help_ + shown)


def model_inputs(args: argparse.Namespace) -> List[Path]:
    """The files the model options name (a model folder: every file in it), which no output may replace."""
    named = [args.train_config, args.model_file, args.decode_config, getattr(args, "refine_config", None)]
    files = [Path(p) for p in named if p]
    if args.model and Path(args.model).is_dir():
        files += [p for p in Path(args.model).iterdir() if p.is_file()]
    return files


def build_speech2caption(args: argparse.Namespace, **extra):
    decoding = {name: getattr(args, name) for name in DECODING_HELP}
    common = dict(
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        merge_lora=getattr(args, "merge_lora", True),
        decode_config=args.decode_config,
        **decoding,
        **extra,
    )
    if args.model and args.train_config:
        raise ConfigError("give either --model or --train_config (with --model_file), not both")
    if args.model:
        return Speech2Caption.from_pretrained(args.model, model_file=args.model_file, **common)
    if not args.train_config:
        raise ConfigError("no model: pass --model DIR_OR_HUB_ID, or --train_config and --model_file")
    return Speech2Caption(args.train_config, args.model_file, **common)
