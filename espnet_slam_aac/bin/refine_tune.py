"""Tune CLAP-Refine's LM weight on a validation set: the weight whose picks score best by a metric.

    espnet-slam-aac refine-tune --candidates exp/x/decode/valid/candidates.jsonl --data_dir data/valid \
        --ref_dir dump/raw/valid --metric spider_fl --lm_weights 0 0.05 0.1 0.2 0.5 1 \
        --config conf/refine.yaml --out_dir exp/x/refine_tune_valid

CLAP-Refine's score is similarity + w * lm_score (the candidate's mean log-probability per token). The
set's clips and candidates are embedded once; each weight's picks are scored against the references of
--ref_dir (text_spk1..N) by --metric, and the best weight is written to OUT_DIR/lm_weight.yaml (key
`lm_weight`) with the curve (curve.tsv, curve.png), and printed. Apply it with `clap-refine --lm_weight W`.
The CLAP settings are those of clap-refine (--config and its flags; its --lm_weight is what is tuned here).
"""

import argparse
import dataclasses
from pathlib import Path
from typing import List, Optional

from espnet_slam_aac.clap.refine import RefineConfig, add_refine_arguments
from espnet_slam_aac.inference.refine_tune import DEFAULT_WEIGHTS, OUTPUTS, tune_lm_weight
from espnet_slam_aac.scoring import resources as metric_resources
from espnet_slam_aac.scoring.metrics import PER_CLIP, TextNormalization
from espnet_slam_aac.utils import runner
from espnet_slam_aac.utils.fileio import refuse_overwrite


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="espnet-slam-aac refine-tune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_refine_arguments(parser)  # clap-refine's: the CLAP settings, the candidates, the audio and the output dir
    runner.add_arguments(parser)
    for action in parser._actions:  # clap-refine's --lm_weight: the weight this tool chooses
        if action.dest == "lm_weight":
            action.help = argparse.SUPPRESS
    tune = parser.add_argument_group("tuning")
    tune.add_argument("--ref_dir", type=Path, required=True, help="data dir holding the set's text_spk1..N")
    tune.add_argument("--metric", default="spider_fl", choices=PER_CLIP, help="the metric the weight is chosen by")
    tune.add_argument(
        "--lm_weights",
        nargs="+",
        type=float,
        default=list(DEFAULT_WEIGHTS),
        metavar="W",
        help=f"the weights tried (default: {' '.join(f'{w:g}' for w in DEFAULT_WEIGHTS)})",
    )
    tune.add_argument("--cache_dir", type=Path, help="aac-metrics cache root (as `score --cache_dir`)")
    tune.add_argument("--java", help="Java 8+ executable for the metrics (as `score --java`)")
    tune.add_argument(
        "--no_ptb_tokenize", dest="ptb_tokenize", action="store_false", help="as `score --no_ptb_tokenize`"
    )
    tune.add_argument("--metric_device", default="cuda_if_available", help="torch device of the FENSE models")
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    runner.run(run, get_parser().parse_args(argv))


def run(args: argparse.Namespace) -> None:
    settings = [f.name for f in dataclasses.fields(RefineConfig) if f.name != "lm_weight"]  # the weight is tuned
    config = RefineConfig.from_yaml(args.config, **{name: getattr(args, name, None) for name in settings})
    out_dir = Path(args.out_dir)
    inputs = [args.candidates, args.config, *Path(args.ref_dir).glob("text_spk*"), Path(args.data_dir) / "wav.scp"]
    refuse_overwrite([out_dir / name for name in OUTPUTS], inputs)
    curve = tune_lm_weight(
        config,
        Path(args.candidates),
        Path(args.data_dir),
        args.ref_dir,
        out_dir,
        metric_resources.resolve(args.cache_dir, args.java),
        metric=args.metric,
        weights=args.lm_weights,
        normalization=TextNormalization(ptb_tokenize=args.ptb_tokenize),
        metric_device=args.metric_device,
    )
    print(f"{curve.lm_weight:g}")


if __name__ == "__main__":
    main()
