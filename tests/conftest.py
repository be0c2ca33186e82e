"""Shared fixtures: real audio files made by code, never downloaded."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import shutil  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Iterator  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile  # noqa: E402
import torch  # noqa: E402

from espnet_slam_aac.testing import synth  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def audio_files(tmp_path_factory) -> dict:
    """Real files in the shapes users have: name -> path.

    ``10s_16k``: 10 s mono 16 kHz; ``30s_16k``: 30 s mono; ``3s_44k_stereo``: 3 s, 44.1 kHz, 2 channels;
    ``10s_32k``: 10 s mono 32 kHz (the rate of EAT's own test clip), written as 16-bit PCM.
    """
    root = tmp_path_factory.mktemp("audio")
    rng = np.random.default_rng(1234)
    specs = {
        "10s_16k": (16000, 10.0, 1),
        "30s_16k": (16000, 30.0, 1),
        "3s_44k_stereo": (44100, 3.0, 2),
        "10s_32k": (32000, 10.0, 1),
    }
    paths = {}
    for name, (rate, seconds, channels) in specs.items():
        wave, _ = synth.synthesize_clip(rng, rate, seconds, channels)
        paths[name] = root / f"{name}.wav"
        soundfile.write(paths[name], wave, rate, subtype="PCM_16")
    return paths


@pytest.fixture(scope="session")
def synth_manifest(tmp_path_factory) -> Path:
    """A jsonl manifest (key, source, target) of 12 synthesized 4 s clips, 5 captions each."""
    return synth.write_corpus(tmp_path_factory.mktemp("corpus"), n_clips=12, captions_per_clip=5, seed=7)


@pytest.fixture(scope="session")
def tiny_claps(tmp_path_factory) -> dict:
    """Tiny random CLAPs with one seed in each format load_clap reads: "ase" (folder with best_model.pt,
    clap_config.yaml, tokenizer), "laion" (original-layout .pt beside its tokenizer), "hf" (ClapModel folder).
    "laion" and "hf" hold the same weights; "ase" shares their audio tower."""
    from espnet_slam_aac.testing.tiny_clap import build_tiny_clap

    return {fmt: build_tiny_clap(tmp_path_factory.mktemp(f"clap_{fmt}"), fmt) for fmt in ("ase", "laion", "hf")}


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory, synth_manifest) -> Path:
    """A Hugging Face folder laid out like Vicuna's: random-init Llama (hidden 64, 2 layers, 4 heads) and a
    sentencepiece tokenizer trained on the ``synth_manifest`` captions and SLAM-AAC's prompt."""
    import json

    from espnet_slam_aac.testing.tiny_llm import build_tiny_llm

    captions = [json.loads(line)["target"] for line in synth_manifest.read_text(encoding="utf-8").splitlines()]
    return build_tiny_llm(tmp_path_factory.mktemp("tiny_llm"), captions)


@pytest.fixture(scope="session")
def tiny_eat(tmp_path_factory) -> Path:
    """A random-init EAT (32-d, 1 block, 2 heads, 64 time patches) as a Hugging Face folder."""
    from espnet_slam_aac.model.eat import EATConfig, EATModel
    from espnet_slam_aac.model.eat_checkpoint import save_hf_checkpoint

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = EATModel(EATConfig(embed_dim=32, depth=1, num_heads=2, max_length=64))
    return save_hf_checkpoint(model, tmp_path_factory.mktemp("tiny_eat"))


def _mount_tmpfs(path: Path, options: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    mount = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)]
    return subprocess.run(mount, capture_output=True).returncode == 0


@pytest.fixture
def read_only_dir(tmp_path) -> Iterator[Path]:
    """An empty folder nothing can be written into: a read-only tmpfs (as root, who ignores modes), else mode 0555."""
    path = tmp_path / "read_only"
    path.mkdir()
    if _mount_tmpfs(path, "ro,size=64k"):
        yield path
        subprocess.run(["umount", str(path)], check=True)
    elif os.geteuid() == 0:
        pytest.skip("root ignores file modes, and no tmpfs can be mounted here")
    else:
        path.chmod(0o555)
        yield path
        path.chmod(0o755)


@pytest.fixture
def full_dir(tmp_path) -> Iterator[Path]:
    """A folder on a full file system (a 64 KiB tmpfs filled by the file ``filler``): a full disk."""
    path = tmp_path / "full"
    path.mkdir()
    if not _mount_tmpfs(path, "size=64k"):
        pytest.skip("a full disk needs root to mount a small tmpfs")
    fd = os.open(path / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    yield path
    subprocess.run(["umount", str(path)], check=True)
