#!/usr/bin/env python3
"""Stage 3: data dirs -> the dump dir training reads, with every clip at one sample rate (ESPnet's dump/raw).

    format_data.py [--resampler transforms] [--num_workers N] IN_DIR [IN_DIR...] OUT_DIR

ESPnet's ``sound`` loader drops the sample rate, so the ``eat_fbank`` front end must be told the rate of
every clip (``frontend_conf.fs``: EAT's 16 kHz): clips at another rate are resampled here, once, with the
front end's own resampler (``transforms`` = what SLAM-AAC's loader uses), and stored as 24-bit FLAC in
OUT_DIR/audio/ (one file per clip, shared by the clip's utterances). Clips at 16 kHz keep their file.
Channels are kept (the front end picks one). Several IN_DIRs are combined into OUT_DIR (for the
pre-training set); their utterance keys must differ. OUT_DIR is written with espnet_slam_aac.data.datadir (sorted,
atomic), so it holds text_spk1..N when the inputs do (evaluation sets).
"""

import argparse
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
    tmp = Path(target).with_name(f".{Path(target).name}.tmp")  # hidden: keys never start with "."
    soundfile.write(tmp, out, FS, subtype="PCM_24", format="FLAC")
    tmp.replace(target)
    return out.shape[0]


def format_dirs(
    in_dirs: List[Path], out_dir: Path, resampler: str = "transforms", num_workers: int = 4
) -> Tuple[int, int]:
    """Returns (utterances written, clips resampled)."""
    utterances = [u for d in in_dirs for u in read_data_dir(d)]
    references = any((d / "text_spk1").is_file() for d in in_dirs)
    rates = {}
    for utt in utterances:
        if utt.source not in rates:
            try:
                rates[utt.source] = soundfile.info(utt.source).samplerate
            except (RuntimeError, soundfile.LibsndfileError) as e:
                raise SlamAACError(f"utterance {utt.key!r}: cannot read {utt.source}: {e}") from e
    audio_dir = (out_dir.parent / f".{out_dir.name}.{AUDIO_DIR}").resolve()  # moved into OUT_DIR at the end
    final_audio_dir = out_dir.resolve() / AUDIO_DIR
    targets = {}  # source -> new path, for clips to resample
    for utt in utterances:
        if rates[utt.source] != FS and utt.source not in targets:
            targets[utt.source] = key_file_name(utt.key, ".flac")
    samples = {}
    if targets:
        audio_dir.mkdir(parents=True, exist_ok=True)
        if final_audio_dir.is_dir():  # a previous run's files: reuse the complete ones
            for p in final_audio_dir.glob("*.flac"):
                p.replace(audio_dir / p.name)
        jobs = [
            (src, str(audio_dir / name), resampler) for src, name in targets.items() if not (audio_dir / name).is_file()
        ]
        with ProcessPoolExecutor(max(1, num_workers)) as pool:
            for (src, _, _), n in zip(jobs, pool.map(resample_clip, jobs, chunksize=8)):
                samples[src] = n
        for src, name in targets.items():
            if src not in samples:
                samples[src] = soundfile.info(str(audio_dir / name)).frames
    out = []
    for utt in utterances:
        if utt.source in targets:
            n = samples[utt.source]
            utt = Utterance(utt.key, str(final_audio_dir / targets[utt.source]), utt.texts, n, n / FS)
        out.append(utt)
    write_data_dir(out, out_dir, references=references)
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
    print(f"{args.dirs[-1]}: {n} utterances, {resampled} clips resampled to {FS} Hz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
