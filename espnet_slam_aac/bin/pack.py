"""Pack a trained model into a folder that loads by path or Hub id (config, trained weights, model card).

Writes OUT_DIR with config.yaml (frozen sources that are local paths copied into sources/ and pointed at
relative to the folder; Hub ids kept and their revisions recorded), model.safetensors (the trained weights
only: projector + LoRA), decode.yaml / refine.yaml when given, RESULTS.md and images/ when given,
meta.yaml (espnet_model_zoo's index), README.md (the model card) and the demo as a Hugging Face Space
(app.py, requirements.txt, --example clips in examples/; see `espnet-slam-aac demo`). Load it with
`espnet-slam-aac caption --model OUT_DIR`, Speech2Caption.from_pretrained(OUT_DIR), or, once uploaded with
`espnet-slam-aac upload`, by its Hub id. The layout is described in espnet_slam_aac.packaging.pack.

Example (what stage 11 of the recipes runs):
  espnet-slam-aac pack --train_config exp/finetune_x/config.yaml \\
      --model_file exp/finetune_x/valid.loss.best.pth --decode_config conf/decode.yaml \\
      --results exp/finetune_x/RESULTS.md --images exp/finetune_x/images --out_dir exp/finetune_x/packed
"""

import argparse
import sys
from typing import List, Optional

from espnet2.utils.types import str2bool

from espnet_slam_aac.packaging.layout import human
from espnet_slam_aac.packaging.pack import DEFAULT_MAX_SOURCE_BYTES, pack
from espnet_slam_aac.utils import runner
from espnet_slam_aac.utils.fileio import refuse_overwrite


def size(text: str) -> int:
    import humanfriendly

    try:
        return humanfriendly.parse_size(text, binary=True)
    except humanfriendly.InvalidSize as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train_config", required=True, help="the experiment's config.yaml")
    parser.add_argument("--model_file", required=True, help="trained weights (.pth or .safetensors)")
    parser.add_argument("--out_dir", required=True, help="folder to write (an earlier pack there is replaced)")
    parser.add_argument("--decode_config", help="decode YAML the results were made with")
    parser.add_argument("--refine_config", help="CLAP-Refine YAML (a local CLAP is copied in)")
    parser.add_argument("--clap", help="the CLAP of CLAP-Refine, overriding the refine YAML's (copied in if local)")
    parser.add_argument("--results", help="RESULTS.md")
    parser.add_argument("--images", help="folder of plots (ESPnet's exp/<dir>/images)")
    parser.add_argument("--option", action="append", default=[], help="another file or folder to include")
    parser.add_argument(
        "--example", action="append", default=[], help="an example clip for the demo page (examples/); repeat"
    )
    parser.add_argument("--name", help="model name for the card, e.g. the Hub id me/slam-aac-clotho")
    parser.add_argument("--datasets", nargs="*", default=[], help="corpora for the card, e.g. clotho audiocaps")
    parser.add_argument("--license", default="other", help="license tag of the card [other: see its notes]")
    parser.add_argument(
        "--max_source_size",
        type=size,
        default=DEFAULT_MAX_SOURCE_BYTES,
        help=f"largest local frozen source copied in [{human(DEFAULT_MAX_SOURCE_BYTES)}]",
    )
    parser.add_argument(
        "--resolve_revisions",
        type=str2bool,
        default=True,
        help="ask the Hub for the revision of each Hub-id source [true]",
    )
    runner.add_arguments(parser)
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    runner.run(run, get_parser().parse_args(argv))


def run(args: argparse.Namespace) -> None:
    inputs = [args.train_config, args.model_file, args.decode_config, args.refine_config, args.clap, args.results]
    refuse_overwrite([], [*inputs, args.images, *args.option, *args.example], replaced_dirs=[args.out_dir])
    report = pack(
        args.train_config,
        args.model_file,
        args.out_dir,
        decode_config=args.decode_config,
        refine_config=args.refine_config,
        clap=args.clap,
        results=args.results,
        images=args.images,
        extra_files=args.option,
        name=args.name,
        datasets=args.datasets,
        license=args.license,
        max_source_bytes=args.max_source_size,
        resolve_revisions=args.resolve_revisions,
        examples=args.example,
    )
    for ref in report.references:
        where = f"copied ({human(ref.bytes)})" if ref.bytes else (ref.revision or "revision not resolved")
        print(f"  {ref.key}: {ref.value} [{where}]", file=sys.stderr)
    print(f"{report.out_dir}: packed ({report.trainable_parameters:,} trained parameters)", file=sys.stderr)


if __name__ == "__main__":
    main()
