import numpy as np
import pytest
import soundfile
import torch
import torchaudio

from espnet_slam_aac.data import audio
from espnet_slam_aac.errors import AudioError, ConfigError
from espnet_slam_aac.model import frontend


def reference_fbank(path, target_length=1024, resample="functional", channel=0):
    """EAT's preprocessing written out from its description (eat.md section 1), independent of frontend.py."""
    wave, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    wave = torch.from_numpy(wave[:, channel] if channel is not None else wave.mean(axis=1))
    if rate != 16000:
        if resample == "functional":
            wave = torchaudio.functional.resample(wave, rate, 16000)
        else:
            wave = torchaudio.transforms.Resample(rate, 16000)(wave)
    wave = wave - wave.mean()
    mel = torchaudio.compliance.kaldi.fbank(
        wave.unsqueeze(0),
        htk_compat=True,
        sample_frequency=16000,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=128,
        dither=0.0,
        frame_shift=10,
    )
    if target_length is not None:
        mel = torch.nn.functional.pad(mel, (0, 0, 0, max(0, target_length - mel.shape[0])))[:target_length]
    return (mel + 4.268) / (4.569 * 2)


def assert_close(a, b, atol=1e-5):
    assert a.shape == b.shape
    assert torch.max(torch.abs(a - b)).item() <= atol


@pytest.mark.parametrize("name", ["10s_16k", "30s_16k", "3s_44k_stereo", "10s_32k"])
@pytest.mark.parametrize("resampler", ["functional", "transforms"])
def test_fbank_equals_reference_on_real_files(audio_files, name, resampler):
    wave, rate = audio.load_audio(audio_files[name])
    ours = frontend.eat_fbank(wave, rate, resampler=resampler)
    assert ours.shape == (1024, 128) and ours.dtype == torch.float32
    assert_close(ours, reference_fbank(audio_files[name], resample=resampler))


def test_load_audio_gives_samples_by_channels(audio_files):
    wave, rate = audio.load_audio(audio_files["3s_44k_stereo"])
    assert rate == 44100 and wave.shape == (3 * 44100, 2) and wave.dtype == np.float32
    wave, rate = audio.load_audio(audio_files["10s_16k"])
    assert rate == 16000 and wave.shape == (160000, 1)


def test_ten_second_clip_has_998_frames_then_padding_at_0467(audio_files):
    wave, rate = audio.load_audio(audio_files["10s_16k"])
    mel = frontend.eat_fbank(wave, rate)
    assert audio.num_frames(160000) == 998
    assert torch.allclose(mel[998:], torch.full((26, 128), 4.268 / 9.138))
    assert not torch.allclose(mel[997], mel[998])


def test_whole_clip_mode_pads_to_a_multiple_of_16_and_crop_keeps_the_head(audio_files):
    wave, rate = audio.load_audio(audio_files["30s_16k"])
    whole = frontend.eat_fbank(wave, rate, target_length=None)
    assert whole.shape == (3008, 128)  # 2998 frames -> next multiple of 16
    assert_close(whole[:2998], reference_fbank(audio_files["30s_16k"], target_length=None))
    assert_close(frontend.eat_fbank(wave, rate), whole[:1024])
    capped = frontend.eat_fbank(wave, rate, target_length=None, max_frames=2048)
    assert_close(capped, whole[:2048])


def test_resamplers_are_different_targets_for_non_16k_audio(audio_files):
    wave, rate = audio.load_audio(audio_files["10s_32k"])
    a = frontend.eat_fbank(wave, rate, resampler="functional")
    b = frontend.eat_fbank(wave, rate, resampler="transforms")
    assert torch.max(torch.abs(a - b)).item() > 1e-4
    wave, rate = audio.load_audio(audio_files["10s_16k"])
    assert torch.equal(frontend.eat_fbank(wave, rate, resampler="functional"), frontend.eat_fbank(wave, rate))


def test_channel_first_or_mean(audio_files):
    path = audio_files["3s_44k_stereo"]
    wave, rate = audio.load_audio(path)
    assert_close(frontend.eat_fbank(wave, rate, channel="mean"), reference_fbank(path, channel=None))
    assert_close(frontend.eat_fbank(wave[:, :1], rate), frontend.eat_fbank(wave, rate, channel="first"))
    with pytest.raises(ConfigError, match="channel"):
        frontend.eat_fbank(wave, rate, channel="left")


def test_dc_offset_is_removed_before_the_fbank(audio_files):
    wave, rate = audio.load_audio(audio_files["10s_16k"])
    assert_close(frontend.eat_fbank(wave + 0.05, rate), frontend.eat_fbank(wave, rate), atol=1e-3)


@pytest.fixture
def bad_files(tmp_path):
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF this is not audio" * 10)
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, dtype=np.float32), 16000)
    short = tmp_path / "short.wav"
    soundfile.write(short, np.zeros(390, dtype=np.float32), 16000)  # < 400 samples: no 25 ms frame
    short_44k = tmp_path / "short_44k.wav"
    soundfile.write(short_44k, np.zeros(1000, dtype=np.float32), 44100)  # 22.7 ms
    nan = tmp_path / "nan.wav"
    soundfile.write(nan, np.full(16000, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    return {"garbage": garbage, "empty": empty, "short": short, "short_44k": short_44k, "nan": nan}


@pytest.mark.parametrize(
    "name,message",
    [
        ("missing", "not found"),
        ("garbage", "cannot read"),
        ("empty", "empty"),
        ("short", "too short"),
        ("short_44k", "too short"),
        ("nan", "NaN"),
    ],
)
def test_bad_audio_raises_naming_the_file(bad_files, tmp_path, name, message):
    path = bad_files.get(name, tmp_path / "missing.wav")
    with pytest.raises(AudioError, match=message) as info:
        audio.load_audio(path)
    assert str(path) in str(info.value)


def test_one_frame_is_enough(tmp_path):
    path = tmp_path / "one_frame.wav"
    soundfile.write(path, np.random.default_rng(0).standard_normal(400).astype(np.float32) * 0.1, 16000)
    wave, rate = audio.load_audio(path)
    mel = frontend.eat_fbank(wave, rate, target_length=None)
    assert mel.shape == (16, 128)


def padded_batch(waves):
    lengths = torch.tensor([len(w) for w in waves])
    batch = torch.zeros((len(waves), int(lengths.max())) + tuple(waves[0].shape[1:]))
    for b, w in enumerate(waves):
        batch[b, : len(w)] = torch.from_numpy(w)
    return batch, lengths


@pytest.mark.parametrize("resampler", ["functional", "transforms"])
def test_batched_frontend_equals_one_clip_at_a_time(audio_files, resampler):
    wave, rate = audio.load_audio(audio_files["3s_44k_stereo"])
    waves = [wave, wave[: 44100 // 2], wave[::-1].copy()]
    batch, lengths = padded_batch(waves)
    fe = frontend.EATFbank(fs=44100, resampler=resampler, channel="mean")
    feats, feat_lengths = fe(batch, lengths)
    assert feats.shape == (3, 1024, 128) and feat_lengths.tolist() == [1024] * 3
    for b, w in enumerate(waves):
        assert_close(feats[b], frontend.eat_fbank(w, rate, resampler=resampler, channel="mean"))


def test_batched_whole_clip_mode_reports_each_rows_frames(audio_files):
    wave, rate = audio.load_audio(audio_files["10s_16k"])
    waves = [wave[:, 0], wave[:48000, 0]]  # (B, T) input
    batch, lengths = padded_batch(waves)
    feats, feat_lengths = frontend.EATFbank(fs="16k", target_length=None)(batch, lengths)
    assert feat_lengths.tolist() == [1008, 304]  # 998 and 298 frames, rounded up to multiples of 16
    assert feats.shape == (2, 1008, 128)
    assert_close(feats[1, :304], frontend.eat_fbank(waves[1], rate, target_length=None))
    assert torch.allclose(feats[1, 298:], torch.full((710, 128), 4.268 / 9.138))


def test_frontend_config_errors():
    assert frontend.EATFbank().output_size() == 128
    with pytest.raises(ConfigError, match="multiple of 16"):
        frontend.EATFbank(target_length=1000)
    with pytest.raises(ConfigError, match="resampler"):
        frontend.EATFbank(resampler="sox")
    with pytest.raises(ConfigError, match="channel"):
        frontend.EATFbank(channel="left")


def test_too_short_row_in_a_batch_is_an_error():
    batch = torch.zeros(2, 16000)
    with pytest.raises(AudioError, match="utterance 1 of the batch is too short"):
        frontend.EATFbank()(batch, torch.tensor([16000, 300]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("resampler", ["functional", "transforms"])
def test_frontend_on_cuda_matches_cpu(audio_files, resampler):
    for name in ("10s_16k", "3s_44k_stereo", "10s_32k"):
        wave, rate = audio.load_audio(audio_files[name])
        batch, lengths = padded_batch([wave, wave[: len(wave) // 2]])
        fe = frontend.EATFbank(fs=rate, resampler=resampler)
        on_cpu = fe(batch, lengths)[0]
        on_cuda = fe(batch.cuda(), lengths.cuda())[0]
        error = torch.abs(on_cuda.cpu() - on_cpu)
        # float noise in near-empty top bins; TF32 resampling would give ~4e-3 max, 2e-4 mean here
        assert error.max().item() <= 2e-3 and error.mean().item() <= 2e-5, name
        assert torch.backends.cudnn.conv.fp32_precision == "tf32"  # PyTorch's default, put back after the front end
