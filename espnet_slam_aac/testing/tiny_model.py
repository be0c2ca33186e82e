"""Tiny SLAM-AAC models as users meet them: a packed folder (config.yaml + model.safetensors) and an ESPnet
experiment dir, built from a tiny EAT and LLM (``conftest``'s ``tiny_eat``/``tiny_llm``) with random trained
weights (non-zero LoRA). Tests, benchmarks and the recipes' tests share them."""

import argparse
import shutil
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

from espnet_slam_aac.tasks.aac import AACTask


def tiny_config(tiny_eat: Path, tiny_llm: Path, target_length=1024) -> dict:
    """A training config (what ESPnet writes as exp/.../config.yaml) of a tiny SLAM-AAC."""
    return {
        "frontend": "eat_fbank",
        "frontend_conf": {"fs": 16000, "target_length": target_length, "max_frames": 1024},
        "specaug": None,
        "specaug_conf": {},
        "encoder": "eat",
        "encoder_conf": {"checkpoint": str(tiny_eat)},
        "projector": "linear",
        "projector_conf": {"downsample_rate": 5, "hidden_size": 64},
        "decoder": "llm",
        "decoder_conf": {"model_name_or_path": str(tiny_llm)},
        "model": "slam_aac",
        "model_conf": {},
        "frozen_dtype": "float32",
        "ngpu": 0,
    }


def write_tiny_model(folder: Path, tiny_eat: Path, tiny_llm: Path, target_length=1024, seed=0) -> Path:
    """A packed folder: config.yaml + model.safetensors with random (non-zero LoRA) trainable weights."""
    folder.mkdir(parents=True, exist_ok=True)
    conf = tiny_config(tiny_eat, tiny_llm, target_length)
    (folder / "config.yaml").write_text(yaml.safe_dump(conf), encoding="utf-8")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AACTask.build_model(argparse.Namespace(**conf))
        state = {k: torch.randn_like(v) * 0.05 if "lora" in k else v for k, v in model.state_dict().items()}
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    return folder


DECODE = {"beam_sizes": [2, 3], "max_new_tokens": 6}


def make_experiment(root: Path, tiny_eat: Path, tiny_llm: Path, seed: int = 0) -> Path:
    """An ESPnet-style experiment dir: config.yaml naming local frozen sources, a .pth of the trained
    tensors (random non-zero LoRA), RESULTS.md and images/."""
    exp = root / "exp" / "finetune_tiny"
    exp.mkdir(parents=True)
    shutil.copytree(tiny_eat, root / "models" / "eat")
    shutil.copytree(tiny_llm, root / "models" / "llm")
    conf = {
        "frontend": "eat_fbank",
        "frontend_conf": {"fs": 16000, "target_length": 1024},
        "specaug": None,
        "specaug_conf": {},
        "encoder": "eat",
        "encoder_conf": {"checkpoint": str(root / "models" / "eat")},
        "projector": "linear",
        "projector_conf": {"downsample_rate": 5, "hidden_size": 64},
        "decoder": "llm",
        "decoder_conf": {"model_name_or_path": str(root / "models" / "llm")},
        "model": "slam_aac",
        "model_conf": {},
        "frozen_dtype": "float32",
        "ngpu": 0,
        "train_data_path_and_name_and_type": [
            ["dump/raw/train/wav.scp", "speech", "sound"],
            ["dump/raw/train/text", "text", "text"],
        ],
    }
    (exp / "config.yaml").write_text(yaml.safe_dump(conf))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AACTask.build_model(argparse.Namespace(**conf))
        state = {k: torch.randn_like(v) * 0.05 if "lora" in k else v for k, v in model.state_dict().items()}
    torch.save(state, exp / "valid.loss.best.pth")
    (exp / "RESULTS.md").write_text("# RESULTS\n## test\n|metric|value|\n|---|---|\n|cider_d|1.234|\n")
    (exp / "images").mkdir()
    (exp / "images" / "loss.png").write_bytes(b"\x89PNG fake")
    (root / "decode.yaml").write_text(yaml.safe_dump(DECODE))
    return exp
