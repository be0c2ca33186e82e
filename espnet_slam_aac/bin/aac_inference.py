"""n-best decoding of a wav.scp: captions of every beam size, for scoring and CLAP-Refine.

Each clip of the wav.scp (restricted to --key_file, for a recipe's split jobs) is encoded and its prompt
prefilled once; every beam size of the decode config is then searched from that shared prefix. Writes to
OUTPUT_DIR, sorted by key (Kaldi style, "key caption" lines):

  text              the 1-best: top-1 of text_beam_size (beam 4 by default, the reference's plain decode)
  beam<N>/text      top-1 of beam size N, for each N of beam_sizes
  candidates.jsonl  one line per clip: {"key", "candidates": [{"text", "beam_size", "logprob", "length"}]},
                    beam sizes in config order, nbest per beam size best first; logprob is the sum of the
                    token log-probabilities, length the tokens it covers (EOS included)

  decode.yaml       the decoding options used

Files are written aside, then renamed; `text` comes last, so its presence says the job is complete. Split jobs
(--key_file) merge with `aac_inference --merge JOB_DIR... --output_dir OUT [--key_file ALL_KEYS]`, which checks
that the jobs used the same options, that no key repeats and (with --key_file) that every key is there.

The model: --model (a packed folder, an experiment dir or a Hugging Face Hub id), or --train_config with
--model_file. Decoding options come from --decode_config (conf/decode.yaml), then the flags below.
"""

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional

from espnet_slam_aac.errors import ConfigError
from espnet_slam_aac.inference.batching import data_dir_files, decode_entries, select_entries
from espnet_slam_aac.inference.nbest_files import empty_captions, merge, output_paths, write_outputs
from espnet_slam_aac.inference.options import add_model_arguments, build_speech2caption, model_inputs
from espnet_slam_aac.utils import runner
from espnet_slam_aac.utils.fileio import refuse_overwrite

logger = logging.getLogger("aac_inference")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", required=True, help="where text, beam<N>/text and candidates.jsonl go")
    parser.add_argument("--wav_scp", help="the clips to decode ('key path' lines), e.g. data/test/wav.scp")
    parser.add_argument(
        "--key_file",
        help="decode only these keys (first field of each line); with --merge: "
        "the keys the merged output must hold, each once",
    )
    parser.add_argument("--num_workers", type=int, default=2, help="threads reading audio [2]")
    parser.add_argument("--merge", nargs="+", metavar="JOB_DIR", help="merge these jobs' output dirs instead")
    add_model_arguments(parser, device="cpu", dtype="float32")
    runner.add_arguments(parser)
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    runner.run(run, get_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    out_dir, key_file = Path(args.output_dir), Path(args.key_file) if args.key_file else None
    if args.merge:
        n = merge(args.merge, out_dir, key_file)
        print(f"{out_dir}: {n} clips merged from {len(args.merge)} jobs", file=sys.stderr)
        return 0
    if not args.wav_scp:
        raise ConfigError("pass --wav_scp (the clips to decode), or --merge JOB_DIR... to merge jobs")
    entries = select_entries(Path(args.wav_scp), key_file)
    s2c = build_speech2caption(args)
    inputs = [args.wav_scp, key_file, *data_dir_files(args.wav_scp), *model_inputs(args), *(p for _, p in entries)]
    refuse_overwrite(output_paths(out_dir, s2c.options), inputs)
    logger.info("decoding %d clips with %s", len(entries), s2c.options)
    records = decode_entries(s2c, entries, args.num_workers)
    write_outputs(out_dir, records, s2c.options)
    print(f"{out_dir}: {len(records)} clips decoded (beam sizes {list(s2c.options.beam_sizes)})", file=sys.stderr)
    empty = empty_captions(records, s2c.options)
    if empty:
        listed = ", ".join(empty[:10]) + (", ..." if len(empty) > 10 else "")
        runner.fail(
            f"{len(empty)} of {len(records)} clips got an empty caption ({listed}); their lines in "
            f"{out_dir / 'text'} hold only the key. An empty caption means a broken model or tokenizer "
            "(e.g. a packed folder without its tokenizer files)"
        )
    return 0


if __name__ == "__main__":
    main()
