"""CLAP-Refine: choose each clip's caption among its n-best candidates by CLAP audio-text similarity.

Reads CANDIDATES (candidates.jsonl as the decode sub-command writes it: one line per clip, {"key", "candidates":
[{"text", "beam_size", "logprob", "length"}, ...]}) and DATA_DIR/wav.scp (the clips' audio), embeds every clip and
candidate with a CLAP, and writes to OUT_DIR, sorted by key:

  text           key caption: the candidate with the highest score
  scores.jsonl   per clip: key, best (index of the chosen candidate), text, and every candidate with its
                 similarity (cosine), lm_score (logprob / length: mean log-probability per token) and
                 combined (= similarity + lm_weight * lm_score)
  refine.yaml    the settings used

The reference rule (SLAM-AAC) is lm_weight 0: the CLAP similarity alone. Ties go to the first candidate
in candidates.jsonl (the smallest beam size). CLAPs: SLAM-AAC's own (a folder with best_model.pt and
clap_config.yaml), an original LAION-CLAP .pt, a transformers ClapModel folder, or a hub id.
Settings come from --config (conf/refine.yaml), then the flags below.
"""

import argparse
from typing import List, Optional

from espnet2.utils.types import str2bool

from espnet_slam_aac.clap import refine
from espnet_slam_aac.clap.refine import RefineConfig
from espnet_slam_aac.utils import runner


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    runner.add_arguments(parser)
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    runner.run(run, get_parser().parse_args(argv))


def run(args: argparse.Namespace) -> None:
    not_settings = ("candidates", "data_dir", "out_dir", "config", "log_level", "quiet")
    overrides = {k: v for k, v in vars(args).items() if k not in not_settings}
    config = RefineConfig.from_yaml(args.config, **overrides)
    records = refine.run(config, args.candidates, args.data_dir, args.out_dir, inputs=[args.config])
    changed = sum(r["best"] != 0 for r in records)
    print(f"{args.out_dir}: {len(records)} clips refined; {changed} chose another candidate than the first")


if __name__ == "__main__":
    main()
