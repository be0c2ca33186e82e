"""Serve a model's demo page: drop or record a clip, see its caption, every candidate and the spectrogram.

    espnet-slam-aac demo --model me/slam-aac-clotho --refine            # then open http://127.0.0.1:7860
    espnet-slam-aac demo --model exp/finetune_x/packed --host 0.0.0.0 --port 8080 --device cuda

The page shows the caption, the candidate table (beam size, log-probability, with --refine the CLAP similarity
of each candidate; the pick marked), the log-mel fbank the model sees (its first 10.24 s marked) and the time
taken; a packed model's examples/ clips are offered as examples. Audio: any format the caption command reads.
A clip that cannot be captioned is an error message on the page; the server goes on serving. Requests wait in
one queue (--queue_size) and run one at a time. Needs the demo extra: pip install 'espnet-slam-aac[demo]'.
Browsers allow recording from the microphone only on https or localhost pages; uploads work everywhere.

Decoding as in `espnet-slam-aac caption`: the model's decode.yaml (every beam size of it is a candidate);
--refine alone uses the CLAP of the model's refine.yaml and beams 2..8 (unless --beams), --refine CLAP another
CLAP. Nothing is sent anywhere: no analytics, no share link. A packed model carries app.py, which runs this
command as a Hugging Face Space.
"""

import argparse
import logging
from pathlib import Path
from typing import List, Optional

from espnet_slam_aac.errors import ConfigError
from espnet_slam_aac.inference.corpus import AUDIO_SUFFIXES
from espnet_slam_aac.inference.options import REFINE_BEAMS, add_model_arguments, add_refine_flags, build_speech2caption
from espnet_slam_aac.packaging.space import EXAMPLES
from espnet_slam_aac.utils import runner
from espnet_slam_aac.utils.checkpoint import resolve_model_dir

logger = logging.getLogger(__name__)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_refine_flags(parser)
    parser.add_argument("--host", help="address to serve on [127.0.0.1, or $GRADIO_SERVER_NAME]; 0.0.0.0: all")
    parser.add_argument("--port", type=int, help="port [7860, or $GRADIO_SERVER_PORT; the next free one]")
    parser.add_argument("--queue_size", type=int, default=16, help="requests that may wait; more are refused [16]")
    parser.add_argument("--examples", help="folder of example clips [the packed model's examples/]")
    parser.add_argument("--title", help="page title [SLAM-AAC audio captioning]")
    add_model_arguments(parser, device="auto", dtype="auto")
    runner.add_arguments(parser)
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    runner.run(run, get_parser().parse_args(argv))


def run(args: argparse.Namespace) -> None:
    if args.queue_size < 1:
        raise ConfigError(f"--queue_size must be at least 1, got {args.queue_size}")
    if args.examples and not Path(args.examples).is_dir():
        raise ConfigError(f"--examples {args.examples}: no such folder")
    try:
        from espnet_slam_aac.demo import app
    except ImportError as err:
        raise ConfigError(f"the demo needs Gradio ({err}): pip install 'espnet-slam-aac[demo]'") from None
    if args.refine and args.beam_sizes is None and args.decode_config is None:
        args.beam_sizes = REFINE_BEAMS
    s2c = build_speech2caption(args, refine=args.refine, refine_config=args.refine_config)
    if args.examples or args.model:
        folder = Path(args.examples) if args.examples else resolve_model_dir(args.model) / EXAMPLES
        examples = sorted(p for p in folder.glob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    else:
        examples = []
    about = f"Model: `{args.model or args.train_config}`."
    demo = app.build_demo(s2c, examples, title=args.title or app.TITLE, about=about)
    app.serve(demo, args.host, args.port, args.queue_size, examples)


if __name__ == "__main__":
    main()
