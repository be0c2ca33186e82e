"""Extract EAT features from audio, as EAT's feature_extract.py does, without fairseq.

Each clip is read (any rate, any channel count), resampled to 16 kHz, turned into EAT's normalized fbank,
padded or cut to --target_length frames (1024 = 10.24 s; "none" keeps the whole clip) and encoded. Features
are the last block's tokens, CLS first, as float32:

  all        (1 + N, D): CLS then the N = frames/16 * 8 patch tokens (513 x 768 for EAT-base, 1024 frames)
  frame      (N, D): the patch tokens, time-major (token t * 8 + f: 16 frames x 16 mel bins each)
  utterance  (D,): the CLS token

One file: --wav IN --out OUT.npy. A whole list: --wav_scp wav.scp (lines "KEY PATH") --out PREFIX writes
PREFIX.ark and PREFIX.scp (Kaldi format, read them with kaldiio.load_scp), in wav.scp order. A file that cannot
be read stops the run, named by its key; with --skip_invalid it is left out, and the skipped keys are counted
and listed (KEY<TAB>reason) in PREFIX.skipped.tsv. Outputs are written whole or not at all, never over an input.

The checkpoint is a fairseq .pt (pre-trained or fine-tuned), a Hugging Face folder (config.json +
model.safetensors) or a Hub id such as worstchan/EAT-base_epoch30_finetune_AS2M. EAT's readme recommends
fine-tuned checkpoints for features. The default resampler (functional) is EAT's own; use --resampler
transforms to get what SLAM-AAC's data loader feeds EAT.
"""

import argparse
import logging
from pathlib import Path
from typing import List, Optional, Tuple

import kaldiio
import numpy as np
import torch
from tqdm import tqdm

from espnet_slam_aac.data import audio
from espnet_slam_aac.data import resample as resampling
from espnet_slam_aac.data.datadir import read_wav_scp
from espnet_slam_aac.errors import AudioError, DataError
from espnet_slam_aac.model import frontend
from espnet_slam_aac.model.eat_checkpoint import load_eat_model
from espnet_slam_aac.utils import runner
from espnet_slam_aac.utils.config import resolve_device
from espnet_slam_aac.utils.fileio import atomic_output, refuse_overwrite, write_atomically

logger = logging.getLogger("espnet_slam_aac.eat_features")
GRANULARITIES = ("all", "frame", "utterance")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class FbankDataset(torch.utils.data.Dataset):
    """EAT fbank of each (key, path); a bad file comes back as its ``AudioError`` to be raised in order."""

    def __init__(self, entries: List[Tuple[str, str]], **fbank_options):
        self.entries, self.fbank_options = entries, fbank_options

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int):
        key, path = self.entries[index]
        try:
            wave, rate = audio.load_audio(path)
            return key, frontend.eat_fbank(wave, rate, **self.fbank_options)
        except AudioError as e:
            return key, e if key == path else AudioError(f"key {key!r}: {e}")


def collate(items):
    """A padded batch of the readable clips, and the ``(key, AudioError)`` of the others."""
    good = [(key, fbank) for key, fbank in items if not isinstance(fbank, AudioError)]
    bad = [(key, err) for key, err in items if isinstance(err, AudioError)]
    keys = [key for key, _ in good]
    lengths = torch.tensor([fbank.shape[0] for _, fbank in good], dtype=torch.long)
    fbanks = torch.nn.utils.rnn.pad_sequence([fbank for _, fbank in good], batch_first=True) if good else None
    return keys, fbanks, lengths, bad


def _one_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)  # fbank workers must not compete with the encoder for cores


def select(tokens: torch.Tensor, granularity: str) -> np.ndarray:
    """Tokens ``(1 + N, D)`` of one clip -> the requested float32 array."""
    part = {"all": tokens, "frame": tokens[1:], "utterance": tokens[0]}[granularity]
    return part.float().cpu().numpy()


def extract(model, batches, device: torch.device, dtype: torch.dtype, granularity: str, skip_invalid: bool = False):
    """Yield ``(key, features)`` for each clip of ``batches`` (from ``collate``), and ``(key, AudioError)`` for
    an unreadable one when ``skip_invalid`` (else that error is raised)."""
    for keys, fbank, lengths, bad in batches:
        for key, err in bad:
            if not skip_invalid:
                raise err
            yield key, err
        if not keys:
            continue
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            tokens = model(fbank.to(device), lengths.to(device))
        for key, row, n in zip(keys, tokens, model.config.num_tokens(lengths).tolist()):
            yield key, select(row[:n], granularity)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="fairseq .pt, Hugging Face folder or Hub id")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--wav", help="one audio file (any format soundfile reads)")
    source.add_argument("--wav_scp", help="Kaldi wav.scp: one 'KEY PATH' per line")
    parser.add_argument("--out", required=True, help="with --wav: OUT.npy; with --wav_scp: prefix of .ark/.scp")
    parser.add_argument("--granularity", choices=GRANULARITIES, default="all", help="see above (default: all)")
    parser.add_argument(
        "--target_length",
        type=_target_length,
        default=frontend.TARGET_LENGTH,
        help="fbank frames, a multiple of 16 (default 1024 = 10.24 s); 'none': whole clip, "
        "padded to a multiple of 16, up to the checkpoint's position table",
    )
    parser.add_argument(
        "--resampler",
        choices=resampling.RESAMPLERS,
        default="functional",
        help="for audio not at 16 kHz: functional (EAT's scripts, default) or transforms (SLAM-AAC's data loader)",
    )
    parser.add_argument(
        "--channel",
        choices=audio.CHANNELS,
        default="first",
        help="multi-channel audio: channel 0 (default) or the mean of all channels",
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default="float32",
        help="compute precision (autocast); features are written as float32",
    )
    parser.add_argument("--batch_size", type=int, default=8, help="clips per forward pass (default 8)")
    parser.add_argument("--num_workers", type=int, default=2, help="processes computing fbanks (default 2)")
    parser.add_argument(
        "--skip_invalid",
        action="store_true",
        help="with --wav_scp: leave out files that cannot be read, count them and list them in "
        "PREFIX.skipped.tsv (default: stop at the first, naming its key)",
    )
    runner.add_arguments(parser)
    return parser


def _target_length(value: str) -> Optional[int]:
    if value.lower() == "none":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of frames or 'none', got {value!r}") from None


def main(argv: Optional[List[str]] = None) -> None:
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.num_workers < 0:
        parser.error("--batch_size must be at least 1 and --num_workers at least 0")
    runner.run(run, args)


def output_paths(args: argparse.Namespace) -> List[Path]:
    if args.wav:  # np.save's rule: .npy is appended unless the name has it
        return [Path(args.out if args.out.endswith(".npy") else f"{args.out}.npy")]
    return [Path(f"{args.out}.{suffix}") for suffix in ("ark", "scp", "skipped.tsv")]


def run(args: argparse.Namespace) -> None:
    entries = [(args.wav, args.wav)] if args.wav else read_wav_scp(args.wav_scp)
    outputs = output_paths(args)
    refuse_overwrite(outputs, [args.wav, args.wav_scp, args.checkpoint, *(path for _, path in entries)])
    device = torch.device(resolve_device(args.device))
    model = load_eat_model(args.checkpoint).to(device)
    max_frames = model.config.max_length * model.config.patch_size
    frontend.check_lengths(args.target_length, max_frames)
    dataset = FbankDataset(
        entries, target_length=args.target_length, channel=args.channel, resampler=args.resampler, max_frames=max_frames
    )
    batches = torch.utils.data.DataLoader(
        dataset,
        batch_size=args.batch_size,
        num_workers=args.num_workers if len(entries) > 1 else 0,
        collate_fn=collate,
        worker_init_fn=_one_thread,
    )
    features = extract(model, batches, device, DTYPES[args.dtype], args.granularity, args.skip_invalid and not args.wav)
    if args.wav:
        _, array = next(features)
        with atomic_output(outputs[0], binary=True) as f:
            np.save(f, array)
        logger.info("%s: %s features %s -> %s", args.wav, args.granularity, array.shape, outputs[0])
        return
    ark, scp, skipped_file = outputs
    skipped = write_ark_scp(
        ark, scp, tqdm(features, total=len(entries), desc="EAT features", unit="clip", disable=args.quiet)
    )
    if skipped:
        write_atomically(skipped_file, (f"{key}\t{err}" for key, err in skipped))
        logger.warning("%d of %d clips skipped (unreadable), listed in %s", len(skipped), len(entries), skipped_file)
    else:
        skipped_file.unlink(missing_ok=True)  # a list from an earlier run would describe other outputs
    logger.info("%d clips: %s features -> %s, %s", len(entries) - len(skipped), args.granularity, ark, scp)


def write_ark_scp(ark: Path, scp: Path, features) -> List[Tuple[str, AudioError]]:
    """Kaldi ark + scp of ``(key, array)`` items, both written whole (the scp names ``ark`` itself, not the
    hidden file it is written to); returns the ``(key, AudioError)`` items, which are left out."""
    skipped, lines = [], []
    with atomic_output(ark, binary=True) as f:
        for key, array in features:
            if isinstance(array, AudioError):
                skipped.append((key, array))
                continue
            lines.append(f"{key} {ark}:{f.tell() + len(key.encode()) + 1}")  # the data follows "KEY "
            kaldiio.save_ark(f, {key: array})
        if not lines:
            raise DataError(f"no clip could be read ({len(skipped)} skipped); nothing written")
    write_atomically(scp, lines)  # last: a complete scp says the ark is complete
    return skipped


if __name__ == "__main__":
    main()
