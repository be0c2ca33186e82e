"""CLAP front end: log-mel equal to the references' front ends, cropping, windows, channels, short clips."""

import numpy as np
import pytest
import torch
from transformers import ClapFeatureExtractor
from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

from espnet_slam_aac.clap.frontend import ASE_MEL, LAION_MEL, clip_windows, log_mel, repeat_pad
from espnet_slam_aac.data.audio import select_channel
from espnet_slam_aac.errors import AudioError, ConfigError


def _noise(seconds, rate, seed=0, channels=None):
    rng = np.random.default_rng(seed)
    shape = (int(seconds * rate),) if channels is None else (int(seconds * rate), channels)
    return (0.1 * rng.standard_normal(shape)).astype(np.float32)


def test_laion_log_mel_equals_transformers_clap_feature_extractor_with_laion_settings():
    wave = _noise(3.0, 48000)
    extractor = ClapFeatureExtractor(frequency_min=50, truncation="rand_trunc", padding="repeatpad")
    expected = extractor(wave, sampling_rate=48000, return_tensors="pt").input_features[0, 0]
    (ours,) = clip_windows(wave, 48000, LAION_MEL)
    assert ours.shape == expected.shape == (1001, 64)
    torch.testing.assert_close(ours, expected, atol=1e-3, rtol=0)


def test_ase_log_mel_equals_a_numpy_torchlibrosa_equivalent_with_floor_1e_6():
    wave = _noise(2.0, 32000)
    wave[:4000] = 0.0  # digital silence: bins under the 1e-6 floor, where the ASE's amin matters
    filters = mel_filter_bank(513, 64, 50.0, 14000.0, 32000, norm="slaney", mel_scale="slaney")
    expected = spectrogram(
        wave,
        window_function(1024, "hann"),
        frame_length=1024,
        hop_length=320,
        power=2.0,
        mel_filters=filters,
        mel_floor=1e-6,
        log_mel="dB",
        min_value=1e-6,
    ).T
    ours = log_mel(torch.from_numpy(wave), ASE_MEL)
    assert ours.shape == (201, 64)
    assert ours.min().item() == pytest.approx(-60.0)  # 10 log10(1e-6)
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-3)


def test_ase_log_mel_equals_torchlibrosa_when_installed():
    stft = pytest.importorskip("torchlibrosa.stft")
    wave = torch.from_numpy(_noise(1.5, 32000))
    spec = stft.Spectrogram(n_fft=1024, hop_length=320, win_length=1024, window="hann", center=True, pad_mode="reflect")
    mel = stft.LogmelFilterBank(sr=32000, n_fft=1024, n_mels=64, fmin=50, fmax=14000, ref=1.0, amin=1e-6, top_db=None)
    torch.testing.assert_close(log_mel(wave, ASE_MEL), mel(spec(wave[None]))[0, 0], atol=1e-3, rtol=0)


def test_clip_is_cut_to_its_first_max_seconds_before_resampling():
    wave = _noise(25.0, 16000)
    (window,) = clip_windows(wave, 16000, ASE_MEL, max_seconds=10.0)
    (first,) = clip_windows(wave[: 10 * 16000], 16000, ASE_MEL, max_seconds=10.0)
    assert window.shape == (1001, 64)  # 10 s at 32 kHz, hop 320
    torch.testing.assert_close(window, first, atol=0, rtol=0)


def test_short_clips_are_not_padded_for_the_ase_and_repeat_padded_for_laion():
    wave = _noise(3.0, 32000)
    assert clip_windows(wave, 32000, ASE_MEL)[0].shape == (301, 64)
    assert clip_windows(wave, 32000, LAION_MEL)[0].shape == (1001, 64)
    padded = repeat_pad(torch.arange(1.0, 4.0), 8)
    assert padded.tolist() == [1, 2, 3, 1, 2, 3, 0, 0]


def test_whole_clip_gives_consecutive_windows_the_last_ending_at_the_clip_end():
    wave = _noise(25.0, 32000)
    windows = clip_windows(wave, 32000, ASE_MEL, max_seconds=10.0, whole_clip=True)
    assert [w.shape[0] for w in windows] == [1001, 1001, 1001]
    (last,) = clip_windows(wave[15 * 32000 :], 32000, ASE_MEL)
    torch.testing.assert_close(windows[2], last, atol=0, rtol=0)
    assert len(clip_windows(_noise(4.0, 32000), 32000, ASE_MEL, whole_clip=True)) == 1


def test_channel_first_is_channel_zero_and_mean_averages():
    stereo = _noise(1.0, 16000, channels=2)
    np.testing.assert_array_equal(select_channel(stereo, "first"), stereo[:, 0])
    np.testing.assert_allclose(select_channel(stereo, "mean"), stereo.mean(axis=1))
    with pytest.raises(ConfigError):
        select_channel(stereo, "left")


def test_clip_shorter_than_a_tenth_of_a_second_is_an_error_or_explicit_silence():
    tiny = _noise(0.05, 16000)
    with pytest.raises(AudioError, match="shorter than 0.1 s"):
        clip_windows(tiny, 16000, ASE_MEL)
    (silence,) = clip_windows(tiny, 16000, ASE_MEL, short_clip="silence")
    assert silence.shape == (1001, 64) and torch.all(silence == -60.0)
