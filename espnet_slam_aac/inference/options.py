"""The command-line options every captioning command shares (``decode``, ``caption``): the model, and the
decoding options of ``DecodingOptions`` as flags over a decode YAML."""

import argparse
import dataclasses
from pathlib import Path
from typing import List

from espnet2.utils.types import str2bool

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
    "step": "eager, static (same shapes every step) or compiled (static + torch.compile/CUDA graphs, GPU)",
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


def add_refine_flags(parser: argparse.ArgumentParser) -> None:
    """``--refine [CLAP]`` and ``--refine_config``: CLAP-Refine for the tools that caption (caption, demo)."""
    parser.add_argument(
        "--refine",
        metavar="CLAP",
        nargs="?",
        const=True,
        help="CLAP-Refine (beams 2..8 unless --beams) with the model's CLAP, or with CLAP",
    )
    parser.add_argument("--refine_config", help="refine YAML (lm_weight, CLAP options), e.g. conf/refine.yaml")


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
