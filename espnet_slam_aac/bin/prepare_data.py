"""Turn a jsonl manifest (key, source, target) into a Kaldi-style data dir.

Input: one JSON object per line with string fields "key" (a Kaldi token: printable ASCII, no spaces,
unique), "source" (audio path; relative paths are relative to --audio_root, default the manifest's
folder) and "target" (the caption). Other fields are ignored; blank lines are skipped. Whitespace runs
in captions (tabs, newlines) become one space, and the count is printed.

Output (sorted by key in LC_ALL=C order): wav.scp (absolute paths), text, utt2spk and spk2utt (each
utterance its own speaker), utt2num_samples (from the audio header, at the file's rate), utt2dur.
Training sets get one utterance per line. Evaluation sets (--eval) get one utterance per clip (lines
grouped by audio path), keyed by the clip's first line; text_spkK holds its K-th caption in manifest
order, and a clip with fewer captions is absent from the higher text_spkK files.

Bad input stops with the file, line and key: malformed JSON, non-UTF-8 bytes, a missing field, a bad or
duplicate key. Missing, unreadable, empty or shorter-than-25-ms audio and empty captions also stop it,
or with --drop_invalid are left out and listed in OUT_DIR/dropped.tsv. The data dir is written to a
hidden folder and renamed into place when complete.
"""

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from espnet_slam_aac.data.manifest import prepare_data_dir
from espnet_slam_aac.data.records import DROPPED_FILE
from espnet_slam_aac.utils import runner
from espnet_slam_aac.utils.fileio import refuse_overwrite


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example: espnet-slam-aac prepare-data clotho_eval.jsonl data/evaluation --eval --expect_refs 5",
    )
    parser.add_argument("manifest", help="jsonl file, one {key, source, target} object per line")
    parser.add_argument("out_dir", help="data dir to write (an existing data dir there is replaced)")
    parser.add_argument(
        "--eval",
        action="store_true",
        help="evaluation set: one utterance per clip (key of its first line), all captions "
        "as text_spk1..N in manifest order",
    )
    parser.add_argument(
        "--expect_refs",
        type=int,
        default=None,
        metavar="N",
        help="with --eval: every clip must have exactly N captions (default: any number; "
        "text_spkK then lists only clips with at least K)",
    )
    parser.add_argument(
        "--drop_invalid",
        action="store_true",
        help="leave out lines whose audio is missing/unreadable/too short or whose caption is "
        "empty, print the count and list them in OUT_DIR/dropped.tsv (default: stop)",
    )
    parser.add_argument(
        "--check_audio",
        action="store_true",
        help="decode every audio file to find corrupt data behind a valid header and digital "
        "silence (reads the whole corpus; default: headers only)",
    )
    parser.add_argument(
        "--audio_root",
        default=None,
        help="folder that relative 'source' paths are relative to (default: the manifest's)",
    )
    parser.add_argument("--num_workers", type=int, default=8, help="threads that read audio headers")
    runner.add_arguments(parser)
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    if args.expect_refs is not None and not args.eval:
        get_parser().error("--expect_refs needs --eval")
    runner.run(run, args)


def run(args: argparse.Namespace) -> None:
    # the data dir is replaced as a whole: the manifest and the audio must not be in it
    audio_root = args.audio_root or Path(args.manifest).parent
    refuse_overwrite([], [args.manifest, audio_root], replaced_dirs=[args.out_dir])
    report = prepare_data_dir(
        args.manifest,
        args.out_dir,
        references=args.eval,
        expect_refs=args.expect_refs,
        drop_invalid=args.drop_invalid,
        decode_audio=args.check_audio,
        audio_root=args.audio_root,
        num_workers=args.num_workers,
    )
    kind = "clips" if args.eval else "utterances"
    listed = f" (listed in {report.out_dir / DROPPED_FILE})" if report.dropped else ""
    print(
        f"{report.out_dir}: {report.num_utterances} {kind} from {report.num_lines} manifest lines, "
        f"{len(report.dropped)} dropped{listed}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
