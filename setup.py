"""espnet-slam-aac: SLAM-AAC LLM-based automated audio captioning as an ESPnet plugin."""

from pathlib import Path

from setuptools import find_packages, setup

# The verified stack (see README "Install"): espnet 202511 caps torch at 2.12.x through setuptools<74,
# and torchaudio 2.11.0 is the last release (a CUDA build that imports on CPU-only machines).
install_requires = [
    "espnet==202511",
    "torch==2.12.1",
    "torchaudio==2.11.0",
    "transformers==5.24.0",
    "peft==0.21.2",
    "sentencepiece==0.2.0",
    "safetensors>=0.4",
    "huggingface_hub>=1.0",
    "kaldiio>=2.18",
    "soundfile>=0.12",
    "numpy>=2.0",
    "aac-metrics==0.5.4",
    "pycocoevalcap==1.2",  # carries the PTB tokenizer, METEOR and SPICE jars for offline scoring
    "requests",  # imported by aac-metrics' FER module but not declared by it
    "tensorboard",  # ESPnet's Trainer writes training curves
    "matplotlib",
    "tqdm",
    "PyYAML",
]

setup(
    name="espnet-slam-aac",
    version="0.1.0",
    description="SLAM-AAC (LLM-based automated audio captioning) as a plugin for ESPnet",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["espnet_slam_aac", "espnet_slam_aac.*"]),
    include_package_data=True,
    install_requires=install_requires,
    extras_require={
        # playwright drives the system's Chromium in the demo's browser tests (tests/demo/install_browser.sh)
        "test": ["pytest>=8", "pytest-xdist>=3", "ruff==0.14.14", "playwright==1.65.3"],
        # espnet-slam-aac demo, and a packed model's Space (packaging/space.py GRADIO_PIN); needs pillow<13
        "demo": ["gradio==6.31.0"],
        # the real recipes: corpus download (Clotho, AudioCaps), MarianMT punctuation handling, model zoo
        "recipe": ["aac-datasets==0.7.0", "sacremoses", "espnet_model_zoo==0.1.7"],
    },
    entry_points={"console_scripts": ["espnet-slam-aac = espnet_slam_aac.cli:main"]},
)
