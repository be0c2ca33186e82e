"""Audio files as the package reads them: header probes, full decodes, and the minimum length.

A header probe finds missing, unreadable and empty files and clips shorter than the minimum length (one
25 ms frame). Corrupt data behind a valid header (e.g. a truncated FLAC), NaN/inf samples, digital silence and
a WAV whose header promises more samples than the file holds (libsndfile quietly reports the samples present)
are found only by ``decode=True`` (``--check_audio``), which reads every file (a full read of the corpus).
``load_audio``, which every reader of samples uses, refuses NaN/inf samples whatever the probe did.
"""

import math
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, TypeVar, Union

import numpy as np
import soundfile

from espnet_slam_aac.data.records import PathLike
from espnet_slam_aac.errors import AudioError, ConfigError

SAMPLE_RATE = 16000  # EAT's rate; every clip is resampled to it
FRAME_LENGTH = 400  # samples at 16 kHz (25 ms); a clip shorter than this has no frame
FRAME_SHIFT = 160  # samples at 16 kHz (10 ms)
CHANNELS = ("first", "mean")
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".w64", ".caf"})
Wave = TypeVar("Wave")  # a numpy array or a torch tensor


@dataclass(frozen=True)
class AudioInfo:
    num_samples: int  # per channel
    sample_rate: int
    channels: int

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate


def probe_audio(path: PathLike, decode: bool = False) -> AudioInfo:
    """Header facts of an audio file; AudioError if it is missing, unreadable, empty or under one frame.

    ``decode=True`` also decodes all of it, to find corrupt or truncated data and digital silence.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise AudioError(f"audio file not found: {path}")
    if not os.path.isfile(path):
        raise AudioError(f"audio path is not a file: {path}")
    try:
        info = soundfile.info(path)
    except (RuntimeError, OSError) as e:  # soundfile.LibsndfileError is a RuntimeError
        raise AudioError(f"unreadable audio file {path}: {e}") from None
    n, rate = int(info.frames), int(info.samplerate)
    if n <= 0:
        raise AudioError(f"empty audio (0 samples): {path}")
    check_duration(n, rate, path)
    if decode:
        _decode_all(path, n)
    return AudioInfo(n, rate, int(info.channels))


def _decode_all(path: str, expected: int) -> None:
    promised = wav_header_frames(path)
    if promised is not None and promised > expected:
        raise AudioError(f"truncated WAV {path}: its header promises {promised} samples, the file holds {expected}")
    decoded, peak, nonfinite = 0, 0.0, 0
    try:
        with soundfile.SoundFile(path) as f:
            for block in f.blocks(blocksize=1 << 16, dtype="float32"):
                finite = np.isfinite(block)
                nonfinite += int(block.size - finite.sum())
                decoded += len(block)
                peak = max(peak, float(np.abs(np.where(finite, block, 0.0)).max(initial=0.0)))
    except (RuntimeError, OSError) as e:
        raise AudioError(f"corrupt audio data in {path} (decoding failed after {decoded} samples: {e})") from None
    if decoded != expected:
        raise AudioError(f"truncated audio {path}: header says {expected} samples, decoded {decoded}")
    if nonfinite:
        raise AudioError(f"{nonfinite} NaN or infinite samples in {path}: fix or drop the file")
    if peak == 0.0:
        raise AudioError(f"digital silence (every sample is 0): {path}")


def wav_header_frames(path: str) -> Optional[int]:
    """Frames the ``data`` chunk of a RIFF/WAVE header promises; None for other formats, or a streamed WAV
    (size 0 or 0xFFFFFFFF: unknown). libsndfile reports the frames present instead, so a cut file looks whole."""
    with open(path, "rb") as f:
        if f.read(12)[0:4] != b"RIFF":
            return None
        f.seek(8)
        if f.read(4) != b"WAVE":
            return None
        block_align = None
        while True:
            header = f.read(8)
            if len(header) < 8:
                return None
            chunk, size = header[:4], struct.unpack("<I", header[4:])[0]
            if chunk == b"fmt ":
                fmt = f.read(size)
                block_align = struct.unpack("<H", fmt[12:14])[0] if len(fmt) >= 14 else None
                f.seek(size % 2, os.SEEK_CUR)
            elif chunk == b"data":
                if not block_align or size in (0, 0xFFFFFFFF):
                    return None
                return size // block_align
            else:
                f.seek(size + size % 2, os.SEEK_CUR)


def probe_many(paths: Sequence[str], decode: bool, num_workers: int) -> Dict[str, Union[AudioInfo, AudioError]]:
    def probe(path: str) -> Union[AudioInfo, AudioError]:
        try:
            return probe_audio(path, decode)
        except AudioError as e:
            return e

    with ThreadPoolExecutor(max(1, num_workers)) as pool:  # libsndfile calls release the GIL
        return dict(zip(paths, pool.map(probe, paths)))


def load_audio(path: Union[str, Path]) -> Tuple[np.ndarray, int]:
    """Read an audio file: float32 samples in [-1, 1], shape ``(samples, channels)``, and its sample rate.

    Raises ``AudioError`` naming the file when it is missing, unreadable, empty, not finite, or shorter than one
    25 ms fbank frame.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    try:
        wave, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as e:
        raise AudioError(f"cannot read audio file {path}: {e}") from e
    if wave.size == 0:
        raise AudioError(f"audio file {path} is empty (0 samples)")
    if not np.isfinite(wave).all():
        raise AudioError(f"audio file {path} holds NaN or infinite samples")
    check_duration(wave.shape[0], rate, str(path))
    return wave, rate


def resampled_length(num_samples: int, sample_rate: int) -> int:
    """Number of samples after resampling to 16 kHz (torchaudio's rule)."""
    return num_samples if sample_rate == SAMPLE_RATE else math.ceil(SAMPLE_RATE * num_samples / sample_rate)


def num_frames(num_samples_16k: int) -> int:
    """Number of Kaldi fbank frames of a 16 kHz waveform (``snip_edges``): 998 for 10 s."""
    return 0 if num_samples_16k < FRAME_LENGTH else 1 + (num_samples_16k - FRAME_LENGTH) // FRAME_SHIFT


def check_duration(num_samples: int, sample_rate: int, what: str) -> None:
    """Raise ``AudioError`` naming ``what`` when the audio gives no fbank frame."""
    if num_frames(resampled_length(num_samples, sample_rate)) == 0:
        raise AudioError(
            f"audio shorter than one 25 ms frame ({num_samples} samples at {sample_rate} Hz): {what} is too short "
            "for EAT's fbank"
        )


def select_channel(wave: Wave, channel: str = "first") -> Wave:
    """``(samples,)`` or ``(samples, channels)`` -> ``(samples,)``: channel 0 (``"first"``, SLAM-AAC's choice)
    or the mean; numpy arrays and torch tensors alike."""
    if channel not in CHANNELS:
        raise ConfigError(f"channel must be one of {CHANNELS}, got {channel!r}")
    if wave.ndim == 1:
        return wave
    if wave.ndim != 2:
        raise AudioError(f"expected a waveform of shape (samples,) or (samples, channels), got {tuple(wave.shape)}")
    return wave[:, 0] if channel == "first" else wave.mean(1)
