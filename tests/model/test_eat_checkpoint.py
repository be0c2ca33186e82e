"""Checkpoints written here in EAT's three layouts (eat.md section 3) with the same random weights."""

import argparse
import collections
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from espnet_slam_aac.errors import CheckpointError
from espnet_slam_aac.model.eat import EATConfig, EATModel, sincos_positions
from espnet_slam_aac.model.eat_checkpoint import load_eat_model, load_eat_state_dict, save_hf_checkpoint

CONFIG = EATConfig(embed_dim=32, depth=2, num_heads=2)


def fairseq_model_cfg(config, with_max_length=True):
    image = dict(in_chans=1, patch_size=16, target_length=1024, num_extra_tokens=1, prenet_depth=0)
    if with_max_length:
        image["max_length"] = config.max_length
    return {
        "_name": "data2vec_multi",
        "depth": config.depth,
        "embed_dim": config.embed_dim,
        "num_heads": config.num_heads,
        "mlp_ratio": config.mlp_ratio,
        "norm_eps": config.norm_eps,
        "layer_norm_first": False,
        "modalities": {"image": image},
    }


def hf_to_fairseq(hf_state):
    """The HF release's keys -> fairseq pre-training keys (eat.md section 3a table)."""
    out = {}
    for key, value in hf_state.items():
        key = key[len("model.") :]
        if key.startswith("blocks."):
            out[key] = value
        elif key == "pre_norm.weight" or key == "pre_norm.bias":
            out["modality_encoders.IMAGE.context_encoder.norm." + key.split(".")[-1]] = value
        else:
            out["modality_encoders.IMAGE." + key] = value
    return out


def trainer_extras():
    """What a fairseq trainer saves besides the model: numpy scalars, OrderedDicts, a Namespace."""
    return {
        "args": argparse.Namespace(task="mae_image_pretraining", seed=1),
        "criterion": None,
        "optimizer_history": [
            {
                "criterion_name": "ModelCriterion",
                "optimizer_name": "FairseqAdam",
                "lr_scheduler_state": {"best": np.float64(0.5)},
                "num_updates": 400000,
            }
        ],
        "task_state": {},
        "extra_state": {
            "metrics": collections.OrderedDict(train=collections.OrderedDict(loss=np.float32(1.25), n=np.int64(7))),
            "previous_training_time": 1234.5,
        },
    }


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """The same random tiny EAT as a HF folder, a fairseq pre-training file and a fairseq fine-tuned file."""
    root = tmp_path_factory.mktemp("eat")
    torch.manual_seed(0)
    model = EATModel(CONFIG)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    hf = save_hf_checkpoint(model, root / "hf")
    fairseq = hf_to_fairseq(load_file(str(hf / "model.safetensors")))
    D = CONFIG.embed_dim

    pretrain = dict(fairseq)
    pretrain["modality_encoders.IMAGE.decoder.blocks.0.0.weight"] = torch.randn(D, D // 16, 3, 3)
    pretrain["modality_encoders.IMAGE.decoder.proj.weight"] = torch.randn(D, D)
    pretrain["_ema"] = collections.OrderedDict((k, v.clone()) for k, v in fairseq.items())
    cfg = {"model": fairseq_model_cfg(CONFIG)}
    torch.save({"cfg": cfg, "model": pretrain, **trainer_extras()}, root / "pretrain.pt")

    finetune = {"model." + k: v for k, v in fairseq.items()}
    finetune["fc_norm.weight"], finetune["fc_norm.bias"] = torch.ones(D), torch.zeros(D)
    finetune["head.weight"], finetune["head.bias"] = torch.randn(527, D), torch.zeros(527)
    cfg = {
        "model": {
            "_name": "mae_image_classification",
            "num_classes": 527,
            "pretrained_model_args": {"model": fairseq_model_cfg(CONFIG)},
        }
    }
    torch.save({"cfg": cfg, "model": finetune, **trainer_extras()}, root / "finetune.pt")

    old = dict(fairseq)  # pre-April-2024: 512-row table, no max_length in the config
    old["modality_encoders.IMAGE.fixed_positional_encoder.positions"] = fairseq[
        "modality_encoders.IMAGE.fixed_positional_encoder.positions"
    ][:, :512].clone()
    torch.save({"cfg": {"model": fairseq_model_cfg(CONFIG, with_max_length=False)}, "model": old}, root / "old.pt")
    return {
        "model": model,
        "hf": hf,
        "pretrain": root / "pretrain.pt",
        "finetune": root / "finetune.pt",
        "old": root / "old.pt",
        "fairseq_state": fairseq,
        "root": root,
    }


def test_hf_folder_holds_the_release_keys(checkpoints):
    keys = set(load_file(str(checkpoints["hf"] / "model.safetensors")))
    assert len(keys) == 2 + 1 + 1 + 2 + 12 * CONFIG.depth  # 150 for EAT-base
    assert {
        "model.local_encoder.proj.weight",
        "model.extra_tokens",
        "model.pre_norm.bias",
        "model.fixed_positional_encoder.positions",
        "model.blocks.1.mlp.fc2.weight",
    } <= keys
    config = json.loads((checkpoints["hf"] / "config.json").read_text())
    assert config["model_type"] == "eat" and config["embed_dim"] == 32 and config["max_length"] == 768


def test_every_layout_gives_identical_features(checkpoints):
    fbank = torch.randn(2, 1024, 128)
    with torch.no_grad():
        expected = checkpoints["model"](fbank)
        for name in ("hf", "pretrain", "finetune", "old"):
            model = load_eat_model(str(checkpoints[name]))
            assert torch.equal(model(fbank), expected), name
    assert load_eat_model(str(checkpoints["old"])).config.max_length == 64
    assert load_eat_model(str(checkpoints["hf"] / "model.safetensors")).config == CONFIG


def test_config_is_inferred_from_shapes_without_cfg(checkpoints, tmp_path):
    torch.save({"model": checkpoints["fairseq_state"]}, tmp_path / "bare.pt")
    config, _ = load_eat_state_dict(str(tmp_path / "bare.pt"))
    assert config == EATConfig(embed_dim=32, depth=2, num_heads=1)  # heads not in shapes: D / 64, at least 1


def write_fairseq(path, state, config=CONFIG):
    torch.save({"cfg": {"model": fairseq_model_cfg(config)}, "model": state}, path)
    return str(path)


def test_truncated_files(checkpoints, tmp_path):
    data = checkpoints["pretrain"].read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as info:
        load_eat_model(str(tmp_path / "cut.pt"))
    assert str(tmp_path / "cut.pt") in str(info.value)

    folder = tmp_path / "hf_cut"
    folder.mkdir()
    (folder / "config.json").write_text((checkpoints["hf"] / "config.json").read_text())
    weights = (checkpoints["hf"] / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors: cannot read safetensors"):
        load_eat_model(str(folder))


def test_other_models_are_refused_naming_file_and_key(tmp_path):
    other = torch.nn.TransformerEncoderLayer(32, 2).state_dict()
    path = write_fairseq(tmp_path / "other.pt", other)
    with pytest.raises(CheckpointError, match="missing key 'modality_encoders.IMAGE.local_encoder.proj.weight'") as e:
        load_eat_model(path)
    assert path in str(e.value)
    torch.save(other, tmp_path / "bare_state_dict.pt")
    with pytest.raises(CheckpointError, match="no 'model' state dict"):
        load_eat_model(str(tmp_path / "bare_state_dict.pt"))


def test_missing_key(checkpoints, tmp_path):
    state = dict(checkpoints["fairseq_state"])
    del state["blocks.1.norm2.bias"]
    with pytest.raises(CheckpointError, match="missing key 'blocks.1.norm2.bias'"):
        load_eat_model(write_fairseq(tmp_path / "missing.pt", state))
    folder = save_hf_checkpoint(checkpoints["model"], tmp_path / "hf")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "depth": 3}))
    with pytest.raises(CheckpointError, match="missing key 'model.blocks.2.attn.qkv.weight'"):
        load_eat_model(str(folder))


def test_mismatched_shapes_and_unexpected_keys(checkpoints, tmp_path):
    state = checkpoints["fairseq_state"]
    message = r"key 'modality_encoders.IMAGE.local_encoder.proj.weight' has shape \(32, 1, 16, 16\), expected \(48"
    with pytest.raises(CheckpointError, match=message):
        load_eat_model(write_fairseq(tmp_path / "wide.pt", state, EATConfig(embed_dim=48, depth=2, num_heads=2)))
    extra = {**state, **{k.replace("blocks.1.", "blocks.2."): v for k, v in state.items() if k.startswith("blocks.1.")}}
    with pytest.raises(CheckpointError, match="unexpected keys .*blocks.2.attn.qkv.weight"):
        load_eat_model(write_fairseq(tmp_path / "deeper.pt", extra))


def test_position_table_must_be_the_sin_cos_formula(checkpoints, tmp_path):
    key = "modality_encoders.IMAGE.fixed_positional_encoder.positions"
    state = dict(checkpoints["fairseq_state"])
    state[key] = torch.randn_like(state[key])
    with pytest.raises(CheckpointError, match="not EAT's fixed 2-D sin-cos table"):
        load_eat_model(write_fairseq(tmp_path / "learned.pt", state))
    state[key] = sincos_positions(CONFIG)[:, :1000]
    with pytest.raises(CheckpointError, match=r"has shape \(1, 1000, 32\), expected \(1, 6144, 32\)"):
        load_eat_model(write_fairseq(tmp_path / "odd_table.pt", state))


def test_unsupported_architecture_in_cfg(checkpoints, tmp_path):
    cfg = fairseq_model_cfg(CONFIG)
    cfg["layer_norm_first"] = True
    torch.save({"cfg": {"model": cfg}, "model": checkpoints["fairseq_state"]}, tmp_path / "prenorm.pt")
    with pytest.raises(CheckpointError, match="layer_norm_first=True"):
        load_eat_model(str(tmp_path / "prenorm.pt"))


class Payload:
    """Unpickling this would create a file: a checkpoint must never get to run it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickled_code_is_never_run(checkpoints, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": checkpoints["fairseq_state"], "extra_state": Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="evil.pt: refused to unpickle.*globals? .*pathlib"):
        load_eat_model(str(path))
    assert not marker.exists()


def test_eat_features_command_refuses_pickled_code(checkpoints, audio_files, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": checkpoints["fairseq_state"], "extra_state": Payload(marker)}, path)
    cmd = [sys.executable, "-m", "espnet_slam_aac.cli", "eat-features", "--checkpoint", str(path)]
    cmd += ["--wav", str(audio_files["10s_16k"]), "--out", str(tmp_path / "f.npy"), "--device", "cpu"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert f"error: {path}: refused to unpickle" in run.stderr and "pathlib" in run.stderr
    assert not marker.exists() and not (tmp_path / "f.npy").exists()


def test_missing_paths(checkpoints, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_eat_model(str(tmp_path / "nope.pt"))
    with pytest.raises(CheckpointError, match="cannot fetch EAT checkpoint .nobody-here/EAT-nothing."):
        load_eat_model("nobody-here/EAT-nothing")  # tests run with HF_HUB_OFFLINE=1
    folder = tmp_path / "half"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="model.safetensors is missing"):
        load_eat_model(str(folder))


def test_hf_config_and_table_must_agree(checkpoints, tmp_path):
    folder = save_hf_checkpoint(checkpoints["model"], tmp_path / "hf")
    tensors = load_file(str(folder / "model.safetensors"))
    key = "model.fixed_positional_encoder.positions"
    tensors[key] = tensors[key][:, :512].contiguous()
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"expected \(1, 6144, 32\)"):
        load_eat_model(str(folder))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "max_length": 64}))
    assert load_eat_model(str(folder)).config.max_length == 64
