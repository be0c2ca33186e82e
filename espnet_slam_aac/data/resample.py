"""Resampling with torchaudio, one cached kernel per (rate, rate, device), in full float32 on CUDA too."""

import contextlib
import functools

import torch
import torchaudio

from espnet_slam_aac.data.audio import SAMPLE_RATE
from espnet_slam_aac.errors import ConfigError

RESAMPLERS = ("functional", "transforms")


@functools.lru_cache(maxsize=16)
def _resample_transform(sample_rate: int, target_rate: int, device: torch.device) -> torchaudio.transforms.Resample:
    return torchaudio.transforms.Resample(sample_rate, target_rate).to(device)


def resample(
    wave: torch.Tensor, sample_rate: int, resampler: str = "functional", target_rate: int = SAMPLE_RATE
) -> torch.Tensor:
    """Float32 waveform ``(..., samples)`` at ``sample_rate`` -> ``target_rate`` with torchaudio's ``resampler``:
    ``"functional"`` (EAT's scripts) or ``"transforms"`` (SLAM-AAC's loaders, float64-built kernel)."""
    if resampler not in RESAMPLERS:
        raise ConfigError(f"resampler must be one of {RESAMPLERS}, got {resampler!r}")
    if sample_rate == target_rate:
        return wave
    with _no_tf32(wave.device):
        if resampler == "functional":
            return torchaudio.functional.resample(wave, sample_rate, target_rate)
        return _resample_transform(sample_rate, target_rate, wave.device)(wave)


@contextlib.contextmanager
def _no_tf32(device: torch.device):
    """Full float32 cuDNN convolutions on CUDA. torchaudio resamples with a convolution, which PyTorch runs in TF32
    by default; that moves the top mel bins of resampled audio by up to 0.09 (normalized), as much as the choice
    of resampler does. Only the convolution setting changes, and only inside this block."""
    if device.type != "cuda":
        yield
        return
    conv = torch.backends.cudnn.conv
    before, conv.fp32_precision = conv.fp32_precision, "ieee"
    try:
        yield
    finally:
        conv.fp32_precision = before
