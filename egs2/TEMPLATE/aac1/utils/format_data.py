#!/usr/bin/env python3
"""Stage 3: data dirs -> the dump dir training reads, with every clip at one sample rate (ESPnet's dump/raw).

    format_data.py [--resampler transforms] [--num_workers N] IN_DIR [IN_DIR...] OUT_DIR

ESPnet's ``sound`` loader drops the sample rate, so the ``eat_fbank`` front end must be told the rate of
every clip (``frontend_conf.fs``: EAT's 16 kHz): clips at another rate are resampled here, once, with the
front end's own resampler (``transforms`` = what SLAM-AAC's loader uses), and stored as 24-bit FLAC in
OUT_DIR/audio/ (one file per clip, shared by the clip's utterances). Clips at 16 kHz keep their file.
Channels are kept (the front end picks one). Several IN_DIRs are combined into OUT_DIR (for the
pre-training set); their utterance keys must differ. OUT_DIR is written with espnet_slam_aac.data.datadir (sorted,
atomic), so it holds text_spk1..N when the inputs do (evaluation sets); it may not be one of the IN_DIRs.

New FLAC files are written into a hidden sibling (.OUT_DIR.audio), each through a hidden temporary file, and
moved into OUT_DIR last: a failure (an unreadable clip, a full disk: one ``error:`` line naming the path)
leaves a previous OUT_DIR as it was and no partial file; the complete new files are reused by the next run.
"""

import argparse
import io
import logging
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import List, Optional, Tuple

import soundfile

from espnet_slam_aac.data.datadir import read_data_dir, write_data_dir
from espnet_slam_aac.data.records import Utterance, key_file_name
from espnet_slam_aac.errors import SlamAACError

AUDIO_DIR = "audio"
FS = 16000  # espnet_slam_aac.model.frontend.SAMPLE_RATE (not imported here: it pulls in torch)


def resample_clip(job: Tuple[str, str, str]) -> int:
    """Resample one clip to 16 kHz and write it as FLAC; returns its number of samples."""
    import torch

    from espnet_slam_aac.data.audio import SAMPLE_RATE, load_audio
    from espnet_slam_aac.data.resample import resample

    assert SAMPLE_RATE == FS
    source, target, resampler = job
    torch.set_num_threads(1)
    wave, rate = load_audio(source)  # (samples, channels)
    out = resample(torch.from_numpy(wave.T.copy()), rate, resampler).T.contiguous().numpy()
    flac = io.BytesIO()  # encoded in memory: a write error is then the OS's, with its errno
    soundfile.write(flac, out, FS, subtype="PCM_24", format="FLAC")
    tmp = Path(target).with_name(f".{Path(target).name}.tmp")  # hidden: keys never start with "."
    try:
        with open(tmp, "wb") as f:
            f.write(flac.getbuffer())
        tmp.replace(target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror, target) from None
    return out.shape[0]


def move_all(names: List[str], src: Path, dst: Path) -> None:
    for name in names:
        (src / name).replace(dst / name)


def format_dirs(
    in_dirs: List[Path], out_dir: Path, resampler: str = "transforms", num_workers: int = 4
) -> Tuple[int, int]:
    """Returns (utterances written, clips resampled)."""
    if any(d.resolve() == out_dir.resolve() for d in in_dirs):
        raise SlamAACError(f"{out_dir} is also an input: write the formatted dir elsewhere (e.g. dump/raw/<set>)")
    utterances = [u for d in in_dirs for u in read_data_dir(d)]
    references = any((d / "text_spk1").is_file() for d in in_dirs)
    rates = {}
    for utt in utterances:
        if utt.source not in rates:
            try:
                rates[utt.source] = soundfile.info(utt.source).samplerate
            except (RuntimeError, soundfile.LibsndfileError) as e:
                raise SlamAACError(f"utterance {utt.key!r}: cannot read {utt.source}: {e}") from e
    audio_dir = (out_dir.parent / f".{out_dir.name}.{AUDIO_DIR}").resolve()  # new files; moved into OUT_DIR last
    final_audio_dir = out_dir.resolve() / AUDIO_DIR
    targets = {}  # source -> new path, for clips to resample
    for utt in utterances:
        if rates[utt.source] != FS and utt.source not in targets:
            targets[utt.source] = key_file_name(utt.key, ".flac")
    samples = {}
    previous = []  # a previous run's complete files in OUT_DIR: reused, and moved with the new ones
    if targets:
        audio_dir.mkdir(parents=True, exist_ok=True)
        if final_audio_dir.is_dir():
            previous = sorted(p.name for p in final_audio_dir.glob("*.flac") if not (audio_dir / p.name).exists())
        have = {name: audio_dir / name for name in targets.values() if (audio_dir / name).is_file()}
        have.update({name: final_audio_dir / name for name in previous})
        jobs = [(src, str(audio_dir / name), resampler) for src, name in targets.items() if name not in have]
        with ProcessPoolExecutor(max(1, num_workers)) as pool:
            for (src, _, _), n in zip(jobs, pool.map(resample_clip, jobs, chunksize=8)):
                samples[src] = n
        for src, name in targets.items():
            if src not in samples:
                samples[src] = soundfile.info(str(have[name])).frames
    out = []
    for utt in utterances:
        if utt.source in targets:
            n = samples[utt.source]
            utt = Utterance(utt.key, str(final_audio_dir / targets[utt.source]), utt.texts, n, n / FS)
        out.append(utt)
    move_all(previous, final_audio_dir, audio_dir)  # out of the old OUT_DIR, which the write below replaces
    try:
        write_data_dir(out, out_dir, references=references)
    except BaseException:
        move_all(previous, audio_dir, final_audio_dir)  # the old OUT_DIR is back: so are its files
        raise
    if targets:
        audio_dir.replace(final_audio_dir)
    return len(out), len(targets)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="format_data.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dirs", type=Path, nargs="+", help="IN_DIR [IN_DIR...] OUT_DIR")
    parser.add_argument("--resampler", choices=["transforms", "functional"], default="transforms")
    parser.add_argument("--num_workers", type=int, default=4)
    args = parser.parse_args(argv)
    if len(args.dirs) < 2:
        parser.error("give at least one IN_DIR and the OUT_DIR")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        n, resampled = format_dirs(args.dirs[:-1], args.dirs[-1], args.resampler, args.num_workers)
    except SlamAACError as e:
        print(f"format_data.py: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"format_data.py: error: {e.filename or args.dirs[-1]}: {e.strerror or e}", file=sys.stderr)
        return 1
    print(f"{args.dirs[-1]}: {n} utterances, {resampled} clips resampled to {FS} Hz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
