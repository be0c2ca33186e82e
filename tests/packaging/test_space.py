"""A packed model is a Hugging Face Space of its demo: pack writes app.py, requirements.txt, the example clips
and the Space keys of the card; the Space's app.py serves the page; upload --space sends it to a Space."""

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile
import yaml

from espnet_slam_aac import __version__
from espnet_slam_aac.errors import AudioError, ConfigError
from espnet_slam_aac.packaging.pack import pack
from espnet_slam_aac.packaging.space import GRADIO_PIN
from espnet_slam_aac.testing import browser
from espnet_slam_aac.testing.tiny_model import write_tiny_model

SETUP = Path(__file__).resolve().parents[2] / "setup.py"


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_eat, tiny_llm) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("space_model"), tiny_eat, tiny_llm)


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("example") / "bird.flac"
    soundfile.write(path, 0.1 * np.sin(np.arange(24000) * 0.3), 16000)
    return path


def front_matter(card: Path) -> dict:
    text = card.read_text(encoding="utf-8")
    return yaml.safe_load(text.split("---\n")[1])


def test_a_packed_model_is_a_gradio_space(tmp_path, model, example, tiny_claps):
    out = pack(
        model / "config.yaml",
        model / "model.safetensors",
        tmp_path / "packed",
        clap=str(tiny_claps["hf"]),
        examples=[example],
        name="me/slam-aac-tiny",
        resolve_revisions=False,
    ).out_dir
    keys = front_matter(out / "README.md")
    assert keys["sdk"] == "gradio" and keys["sdk_version"] == GRADIO_PIN and keys["python_version"] == "3.11"
    assert (out / keys["app_file"]).is_file() and keys["models"] == ["me/slam-aac-tiny"]
    assert keys["library_name"] == "espnet" and "audio-captioning" in keys["tags"]  # still the model card
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "## Demo" in card and "espnet-slam-aac demo --model me/slam-aac-tiny --refine" in card
    assert "--space" in card and "1 example clips in `examples/`" in card

    requirements = (out / "requirements.txt").read_text(encoding="utf-8").splitlines()
    assert f"espnet-slam-aac[demo]=={__version__}" in requirements and f"gradio=={GRADIO_PIN}" in requirements
    assert any(re.fullmatch(r"torch==[\w.+]+", line) for line in requirements)
    app = (out / "app.py").read_text(encoding="utf-8")
    compile(app, "app.py", "exec")
    assert 'demo.main(["--model", str(Path(__file__).resolve().parent), "--refine"])' in app
    assert (out / "examples" / "bird.flac").read_bytes() == example.read_bytes()

    plain = pack(model / "config.yaml", model / "model.safetensors", tmp_path / "plain", resolve_revisions=False)
    assert '"--refine"' not in (plain.out_dir / "app.py").read_text() and not (plain.out_dir / "examples").exists()
    assert front_matter(plain.out_dir / "README.md")["title"] == "SLAM-AAC audio captioning"


def test_the_demo_extra_pins_the_gradio_of_the_space():
    assert re.search(r'"demo": \["gradio==([\d.]+)"\]', SETUP.read_text()).group(1) == GRADIO_PIN


def test_pack_refuses_example_clips_the_demo_could_not_caption(tmp_path, model, example):
    broken = tmp_path / "broken.wav"
    broken.write_text("not audio")
    with pytest.raises(AudioError, match="broken.wav"):
        pack(model / "config.yaml", model / "model.safetensors", tmp_path / "a", examples=[broken])
    twin = tmp_path / "twin" / example.name
    twin.parent.mkdir()
    twin.write_bytes(example.read_bytes())
    with pytest.raises(ConfigError, match="have the same name"):
        pack(model / "config.yaml", model / "model.safetensors", tmp_path / "b", examples=[example, twin])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no half-written pack left


def run_bin(module: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"espnet_slam_aac.bin.{module}", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def test_pack_example_flag_and_upload_to_a_space(tmp_path, model, example):
    done = run_bin(
        "pack",
        "--train_config",
        model / "config.yaml",
        "--model_file",
        model / "model.safetensors",
        "--out_dir",
        tmp_path / "packed",
        "--example",
        example,
        "--resolve_revisions",
        "false",
    )
    assert done.returncode == 0, done.stderr
    dry = run_bin("upload", tmp_path / "packed", "--hf_repo", "me/slam-aac-demo", "--space", "--dry_run")
    assert dry.returncode == 0, dry.stderr
    assert "to https://huggingface.co/spaces/me/slam-aac-demo:" in dry.stdout
    assert all(f"  {name}  " in dry.stdout for name in ("app.py", "requirements.txt", "examples/bird.flac"))
    offline = run_bin("upload", tmp_path / "packed", "--hf_repo", "me/slam-aac-demo", "--space")
    assert offline.returncode == 1 and "https://huggingface.co/spaces/me/slam-aac-demo failed" in offline.stderr
    (tmp_path / "packed" / "app.py").unlink()
    old = run_bin("upload", tmp_path / "packed", "--hf_repo", "me/slam-aac-demo", "--space", "--dry_run")
    assert old.returncode == 1 and "has no app.py" in old.stderr and "Traceback" not in old.stderr


def test_the_space_app_serves_the_demo_of_its_folder(tmp_path, model, example):
    pytest.importorskip("gradio", reason="the demo extra is not installed: pip install -e '.[demo]'")
    out = pack(model / "config.yaml", model / "model.safetensors", tmp_path / "packed", examples=[example]).out_dir
    server = browser.DemoServer([], tmp_path / "space.log", app_file=out / "app.py")
    try:
        with urllib.request.urlopen(f"{server.url}config", timeout=30) as response:
            config = json.loads(response.read())
    finally:
        server.stop()
    assert any(d.get("api_name") == "caption" for d in config["dependencies"])
    assert config["analytics_enabled"] is False
    examples = [c["props"]["samples"] for c in config["components"] if c.get("type") == "dataset"]
    assert examples == [[["bird.flac"]]]
    assert "Traceback" not in server.log.read_text()
