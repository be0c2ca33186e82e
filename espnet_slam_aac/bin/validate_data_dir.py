"""Check a Kaldi-style data dir and say what to fix.

Checks: wav.scp, text, utt2spk and spk2utt exist; every file is UTF-8, one "key value" line per
utterance, keys are Kaldi tokens, unique and in byte order (LC_ALL=C sort); every per-utterance file
(text, utt2spk, utt2num_samples, utt2dur, text_spk1) lists the same utterances as wav.scp; text_spkK
are numbered without gaps and each lists a subset of text_spk(K-1); no empty text; spk2utt matches
utt2spk and utterances sort with their speakers; the audio files exist (and, by default, are readable,
at least one 25 ms frame long and as long as utt2num_samples says). Exits 1 listing every problem.
"""

import argparse
from typing import List, Optional

from espnet_slam_aac.data.check import validate_data_dir
from espnet_slam_aac.utils import runner


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", help="the data dir to check")
    parser.add_argument(
        "--audio",
        choices=["none", "exists", "header", "decode"],
        default="header",
        help="how far to check the audio files: not at all, that they exist, that their "
        "headers are readable and match utt2num_samples (default), or decode them fully",
    )
    parser.add_argument("--num_workers", type=int, default=8, help="threads that read audio files")
    runner.add_arguments(parser)
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    runner.run(run, get_parser().parse_args(argv))


def run(args: argparse.Namespace) -> None:
    summary = validate_data_dir(args.data_dir, audio=args.audio, num_workers=args.num_workers)
    refs = f", text_spk1..{summary.num_reference_files}" if summary.num_reference_files else ""
    print(f"{summary.data_dir}: OK ({summary.num_utterances} utterances{refs})")


if __name__ == "__main__":
    main()
