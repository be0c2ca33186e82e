"""CLAP audio front end: one clip (any rate, any channels) -> the log-mel windows a CLAP audio tower takes.

Both CLAP backends use an HTS-AT audio tower fed with a Slaney log-mel spectrogram; they differ in rate,
hop, floor and padding (``ASE_MEL`` and ``LAION_MEL`` below):

- SLAM-AAC's CLAP (ASE) at 32 kHz takes torchlibrosa's log-mel (n_fft 1024, hop 320, 64 mels, 50-14000 Hz,
  floor 1e-6) of the clip as it is, **unpadded**; HTS-AT then stretches shorter spectrograms to 1024 frames.
- LAION-CLAP at 48 kHz pads clips to 10 s by repeating them ("repeatpad") before its log-mel (hop 480,
  floor 1e-10), which then equals ``ClapFeatureExtractor(frequency_min=50, truncation="rand_trunc")``.

As in SLAM-AAC's ``clap_refine.py``, a clip is cut to its first ``max_seconds`` at its own rate, then
resampled with ``torchaudio.transforms.Resample`` (what the reference uses; its kernel is built in float64
and differs slightly from ``torchaudio.functional.resample``'s). With
``whole_clip`` a longer clip becomes consecutive ``max_seconds`` windows, the last one ending at the clip's
end; the caller averages their embeddings. Pure functions of one clip: batching cannot change them.
"""

import functools
from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import torch
from transformers.audio_utils import mel_filter_bank

from espnet_slam_aac.data.audio import select_channel
from espnet_slam_aac.data.resample import resample
from espnet_slam_aac.errors import AudioError, ConfigError

MIN_SECONDS = 0.1  # shorter clips: AudioError, or silence (what SLAM-AAC's clap_refine.py substitutes)


@dataclass(frozen=True)
class MelConfig:
    """A CLAP's log-mel front end: power STFT (periodic Hann, centred, reflect padding) -> Slaney mel -> dB."""

    sample_rate: int
    n_fft: int = 1024
    hop_length: int = 320
    n_mels: int = 64
    f_min: float = 50.0
    f_max: float = 14000.0
    amin: float = 1e-6  # power floor before the log (torchlibrosa's ``amin``); ref is 1.0, no top_db
    pad_seconds: Optional[float] = None  # LAION: repeat-pad shorter clips to this length; ASE: None


ASE_MEL = MelConfig(sample_rate=32000, hop_length=320, amin=1e-6)
LAION_MEL = MelConfig(sample_rate=48000, hop_length=480, amin=1e-10, pad_seconds=10.0)


@functools.lru_cache(maxsize=8)
def _mel_filters(cfg: MelConfig) -> torch.Tensor:
    """(n_fft // 2 + 1, n_mels) Slaney-scale, Slaney-normalised filters (= librosa.filters.mel(...).T)."""
    fb = mel_filter_bank(
        num_frequency_bins=cfg.n_fft // 2 + 1,
        num_mel_filters=cfg.n_mels,
        min_frequency=cfg.f_min,
        max_frequency=cfg.f_max,
        sampling_rate=cfg.sample_rate,
        norm="slaney",
        mel_scale="slaney",
    )
    return torch.from_numpy(fb).float()


def log_mel(wave: torch.Tensor, cfg: MelConfig) -> torch.Tensor:
    """(samples,) at ``cfg.sample_rate`` -> (frames, n_mels) log-mel in dB, frames = samples // hop + 1."""
    window = torch.hann_window(cfg.n_fft, periodic=True, dtype=wave.dtype, device=wave.device)
    spec = torch.stft(
        wave,
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        win_length=cfg.n_fft,
        window=window,
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )
    power = spec.real.square() + spec.imag.square()  # (freq, frames)
    mel = power.transpose(0, 1) @ _mel_filters(cfg).to(wave.device)
    return 10.0 * torch.log10(torch.clamp(mel, min=cfg.amin))


def repeat_pad(wave: torch.Tensor, length: int) -> torch.Tensor:
    """LAION's "repeatpad": tile a shorter clip a whole number of times, then zero-pad to ``length``."""
    if wave.shape[0] >= length:
        return wave[:length]
    tiled = wave.repeat(length // wave.shape[0])
    return torch.nn.functional.pad(tiled, (0, length - tiled.shape[0]))


def clip_windows(
    waveform: np.ndarray,
    sample_rate: int,
    cfg: MelConfig,
    max_seconds: float = 10.0,
    whole_clip: bool = False,
    channel: str = "first",
    short_clip: str = "error",
    device: str = "cpu",
) -> List[torch.Tensor]:
    """One clip -> its log-mel windows, each (frames, n_mels); one window unless ``whole_clip``.

    A clip shorter than ``MIN_SECONDS`` raises AudioError (``short_clip="error"``) or becomes
    ``max_seconds`` of silence (``short_clip="silence"``, what SLAM-AAC's clap_refine.py does).
    Resampling and the log-mel run on ``device``.
    """
    wave = select_channel(np.asarray(waveform, dtype=np.float32), channel)
    if wave.shape[0] < MIN_SECONDS * sample_rate:
        if short_clip == "error":
            raise AudioError(
                f"clip of {wave.shape[0]} samples at {sample_rate} Hz is shorter than {MIN_SECONDS} s; "
                "pass short_clip='silence' to embed silence instead, as SLAM-AAC's clap_refine.py does"
            )
        if short_clip != "silence":
            raise ConfigError(f"short_clip must be 'error' or 'silence', not {short_clip!r}")
        wave, sample_rate = np.zeros(int(max_seconds * cfg.sample_rate), np.float32), cfg.sample_rate
    if not whole_clip:
        wave = wave[: int(max_seconds * sample_rate)]
    wave_t = torch.from_numpy(np.ascontiguousarray(wave)).to(device)
    if sample_rate != cfg.sample_rate:
        wave_t = resample(wave_t, sample_rate, "transforms", cfg.sample_rate)
    if whole_clip:
        size = int(max_seconds * cfg.sample_rate)
        starts = list(range(0, max(wave_t.shape[0] - size, 0), size)) + [max(wave_t.shape[0] - size, 0)]
        pieces = [wave_t[s : s + size] for s in starts]
    else:
        pieces = [wave_t]
    if cfg.pad_seconds is not None:
        pieces = [repeat_pad(p, int(cfg.pad_seconds * cfg.sample_rate)) for p in pieces]
    return [log_mel(p, cfg) for p in pieces]
