"""EAT front end: waveform at any rate -> normalized 128-bin Kaldi log-mel fbank, as EAT's own scripts do it.

The steps (``eat_fbank``), each a plain function below:

1. one channel: ``channel="first"`` (SLAM-AAC's loader keeps channel 0) or ``"mean"``;
2. resample to 16 kHz. Two resamplers, two targets (they differ by up to 0.09 in the normalized fbank):
   ``"functional"`` = ``torchaudio.functional.resample`` (float32 kernel), what EAT's feature extractor uses,
   the default of ``espnet-slam-aac eat-features``; ``"transforms"`` = ``torchaudio.transforms.Resample``
   (kernel built in float64), what SLAM-AAC's data loader uses, the default of the ``eat_fbank`` ESPnet front
   end, so that the released SLAM-AAC checkpoints see what they were trained on;
3. subtract the clip mean (DC);
4. ``torchaudio.compliance.kaldi.fbank`` with EAT's arguments (``KALDI_FBANK_ARGS``): 25 ms hanning frames
   every 10 ms, 128 mel bins, no dither, no energy;
5. zero-pad at the end (in the log-mel domain) or keep the first ``target_length`` frames (1024 = 10.24 s).
   ``target_length=None`` keeps the whole clip, padded to a multiple of 16, up to ``max_frames``;
6. ``(x - NORM_MEAN) / (2 * NORM_STD)``. Padded frames become +0.467, as in the reference.

``EATFbank`` is the same as an ESPnet front end (``frontend: eat_fbank``) for padded batches.
"""

import logging
from typing import Optional, Tuple, Union

import numpy as np
import torch
import torchaudio
from espnet2.asr.frontend.abs_frontend import AbsFrontend

from espnet_slam_aac.data.audio import CHANNELS, FRAME_LENGTH, SAMPLE_RATE, check_duration, select_channel
from espnet_slam_aac.data.resample import RESAMPLERS, resample
from espnet_slam_aac.errors import AudioError, ConfigError

logger = logging.getLogger(__name__)

N_MELS = 128
PATCH_FRAMES = 16  # EAT's patches are 16 frames x 16 mel bins
TARGET_LENGTH = 1024  # frames, 10.24 s: what EAT was pre-trained on and SLAM-AAC uses
MAX_FRAMES = 768 * PATCH_FRAMES  # 12288 frames (122.9 s): the position table of current EAT checkpoints
NORM_MEAN = -4.268  # AudioSet statistics used by every EAT checkpoint
NORM_STD = 4.569
KALDI_FBANK_ARGS = dict(
    htk_compat=True,
    sample_frequency=SAMPLE_RATE,
    use_energy=False,
    window_type="hanning",
    num_mel_bins=N_MELS,
    dither=0.0,
    frame_shift=10,
)


def log_mel(wave: torch.Tensor) -> torch.Tensor:
    """16 kHz float32 waveform ``(samples,)`` -> Kaldi log-mel fbank ``(frames, 128)`` after DC removal."""
    if wave.shape[-1] < FRAME_LENGTH:
        raise AudioError(f"waveform of {wave.shape[-1]} samples at 16 kHz is shorter than one 25 ms frame")
    wave = wave - wave.mean()
    return torchaudio.compliance.kaldi.fbank(wave.unsqueeze(0), **KALDI_FBANK_ARGS)


def pad_or_trim(fbank: torch.Tensor, target_length: Optional[int] = TARGET_LENGTH, max_frames: int = MAX_FRAMES):
    """Zero-pad (log-mel domain) or keep the first ``target_length`` frames.

    ``target_length=None`` keeps the whole clip: pad to the next multiple of 16 frames, keep at most
    ``max_frames`` (the position table of the encoder).
    """
    frames = fbank.shape[0]
    if target_length is None:
        target_length = -(-frames // PATCH_FRAMES) * PATCH_FRAMES
        if target_length > max_frames:
            logger.warning("clip of %d frames is longer than the encoder's %d; keeping the first", frames, max_frames)
            target_length = max_frames
    if frames >= target_length:
        return fbank[:target_length]
    return torch.nn.functional.pad(fbank, (0, 0, 0, target_length - frames))


def normalize(fbank: torch.Tensor, mean: float = NORM_MEAN, std: float = NORM_STD) -> torch.Tensor:
    return (fbank - mean) / (2 * std)


def eat_fbank(
    wave: Union[np.ndarray, torch.Tensor],
    sample_rate: int,
    target_length: Optional[int] = TARGET_LENGTH,
    channel: str = "first",
    resampler: str = "functional",
    max_frames: int = MAX_FRAMES,
    norm_mean: float = NORM_MEAN,
    norm_std: float = NORM_STD,
) -> torch.Tensor:
    """One clip ``(samples,)`` or ``(samples, channels)`` at any rate -> normalized EAT input ``(frames, 128)``.

    ``frames`` is ``target_length`` (default 1024), or with ``target_length=None`` the clip's own frame count
    rounded up to a multiple of 16 (at most ``max_frames``).
    """
    check_lengths(target_length, max_frames)
    wave = torch.as_tensor(wave)
    with torch.autocast(wave.device.type, enabled=False):
        fbank = padded_log_mel(wave, sample_rate, target_length, channel, resampler, max_frames)
        return normalize(fbank, norm_mean, norm_std)


def padded_log_mel(
    wave: torch.Tensor,
    sample_rate: int,
    target_length: Optional[int],
    channel: str,
    resampler: str,
    max_frames: int = MAX_FRAMES,
    what: str = "clip",
) -> torch.Tensor:
    """Steps 1-5 of ``eat_fbank`` (all but the normalization); ``what`` names the clip in errors."""
    wave = select_channel(wave, channel).float()
    check_duration(wave.shape[0], sample_rate, what)
    return pad_or_trim(log_mel(resample(wave, sample_rate, resampler)), target_length, max_frames)


def check_lengths(target_length: Optional[int], max_frames: int = MAX_FRAMES) -> None:
    """``ConfigError`` unless both are positive multiples of 16 and ``target_length <= max_frames``."""
    for name, value in (("target_length", target_length), ("max_frames", max_frames)):
        if value is not None and (value <= 0 or value % PATCH_FRAMES):
            raise ConfigError(f"{name} must be a positive multiple of {PATCH_FRAMES} frames, got {value}")
    if target_length is not None and target_length > max_frames:
        raise ConfigError(f"target_length {target_length} exceeds the encoder's position table ({max_frames} frames)")


class EATFbank(AbsFrontend):
    """ESPnet front end ``eat_fbank``: padded waveforms -> EAT's normalized fbank, one utterance at a time.

    Args:
        fs: sample rate of the input batch (resampled to 16 kHz); ``"16k"``-style strings as in ESPnet.
        target_length: frames per utterance (pad/crop, default 1024 = 10.24 s, as SLAM-AAC); ``None`` keeps
            each whole clip padded to a multiple of 16 frames, and the batch is padded to its longest row.
        channel: ``"first"`` (channel 0, as SLAM-AAC) or ``"mean"``, for ``(B, T, C)`` input.
        resampler: ``"transforms"`` (SLAM-AAC's loader, the default here) or ``"functional"`` (EAT's scripts).
        max_frames: longest input of the encoder's position table (whole-clip mode only).
        norm_mean, norm_std: normalization statistics (AudioSet by default).

    ``forward`` uses only the first ``lengths[b]`` samples of row ``b``, so batching does not change features.
    Output lengths are the frames the encoder sees: ``target_length`` for every row (padding included, as in the
    reference), or the row's padded frame count in whole-clip mode.
    """

    def __init__(
        self,
        fs: Union[int, str] = SAMPLE_RATE,
        target_length: Optional[int] = TARGET_LENGTH,
        channel: str = "first",
        resampler: str = "transforms",
        max_frames: int = MAX_FRAMES,
        norm_mean: float = NORM_MEAN,
        norm_std: float = NORM_STD,
    ):
        super().__init__()
        if isinstance(fs, str):
            import humanfriendly

            fs = humanfriendly.parse_size(fs)
        if fs <= 0:
            raise ConfigError(f"fs must be a positive sample rate, got {fs}")
        if channel not in CHANNELS:
            raise ConfigError(f"channel must be one of {CHANNELS}, got {channel!r}")
        if resampler not in RESAMPLERS:
            raise ConfigError(f"resampler must be one of {RESAMPLERS}, got {resampler!r}")
        check_lengths(target_length, max_frames)
        self.fs = int(fs)
        self.target_length = target_length
        self.channel = channel
        self.resampler = resampler
        self.max_frames = max_frames
        self.norm_mean = norm_mean
        self.norm_std = norm_std

    def output_size(self) -> int:
        return N_MELS

    def forward(self, input: torch.Tensor, input_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if input.dim() not in (2, 3):
            raise ValueError(f"expected speech (B, T) or (B, T, C), got shape {tuple(input.shape)}")
        rows = []
        with torch.autocast(input.device.type, enabled=False):
            for b, length in enumerate(input_lengths.tolist()):
                rows.append(
                    padded_log_mel(
                        input[b, :length],
                        self.fs,
                        self.target_length,
                        self.channel,
                        self.resampler,
                        self.max_frames,
                        f"utterance {b} of the batch",
                    )
                )
            lengths = torch.tensor([r.shape[0] for r in rows], dtype=torch.long, device=input.device)
            # padding beyond a row's own length is 0 in the log-mel domain, like the reference's padding
            feats = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
            return normalize(feats, self.norm_mean, self.norm_std), lengths
