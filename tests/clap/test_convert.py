"""CLAP checkpoint loading: upstream key layouts land where they belong; bad files fail naming file and key."""

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml

from espnet_slam_aac.clap.model import load_clap
from espnet_slam_aac.errors import CheckpointError, ConfigError
from espnet_slam_aac.testing import tiny_clap as clap_tiny

E, DEPTHS, HEADS, WINDOW, MELS = 16, (2, 2), (2, 4), 8, 64  # tiny HTS-AT
H, LAYERS, FFN, POSITIONS = 128, 2, 256, 80  # tiny RoBERTa
EMBED = 24


def upstream_ase_state_dict(vocab: int, seed: int = 0) -> dict:
    """SLAM-LLM ``ASE.state_dict()`` for a tiny config, written from SLAM-LLM's module names (ase_model.py,
    audio_encoder.py, htsat.py, feature_extractor.py, text_encoder.py), with every buffer it saves."""
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return 0.05 * torch.randn(shape, generator=gen)

    a, sd = "audio_encoder.audio_enc.", {}
    sd[a + "audio_feats_extractor.mel_trans.stft.conv_real.weight"] = rnd(513, 1, 1024)
    sd[a + "audio_feats_extractor.mel_trans.stft.conv_imag.weight"] = rnd(513, 1, 1024)
    sd[a + "audio_feats_extractor.log_trans.melW"] = rnd(513, MELS)
    sd.update(
        {
            a + "bn0.weight": 1 + rnd(MELS),
            a + "bn0.bias": rnd(MELS),
            a + "bn0.running_mean": -40 + rnd(MELS),
            a + "bn0.running_var": 200 + rnd(MELS).abs(),
            a + "bn0.num_batches_tracked": torch.tensor(7),
        }
    )
    sd.update(
        {
            a + "patch_embed.proj.weight": rnd(E, 1, 4, 4),
            a + "patch_embed.proj.bias": rnd(E),
            a + "patch_embed.norm.weight": 1 + rnd(E),
            a + "patch_embed.norm.bias": rnd(E),
        }
    )
    resolution = 64
    for i, (depth, heads) in enumerate(zip(DEPTHS, HEADS)):
        dim = E * 2**i
        for j in range(depth):
            b = f"{a}layers.{i}.blocks.{j}."
            sd.update(
                {
                    b + "norm1.weight": 1 + rnd(dim),
                    b + "norm1.bias": rnd(dim),
                    b + "attn.relative_position_bias_table": rnd((2 * WINDOW - 1) ** 2, heads),
                    b + "attn.relative_position_index": torch.randint(0, 225, (64, 64), generator=gen),
                    b + "attn.qkv.weight": rnd(3 * dim, dim),
                    b + "attn.qkv.bias": rnd(3 * dim),
                    b + "attn.proj.weight": rnd(dim, dim),
                    b + "attn.proj.bias": rnd(dim),
                    b + "norm2.weight": 1 + rnd(dim),
                    b + "norm2.bias": rnd(dim),
                    b + "mlp.fc1.weight": rnd(4 * dim, dim),
                    b + "mlp.fc1.bias": rnd(4 * dim),
                    b + "mlp.fc2.weight": rnd(dim, 4 * dim),
                    b + "mlp.fc2.bias": rnd(dim),
                }
            )
            if j % 2:  # shifted-window blocks register their mask as a buffer
                sd[b + "attn_mask"] = rnd((resolution // WINDOW) ** 2, WINDOW * WINDOW, WINDOW * WINDOW)
        if i < len(DEPTHS) - 1:
            d = f"{a}layers.{i}.downsample."
            sd.update(
                {
                    d + "reduction.weight": rnd(2 * dim, 4 * dim),
                    d + "norm.weight": 1 + rnd(4 * dim),
                    d + "norm.bias": rnd(4 * dim),
                }
            )
        resolution //= 2
    final = E * 2 ** (len(DEPTHS) - 1)
    sd.update(
        {
            a + "norm.weight": 1 + rnd(final),
            a + "norm.bias": rnd(final),
            a + "tscam_conv.weight": rnd(527, final, 2, 3),
            a + "tscam_conv.bias": rnd(527),
            a + "head.weight": rnd(527, 527),
            a + "head.bias": rnd(527),
        }
    )
    t = "text_encoder.text_encoder."
    sd.update(
        {
            t + "embeddings.position_ids": torch.arange(POSITIONS)[None],
            t + "embeddings.word_embeddings.weight": rnd(vocab, H),
            t + "embeddings.position_embeddings.weight": rnd(POSITIONS, H),
            t + "embeddings.token_type_embeddings.weight": rnd(1, H),
            t + "embeddings.LayerNorm.weight": 1 + rnd(H),
            t + "embeddings.LayerNorm.bias": rnd(H),
        }
    )
    for k in range(LAYERS):
        L = f"{t}encoder.layer.{k}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            sd.update({f"{L}{name}.weight": rnd(H, H), f"{L}{name}.bias": rnd(H)})
        sd.update(
            {
                L + "attention.output.LayerNorm.weight": 1 + rnd(H),
                L + "attention.output.LayerNorm.bias": rnd(H),
                L + "intermediate.dense.weight": rnd(FFN, H),
                L + "intermediate.dense.bias": rnd(FFN),
                L + "output.dense.weight": rnd(H, FFN),
                L + "output.dense.bias": rnd(H),
                L + "output.LayerNorm.weight": 1 + rnd(H),
                L + "output.LayerNorm.bias": rnd(H),
            }
        )
    for proj, width in (("audio_proj", final), ("text_proj", H)):
        sd.update(
            {
                f"{proj}.0.weight": rnd(EMBED, width),
                f"{proj}.0.bias": rnd(EMBED),
                f"{proj}.2.weight": rnd(EMBED, EMBED),
                f"{proj}.2.bias": rnd(EMBED),
            }
        )
    sd["temp"] = torch.tensor(0.07)
    return sd


@pytest.fixture
def upstream_ase(tmp_path, tiny_claps):
    """A folder in SLAM-AAC's layout: best_model.pt (+ optimizer and epoch) and clap_config.yaml."""
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_claps["ase"] / name, tmp_path / name)
    vocab = len(load_clap(str(tiny_claps["ase"])).tokenizer)
    sd = upstream_ase_state_dict(vocab)
    torch.save(
        {"model": sd, "optimizer": {"state": {}, "param_groups": []}, "epoch": np.int64(12)}, tmp_path / "best_model.pt"
    )
    config = {**clap_tiny.ase_config_yaml(), "embed_size": EMBED}
    (tmp_path / "clap_config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return tmp_path, sd


def test_ase_best_model_in_slam_llm_key_layout_lands_in_the_matching_transformers_weights(upstream_ase):
    folder, sd = upstream_ase
    model = load_clap(str(folder)).tower
    ours = model.state_dict()
    a, t, dim = "audio_encoder.audio_enc.", "text_encoder.text_encoder.", 2 * E
    qkv = sd[a + "layers.1.blocks.1.attn.qkv.weight"]
    pairs = {
        "audio_model.audio_encoder.layers.1.blocks.1.attention.self.query.weight": qkv[:dim],
        "audio_model.audio_encoder.layers.1.blocks.1.attention.self.key.weight": qkv[dim : 2 * dim],
        "audio_model.audio_encoder.layers.1.blocks.1.attention.self.value.weight": qkv[2 * dim :],
        "audio_model.audio_encoder.layers.1.blocks.1.attention.output.dense.weight": sd[
            a + "layers.1.blocks.1.attn.proj.weight"
        ],
        "audio_model.audio_encoder.layers.0.blocks.0.intermediate.dense.bias": sd[a + "layers.0.blocks.0.mlp.fc1.bias"],
        "audio_model.audio_encoder.layers.0.blocks.0.output.dense.weight": sd[a + "layers.0.blocks.0.mlp.fc2.weight"],
        "audio_model.audio_encoder.layers.0.blocks.1.layernorm_after.weight": sd[a + "layers.0.blocks.1.norm2.weight"],
        "audio_model.audio_encoder.layers.0.downsample.reduction.weight": sd[
            a + "layers.0.downsample.reduction.weight"
        ],
        "audio_model.audio_encoder.batch_norm.running_var": sd[a + "bn0.running_var"],
        "audio_model.audio_encoder.norm.bias": sd[a + "norm.bias"],
        "text_model.encoder.layer.1.output.LayerNorm.weight": sd[t + "encoder.layer.1.output.LayerNorm.weight"],
        "audio_projection.linear1.weight": sd["audio_proj.0.weight"],
        "text_projection.linear2.bias": sd["text_proj.2.bias"],
    }
    for key, value in pairs.items():
        assert torch.equal(ours[key], value), key
    dropped = (
        "audio_feats_extractor",
        "tscam_conv",
        "head.",
        "attn_mask",
        "relative_position_index",
        "position_ids",
        "temp",
        "attn.qkv",
    )
    kept = [k for k in sd if not any(d in k for d in dropped)]
    values = list(ours.values())
    assert all(any(v.shape == sd[k].shape and torch.equal(v, sd[k]) for v in values) for k in kept)
    # the buffers HF rebuilds are the standard ones, not the checkpoint's
    index = ours["audio_model.audio_encoder.layers.0.blocks.0.attention.self.relative_position_index"]
    assert index.min().item() == 0 and index.max().item() == (2 * WINDOW - 1) ** 2 - 1


def test_laion_pt_with_module_prefix_and_training_heads_loads(tmp_path, tiny_claps):
    ckpt = torch.load(tiny_claps["laion"], weights_only=True)
    sd = {f"module.{k}": v for k, v in ckpt["state_dict"].items()}
    sd["module.text_transform.sequential.0.weight"] = torch.zeros(4, 4)  # laion's training-only MLPs
    sd["module.audio_branch.spectrogram_extractor.stft.conv_real.weight"] = torch.zeros(513, 1, 1024)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_claps["laion"].parent / name, tmp_path / name)
    torch.save({"epoch": 3, "name": "run", "state_dict": sd}, tmp_path / "630k-audioset-best.pt")
    clap = load_clap(str(tmp_path / "630k-audioset-best.pt"))
    reference = load_clap(str(tiny_claps["laion"]))
    texts = ["a low tone beeps twice"]
    torch.testing.assert_close(clap.text_embeddings(texts), reference.text_embeddings(texts), atol=0, rtol=0)


def _ase_copy(tiny_claps, tmp_path, edit):
    for path in tiny_claps["ase"].iterdir():
        shutil.copy(path, tmp_path / path.name)
    ckpt = torch.load(tmp_path / "best_model.pt", weights_only=True)
    edit(ckpt["model"])
    torch.save(ckpt, tmp_path / "best_model.pt")
    return tmp_path


def test_checkpoint_lacking_a_weight_names_the_file_and_the_weight(tmp_path, tiny_claps):
    key = "text_encoder.text_encoder.encoder.layer.1.output.dense.bias"
    folder = _ase_copy(tiny_claps, tmp_path, lambda sd: sd.pop(key))
    match = r"best_model\.pt: lacks 1 weights.*text_model\.encoder\.layer\.1\.output\.dense\.bias"
    with pytest.raises(CheckpointError, match=match):
        load_clap(str(folder))


def test_checkpoint_with_a_wrong_shape_names_the_original_key(tmp_path, tiny_claps):
    def edit(sd):
        sd["audio_encoder.audio_enc.layers.1.blocks.0.mlp.fc2.weight"] = torch.zeros(3, 3)

    match = r"'audio_encoder\.audio_enc\.layers\.1\.blocks\.0\.mlp\.fc2\.weight' has shape \(3, 3\)"
    with pytest.raises(CheckpointError, match=match):
        load_clap(str(_ase_copy(tiny_claps, tmp_path, edit)))


def test_checkpoint_with_an_unknown_audio_weight_is_refused(tmp_path, tiny_claps):
    def edit(sd):
        sd["audio_encoder.audio_enc.absolute_pos_embed"] = torch.zeros(1, 4096, 16)

    with pytest.raises(CheckpointError, match="unexpected HTS-AT weight 'audio_encoder.audio_enc.absolute_pos_embed'"):
        load_clap(str(_ase_copy(tiny_claps, tmp_path, edit)))


def test_truncated_checkpoint_is_a_checkpoint_error_naming_the_file(tmp_path, tiny_claps):
    folder = _ase_copy(tiny_claps, tmp_path, lambda sd: None)
    data = (folder / "best_model.pt").read_bytes()
    (folder / "best_model.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"best_model\.pt: not a readable torch checkpoint"):
        load_clap(str(folder))


class _Payload:
    """Unpickling this would touch ``marker``: what a malicious checkpoint's code could do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickle_carrying_code_is_refused_and_never_run(tmp_path, tiny_claps):
    folder = _ase_copy(tiny_claps, tmp_path, lambda sd: None)
    ckpt = torch.load(folder / "best_model.pt", weights_only=True)
    torch.save({**ckpt, "args": argparse.Namespace(lr=1e-4)}, folder / "best_model.pt")
    assert load_clap(str(folder)).backend == "ase"  # training args, as WavCaps/fairseq pickle them, are data
    marker = tmp_path / "pwned"
    torch.save({**ckpt, "extra": _Payload(marker)}, folder / "best_model.pt")
    with pytest.raises(CheckpointError, match=r"best_model\.pt: refused to unpickle.*globals? .*pathlib"):
        load_clap(str(folder))
    assert not marker.exists()


def test_clap_refine_command_refuses_a_pickle_carrying_code(tmp_path, tiny_claps):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({**torch.load(tiny_claps["laion"], weights_only=True), "extra": _Payload(marker)}, evil)
    (tmp_path / "data").mkdir()
    soundfile.write(tmp_path / "a.wav", np.full(16000, 0.1, dtype=np.float32), 16000)
    (tmp_path / "data" / "wav.scp").write_text(f"a {tmp_path / 'a.wav'}\n", encoding="utf-8")
    candidate = {"key": "a", "candidates": [{"text": "a tone", "beam_size": 2, "logprob": -1.0, "length": 2}]}
    (tmp_path / "candidates.jsonl").write_text(json.dumps(candidate) + "\n", encoding="utf-8")
    cmd = [sys.executable, "-m", "espnet_slam_aac.cli", "clap-refine", "--clap", str(evil)]
    cmd += ["--candidates", str(tmp_path / "candidates.jsonl"), "--data_dir", str(tmp_path / "data")]
    run = subprocess.run(cmd + ["--out_dir", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert f"{evil}: refused to unpickle" in run.stderr and not marker.exists()


def test_ase_without_its_config_yaml_says_what_is_missing(tmp_path, tiny_claps):
    folder = _ase_copy(tiny_claps, tmp_path, lambda sd: None)
    (folder / "clap_config.yaml").unlink()
    with pytest.raises(ConfigError, match="clap_config.yaml"):
        load_clap(str(folder / "best_model.pt"))
    config = tmp_path / "elsewhere.yaml"
    config.write_text(yaml.safe_dump(clap_tiny.ase_config_yaml()), encoding="utf-8")
    assert load_clap(str(folder / "best_model.pt"), config=str(config)).backend == "ase"


def test_ase_config_with_a_cnn_audio_encoder_is_refused(tmp_path, tiny_claps):
    folder = _ase_copy(tiny_claps, tmp_path, lambda sd: None)
    config = clap_tiny.ase_config_yaml()
    config["audio_encoder_args"]["type"] = "cnn"
    (folder / "clap_config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    with pytest.raises(ConfigError, match="only the HTS-AT"):
        load_clap(str(folder))


def test_missing_checkpoint_path_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no such CLAP checkpoint"):
        load_clap(str(tmp_path / "nope" / "best_model.pt"))
    with pytest.raises(CheckpointError, match="neither a ClapModel folder"):
        load_clap(str(tmp_path))
