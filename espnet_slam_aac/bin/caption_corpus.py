"""Caption a corpus: a folder of audio files (recursive), a wav.scp or a jsonl, in jobs that resume.

    espnet-slam-aac caption-corpus --model me/slam-aac-clotho --audio /data/unlabelled --out captions/
    espnet-slam-aac caption-corpus ... --job 2 --nj 8      # one job of 8 (egs2/TEMPLATE/caption1/caption.sh)
    espnet-slam-aac caption-corpus --merge --out captions/

Without --job it is one job of one, then the merge. OUT gets captions.jsonl (one record per clip, in input order:
key, path, duration, caption, candidates with beam size, log-probability and, with --refine, CLAP similarity),
captions.tsv (key<TAB>caption), failed.tsv (key<TAB>path<TAB>reason of each clip that could not be captioned:
unreadable, empty, too short, non-finite, or a bad input line) and summary.json. Jobs write
OUT/results/J-of-N.jsonl as they go (flushed per batch): rerun the same command after a crash or a kill and only
what is missing is captioned; the merged output is then the same as that of an uninterrupted run. A rerun with
other settings into the same OUT is refused. Exit status: 0 when every input got a caption, 1 otherwise
(the files are still written when only some clips failed; the summary says how many and why).

Decoding: beam 4 (or the text_beam_size of the model's decode.yaml); --refine as in `espnet-slam-aac caption`.
"""

import argparse
import os
import sys
import time
from pathlib import Path
from typing import List, Optional

from espnet_slam_aac.errors import ConfigError
from espnet_slam_aac.inference import corpus_files
from espnet_slam_aac.utils import runner

LIGHT = ("--merge", "--progress")  # modes that load no model (and import no torch)


def get_parser(light: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--audio", help="a folder of audio files (searched recursively), a wav.scp or a jsonl")
    parser.add_argument("--out", required=True, help="output folder (results, merged captions, failures)")
    parser.add_argument("--job", type=int, help="run only job JOB of --nj (1-based), no merge")
    parser.add_argument("--nj", type=int, default=1, help="number of jobs [1]")
    parser.add_argument("--check", action="store_true", help="check the settings and the input, caption nothing")
    parser.add_argument("--merge", action="store_true", help="only merge the jobs' results")
    parser.add_argument("--progress", action="store_true", help="print the progress of the jobs of --nj on stdout")
    parser.add_argument("--since", type=float, help="start of this run (seconds since the epoch) for clips/s")
    runner.add_arguments(parser)
    if light:
        return parser
    from espnet_slam_aac.inference.options import add_model_arguments

    parser.add_argument("--refine", metavar="CLAP", nargs="?", const=True, help="CLAP-Refine, as in `caption`")
    parser.add_argument("--refine_config", help="refine YAML (lm_weight, CLAP options), e.g. conf/refine.yaml")
    parser.add_argument("--num_workers", type=int, default=2, help="loader processes decoding audio per job [2]")
    parser.add_argument("--window", type=int, help="inputs per window sorted by duration [16 batches]")
    add_model_arguments(parser, device="auto", dtype="auto")
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = get_parser(light=any(a in LIGHT for a in argv)).parse_args(argv)
    runner.run(run, args)


def run(args: argparse.Namespace) -> int:
    out, since = Path(args.out), time.time() if args.since is None else args.since
    if args.progress:
        print(corpus_files.progress_line(corpus_files.read_progress(out, args.nj, since), since, args.nj), flush=True)
        return 0
    if args.merge:
        return merge(out, since)
    if not args.audio:
        raise ConfigError("--audio is required: a folder of audio files, a wav.scp or a jsonl")
    if args.job is not None and not 1 <= args.job <= args.nj:
        raise ConfigError(f"--job {args.job}: jobs are numbered 1 to --nj {args.nj}")
    check(args, out)
    if args.check:
        return 0
    from espnet_slam_aac.inference.corpus import run_job
    from espnet_slam_aac.inference.options import build_speech2caption

    if args.refine and args.beam_sizes is None and args.decode_config is None:
        from espnet_slam_aac.inference.options import REFINE_BEAMS

        args.beam_sizes = REFINE_BEAMS
    s2c = build_speech2caption(args, refine=args.refine, refine_config=args.refine_config)
    if s2c.clap is None and args.beam_sizes is None:  # only the beam that gives the caption
        s2c.options = s2c.options.replace(beam_sizes=(s2c.options.text_beam_size,))
    counts = run_job(s2c, args.audio, out, args.job or 1, args.nj, args.window, args.num_workers)
    if args.job is not None:
        print(f"job {args.job} of {args.nj} finished: {counts['captioned']} captioned, {counts['failed']} failed")
        return 0
    return merge(out, since)


def check(args: argparse.Namespace, out: Path) -> None:
    """The input lists (its first entry is read), the outputs replace no input, and ``out`` holds results of
    these settings only (``setup.json``)."""
    from espnet_slam_aac.inference.corpus import list_inputs
    from espnet_slam_aac.inference.options import DECODING_HELP, model_inputs
    from espnet_slam_aac.utils.fileio import refuse_overwrite

    if next(list_inputs(args.audio), None) is None:
        raise ConfigError(f"{args.audio}: nothing to caption (no audio files, no entries)")
    outputs = [out / name for name in (corpus_files.CAPTIONS, corpus_files.CAPTIONS_TSV, corpus_files.FAILED)]
    refuse_overwrite(outputs, [args.audio, *model_inputs(args)])

    def where(path):
        return os.path.abspath(path) if isinstance(path, str) and os.path.exists(path) else path

    setup = {name: where(getattr(args, name)) for name in ("audio", "model", "model_file", "train_config")}
    setup.update({name: where(getattr(args, name)) for name in ("decode_config", "refine", "refine_config")})
    setup["dtype"] = args.dtype
    setup["decoding"] = {name: getattr(args, name) for name in DECODING_HELP if getattr(args, name) is not None}
    corpus_files.check_setup(out, setup)


def merge(out: Path, since: float) -> int:
    from espnet_slam_aac.inference.corpus import list_inputs

    summary = corpus_files.merge(out, list_inputs(corpus_files.read_setup(out)["audio"]), since)
    said = f"captioned {summary['captioned']} of {summary['inputs']} inputs"
    if summary["failed"]:
        kinds = ", ".join(f"{kind} {n}" for kind, n in summary["failed_by_kind"].items())
        said += f"; {summary['failed']} failed ({kinds}): see {out / corpus_files.FAILED}"
    if "this_run" in summary:
        run_ = summary["this_run"]
        said += f"; this run: {run_['clips']} clips in {run_['seconds']:.0f} s, {run_['clips_per_s']:.2f} clips/s"
    print(said, file=sys.stderr)
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    main()
