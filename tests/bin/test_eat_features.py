import subprocess
import sys

import kaldiio
import numpy as np
import pytest
import torch

from espnet_slam_aac.bin import eat_features
from espnet_slam_aac.data import audio
from espnet_slam_aac.model import frontend
from espnet_slam_aac.model.eat import EATConfig, EATModel
from espnet_slam_aac.model.eat_checkpoint import load_eat_model, save_hf_checkpoint


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    return save_hf_checkpoint(EATModel(EATConfig(embed_dim=32, depth=2, num_heads=2)), tmp_path_factory.mktemp("eat"))


def expected_features(checkpoint, path, target_length=1024):
    """What EAT's feature_extract.py computes, one clip at a time (functional resampler, channel 0)."""
    wave, rate = audio.load_audio(path)
    fbank = frontend.eat_fbank(wave, rate, target_length=target_length)
    with torch.no_grad():
        return load_eat_model(str(checkpoint))(fbank[None])[0].numpy()


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "espnet_slam_aac.cli", "eat-features", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_one_file_through_the_command_line(tiny_checkpoint, audio_files, tmp_path):
    out = tmp_path / "features" / "clip.npy"
    result = run_cli("--checkpoint", tiny_checkpoint, "--wav", audio_files["10s_32k"], "--out", out, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    features = np.load(out)
    assert features.shape == (513, 32) and features.dtype == np.float32
    assert np.abs(features - expected_features(tiny_checkpoint, audio_files["10s_32k"])).max() <= 1e-5


def test_wav_scp_to_ark_in_batches_equals_one_clip_at_a_time(tiny_checkpoint, audio_files, tmp_path):
    names = ["10s_16k", "3s_44k_stereo", "30s_16k", "10s_32k"]
    scp = tmp_path / "wav.scp"
    scp.write_text("".join(f"utt_{name} {audio_files[name]}\n" for name in names))
    prefix = tmp_path / "out" / "feats"
    result = run_cli(
        "--checkpoint",
        tiny_checkpoint,
        "--wav_scp",
        scp,
        "--out",
        prefix,
        "--target_length",
        "none",
        "--batch_size",
        3,
        "--num_workers",
        2,
        "--device",
        "cpu",
    )
    assert result.returncode == 0, result.stderr
    assert "EAT features" in result.stderr  # the progress bar
    written = kaldiio.load_scp(f"{prefix}.scp")
    assert list(written) == [f"utt_{name}" for name in names]
    for name in names:
        expected = expected_features(tiny_checkpoint, audio_files[name], target_length=None)
        assert written[f"utt_{name}"].shape == expected.shape
        assert np.abs(written[f"utt_{name}"] - expected).max() <= 1e-5
    assert written["utt_30s_16k"].shape == (1 + 188 * 8, 32)  # 2998 frames -> 3008 -> 188 x 8 patches


@pytest.mark.parametrize("granularity,shape", [("frame", (512, 32)), ("utterance", (32,))])
def test_granularities(tiny_checkpoint, audio_files, tmp_path, granularity, shape):
    out = tmp_path / "f.npy"
    eat_features.main(
        [
            "--checkpoint",
            str(tiny_checkpoint),
            "--wav",
            str(audio_files["10s_16k"]),
            "--out",
            str(out),
            "--granularity",
            granularity,
            "--device",
            "cpu",
        ]
    )
    features = np.load(out)
    expected = expected_features(tiny_checkpoint, audio_files["10s_16k"])
    assert features.shape == shape
    assert np.abs(features - (expected[1:] if granularity == "frame" else expected[0])).max() <= 1e-5


def test_bad_audio_in_wav_scp_names_key_and_file(tiny_checkpoint, audio_files, tmp_path, capsys):
    scp = tmp_path / "wav.scp"
    scp.write_text(f"good {audio_files['10s_16k']}\nbad {tmp_path / 'gone.wav'}\n")
    with pytest.raises(SystemExit) as e:
        eat_features.main(
            [
                "--checkpoint",
                str(tiny_checkpoint),
                "--wav_scp",
                str(scp),
                "--out",
                str(tmp_path / "x"),
                "--num_workers",
                "0",
                "--device",
                "cpu",
            ]
        )
    assert e.value.code == 1
    assert f"key 'bad': audio file not found: {tmp_path / 'gone.wav'}" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content,message",
    [
        ("a x.wav\na y.wav\n", "wav.scp:2: key 'a' repeats line 1"),
        ("a\n", "expected 'KEY PATH'"),
        ("a sox x.wav -t wav - |\n", "piped commands are not supported"),
        ("\n", "no entries"),
    ],
)
def test_malformed_wav_scp(tiny_checkpoint, tmp_path, capsys, content, message):
    scp = tmp_path / "wav.scp"
    scp.write_text(content)
    with pytest.raises(SystemExit):
        eat_features.main(["--checkpoint", str(tiny_checkpoint), "--wav_scp", str(scp), "--out", str(tmp_path / "x")])
    assert message in capsys.readouterr().err


def test_target_length_must_fit_patches(tiny_checkpoint, audio_files, tmp_path, capsys):
    with pytest.raises(SystemExit):
        eat_features.main(
            [
                "--checkpoint",
                str(tiny_checkpoint),
                "--wav",
                str(audio_files["10s_16k"]),
                "--out",
                str(tmp_path / "f.npy"),
                "--target_length",
                "1000",
            ]
        )
    assert "multiple of 16" in capsys.readouterr().err
