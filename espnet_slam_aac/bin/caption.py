"""Caption your own audio files.

    espnet-slam-aac caption --model me/slam-aac-clotho clips/*.wav > captions.tsv
    espnet-slam-aac caption --model exp/pack --refine path/to/clap --out captions.tsv recordings/

PATHS are audio files (any format soundfile reads, any sample rate, any channel count), folders (searched
recursively for audio files) or Kaldi wav.scp files (*.scp, "key path" lines). Output: one TSV line per clip,
"path<TAB>caption" (the key instead of the path for wav.scp entries), in the order given, on stdout or --out.
Only the first 10.24 s of a clip is heard by the model (its input length), as in the reference.

Decoding: beam search with beam 4 (or the text_beam_size of the model's decode.yaml). With --refine, the top-1
captions of beams 2..8 (or --beams) are the candidates and a CLAP picks the one closest to the audio
(CLAP-Refine): --refine alone uses the CLAP the packed model names in its refine.yaml; --refine CLAP another one
(SLAM-AAC's own folder with best_model.pt + clap_config.yaml, a LAION-CLAP .pt, a ClapModel folder or a hub id).
--candidates FILE also writes every candidate with its scores (jsonl).

A file that cannot be read, or whose caption comes out empty (a broken model or tokenizer), is reported on stderr
by name, the others are captioned; the exit status is 1 if any clip failed. Only the TSV goes to stdout; logs and
a progress bar go to stderr. A file name with a tab or a newline cannot be a TSV field: such a file is refused
(rename it). --out and --candidates are written whole or not at all, and never over an input.
"""

import argparse
import contextlib
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import IO, List, Optional, Tuple

from tqdm import tqdm

from espnet_slam_aac.data.audio import AUDIO_SUFFIXES
from espnet_slam_aac.data.datadir import read_wav_scp
from espnet_slam_aac.errors import AudioError, SlamAACError
from espnet_slam_aac.inference.batching import iter_batches
from espnet_slam_aac.inference.options import (
    REFINE_BEAMS,
    add_model_arguments,
    add_refine_flags,
    build_speech2caption,
    model_inputs,
)
from espnet_slam_aac.utils import runner
from espnet_slam_aac.utils.fileio import atomic_output, refuse_overwrite


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", metavar="PATH", help="audio files, folders, or wav.scp files")
    parser.add_argument("--out", help="write the TSV here instead of stdout")
    parser.add_argument("--candidates", help="also write every candidate caption with its scores (jsonl)")
    add_refine_flags(parser)
    parser.add_argument("--num_workers", type=int, default=2, help="threads reading audio [2]")
    add_model_arguments(parser, device="auto", dtype="auto")
    runner.add_arguments(parser)
    return parser


def collect(paths: List[str]) -> Tuple[List[Tuple[str, str]], List[str]]:
    """(name, audio path) pairs in the order given, and the problems found (missing paths, empty folders, names
    with a tab or newline)."""
    entries, problems = [], []
    for spec in paths:
        path = Path(spec)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
            if not found:
                problems.append(f"{spec}: no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) in this folder")
            entries += [(str(p), str(p)) for p in found]
        elif path.suffix == ".scp" and path.is_file():
            try:
                entries += read_wav_scp(path)
            except SlamAACError as err:
                problems.append(str(err))
        else:
            entries.append((spec, spec))  # read (or reported missing) like every file
    bad = [name for name, _ in entries if "\t" in name or "\n" in name or "\r" in name]
    problems += [f"{name!r}: a file name with a tab or newline cannot be a TSV field; rename the file" for name in bad]
    return [e for e in entries if e[0] not in bad], problems


def main(argv: Optional[List[str]] = None) -> None:
    runner.run(run, get_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    entries, problems = collect(args.paths)
    inputs = [*args.paths, *(path for _, path in entries), *model_inputs(args), args.refine_config]
    refuse_overwrite([args.out, args.candidates], inputs)
    if args.out and args.candidates and Path(args.out).resolve() == Path(args.candidates).resolve():
        raise SlamAACError(f"--out and --candidates are both {args.out}; give them different paths")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if args.refine and args.beam_sizes is None and args.decode_config is None:
        args.beam_sizes = REFINE_BEAMS
    s2c = build_speech2caption(args, refine=args.refine, refine_config=args.refine_config)
    if s2c.clap is None and args.beam_sizes is None:  # only the beam that gives the caption
        s2c.options = s2c.options.replace(beam_sizes=(s2c.options.text_beam_size,))
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(atomic_output(args.out)) if args.out else sys.stdout
        cands = stack.enter_context(atomic_output(args.candidates)) if args.candidates else None
        failed, empty = caption_all(s2c, entries, args, out, cands)
    failed += len(problems)
    if failed or empty:
        total = len(entries) + len(problems)
        said = [f"{failed} of {total} input(s) failed"] if failed else []
        said += [f"{empty} clip(s) got an empty caption (a broken model or tokenizer?)"] if empty else []
        print(f"{'; '.join(said)}; see the errors above", file=sys.stderr)
        return 1
    return 0


def caption_all(s2c, entries: List[Tuple[str, str]], args: argparse.Namespace, out: IO, cands: Optional[IO]):
    """Write a TSV row (and a candidates record) per clip; returns (unreadable clips, empty captions)."""
    failed = empty = 0
    start = time.perf_counter()
    with tqdm(total=len(entries), unit="clip", disable=args.quiet, file=sys.stderr) as bar:
        for batch, loaded in iter_batches(entries, s2c.batch_size, args.num_workers):
            good = []
            for (name, _), clip in zip(batch, loaded):
                if isinstance(clip, AudioError):
                    failed += 1
                    bar.write(f"error: {clip}", file=sys.stderr)
                else:
                    good.append((name, clip))
            results = s2c.caption([clip for _, clip in good]) if good else []
            for (name, _), result in zip(good, results):
                caption = " ".join(result.caption.split())
                if caption:
                    out.write(f"{name}\t{caption}\n")
                else:
                    empty += 1
                    bar.write(f"error: {name}: the caption is empty", file=sys.stderr)
                if cands is not None:
                    cands.write(json.dumps(candidates_record(name, result), ensure_ascii=False) + "\n")
            out.flush()
            bar.update(len(batch))
    seconds, done = time.perf_counter() - start, len(entries) - failed
    if not args.quiet and done:
        print(f"captioned {done} clip(s) in {seconds:.1f} s: {done / seconds:.2f} clips/s", file=sys.stderr)
    return failed, empty


def candidates_record(name: str, result) -> dict:
    record = {
        "key": name,
        "caption": result.caption,
        "best": result.best,
        "candidates": [dataclasses.asdict(c) for c in result.candidates],
    }
    if result.similarities is not None:
        record["similarities"] = result.similarities
    return record


if __name__ == "__main__":
    main()
