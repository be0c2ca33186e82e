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
import sys
from typing import List, Optional

from espnet_slam_aac.clap import refine
from espnet_slam_aac.clap.refine import RefineConfig, add_refine_arguments
from espnet_slam_aac.utils import runner


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_refine_arguments(parser)
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
    print(
        f"{args.out_dir}: {len(records)} clips refined; {changed} chose another candidate than the first",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
