"""A tiny packed model with a CLAP and example clips (what the demo serves), and clips it must refuse."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile
import yaml

from espnet_slam_aac.testing import synth

DECODE = {"beam_sizes": [2, 3], "max_new_tokens": 6}


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> SimpleNamespace:
    """Good clips (2 s 16 kHz mono, 3 s 44.1 kHz stereo, 12 s 16 kHz) and bad ones: not audio, 5 ms, NaN."""
    root = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(5)
    good = {}
    for name, rate, seconds, channels in (("dog", 16000, 2.0, 1), ("rain", 44100, 3.0, 2), ("long", 16000, 12.0, 1)):
        wave, _ = synth.synthesize_clip(rng, rate, seconds, channels)
        good[name] = root / f"{name}.wav"
        soundfile.write(good[name], wave, rate)
    broken = root / "broken.wav"  # a .wav name (the browser sends it), not audio
    broken.write_text("this is not audio\n" * 50)
    short = root / "short.wav"
    soundfile.write(short, np.zeros(80, dtype=np.float32), 16000)
    nan = root / "nan.wav"
    soundfile.write(nan, np.full(16000, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    return SimpleNamespace(**good, broken=broken, short=short, nan=nan)


@pytest.fixture(scope="session")
def demo_pack(tmp_path_factory, tiny_eat, tiny_llm, clips) -> Path:
    """``pack`` of a tiny model with decode.yaml (beams 2, 3), a tiny CLAP and two example clips."""
    from espnet_slam_aac.packaging.pack import pack
    from espnet_slam_aac.testing.tiny_clap import build_tiny_clap
    from espnet_slam_aac.testing.tiny_model import write_tiny_model

    root = tmp_path_factory.mktemp("demo_model")
    model = write_tiny_model(root / "model", tiny_eat, tiny_llm)
    (root / "decode.yaml").write_text(yaml.safe_dump(DECODE), encoding="utf-8")
    clap = build_tiny_clap(root / "clap", "hf")
    return pack(
        model / "config.yaml",
        model / "model.safetensors",
        root / "packed",
        decode_config=root / "decode.yaml",
        clap=str(clap),
        examples=[clips.dog, clips.rain],
        name="me/slam-aac-tiny",
        resolve_revisions=False,
    ).out_dir
