"""Tiny random CLAPs on disk, in every format ``load_clap`` reads, for tests and the mini recipe.

``build_tiny_clap(out_dir, fmt)`` trains a small RoBERTa-style byte-level BPE tokenizer on the spot
(captions of ``synth``), builds a CLAP with random weights and writes it as

- ``"ase"``: SLAM-AAC's layout: ``best_model.pt`` (``{'model': state dict}`` in SLAM-LLM's key names) +
  ``clap_config.yaml`` + tokenizer files; returns the folder;
- ``"laion"``: an original LAION-CLAP ``clap.pt`` (``{'state_dict': ...}``, laion key names) + tokenizer
  files; returns the ``.pt`` path;
- ``"hf"``: a transformers ``save_pretrained`` folder (model, tokenizer, preprocessor); returns the folder.

The same ``seed`` gives the same weights in every format (the ASE shares the LAION model's audio tower and
audio projection), so the format loaders can be checked against each other. From the shell::

    python -c "from espnet_slam_aac.testing.tiny_clap import build_tiny_clap; print(build_tiny_clap('exp/clap', 'ase'))"
"""

import re
from pathlib import Path
from typing import Dict

import numpy as np
import torch
import yaml

from espnet_slam_aac.clap.ase import ASEModel
from espnet_slam_aac.testing import synth

AUDIO = dict(patch_embeds_hidden_size=16, depths=[2, 2], num_attention_heads=[2, 4], window_size=8, hidden_size=32)
TEXT = dict(
    hidden_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=256,
    max_position_embeddings=80,
    layer_norm_eps=1e-5,
)
EMBED_SIZE = 32
VOCAB_SIZE = 400
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's ids 0..4


def train_tokenizer(out_dir: Path, vocab_size: int = VOCAB_SIZE, seed: int = 0):
    """A byte-level BPE tokenizer with RoBERTa's special tokens, saved to ``out_dir`` and returned."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizer

    rng = np.random.default_rng(seed)
    corpus = [c for _ in range(200) for c in synth.captions_for(synth.random_events(rng), 3)]
    corpus += ["a dog barks while birds chirp in the background", "people talk and a car passes by"]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        corpus, vocab_size=vocab_size, min_frequency=1, special_tokens=SPECIALS, show_progress=False
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bpe.save_model(str(out_dir))
    tokenizer = RobertaTokenizer.from_pretrained(str(out_dir), model_max_length=512)
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Perturb every weight (HF's init leaves biases, bias tables and norms at constants that would hide
    a mis-mapped key) and give batch norms the statistics of dB-scaled log-mels."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=gen))
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(-40.0 + 5.0 * torch.randn(buf.shape, generator=gen))
            elif name.endswith("running_var"):
                buf.copy_(200.0 + 50.0 * torch.rand(buf.shape, generator=gen))


def tiny_laion_model(vocab_size: int, seed: int = 0):
    from transformers import ClapConfig, ClapModel

    config = ClapConfig(text_config={**TEXT, "vocab_size": vocab_size}, audio_config=AUDIO, projection_dim=EMBED_SIZE)
    torch.manual_seed(seed)
    model = ClapModel(config)
    randomize(model, seed)
    return model.eval()


def tiny_ase_model(vocab_size: int, seed: int = 0) -> ASEModel:
    from transformers import ClapAudioConfig, RobertaConfig

    laion = tiny_laion_model(vocab_size, seed)
    torch.manual_seed(seed + 1)
    text = RobertaConfig(
        vocab_size=vocab_size, pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1, **TEXT
    )
    model = ASEModel(ClapAudioConfig(**AUDIO), text, EMBED_SIZE)
    randomize(model, seed + 1)
    model.audio_model.load_state_dict(laion.audio_model.state_dict())
    model.audio_projection.load_state_dict(laion.audio_projection.state_dict())
    return model.eval()


# transformers ClapAudioEncoder names -> HTS-AT names (the inverse of clap_convert.HTSAT_RENAMES)
_TO_HTSAT = [
    (r"^batch_norm\.", "bn0."),
    (r"\.layernorm_before\.", ".norm1."),
    (r"\.layernorm_after\.", ".norm2."),
    (r"\.attention\.self\.(relative_position_bias_table|relative_position_index)$", r".attn.\1"),
    (r"\.attention\.output\.dense\.", ".attn.proj."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."),
    (r"(blocks\.\d+)\.output\.dense\.", r"\1.mlp.fc2."),
]


def to_htsat(sd: Dict[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    """ClapAudioEncoder state dict -> HTS-AT key names under ``prefix``, q/k/v fused into ``attn.qkv``."""
    out = {}
    for key, value in sd.items():
        qkv = re.match(r"^(.*)\.attention\.self\.(query|key|value)\.(weight|bias)$", key)
        if qkv:
            if qkv.group(2) == "query":
                parts = [sd[f"{qkv.group(1)}.attention.self.{n}.{qkv.group(3)}"] for n in ("query", "key", "value")]
                out[f"{prefix}{qkv.group(1)}.attn.qkv.{qkv.group(3)}"] = torch.cat(parts, dim=0)
            continue
        for pattern, repl in _TO_HTSAT:
            key = re.sub(pattern, repl, key)
        out[prefix + key] = value.clone()
    return out


def _projection(module: torch.nn.Module, name: str) -> Dict[str, torch.Tensor]:
    return {
        f"{name}.{i}.{p}": getattr(getattr(module, lin), p).detach().clone()
        for i, lin in (("0", "linear1"), ("2", "linear2"))
        for p in ("weight", "bias")
    }


def ase_state_dict(model: ASEModel) -> Dict[str, torch.Tensor]:
    """``ASEModel`` -> SLAM-LLM ``ASE.state_dict()`` key names (as saved under ``best_model.pt['model']``)."""
    sd = to_htsat(model.audio_model.audio_encoder.state_dict(), "audio_encoder.audio_enc.")
    sd.update({f"text_encoder.text_encoder.{k}": v.clone() for k, v in model.text_model.state_dict().items()})
    sd.update(_projection(model.audio_projection, "audio_proj"))
    sd.update(_projection(model.text_projection, "text_proj"))
    sd["temp"] = torch.tensor(0.07)
    return sd


def laion_state_dict(model) -> Dict[str, torch.Tensor]:
    """transformers ``ClapModel`` -> laion_clap ``CLAP.state_dict()`` key names."""
    sd = to_htsat(model.audio_model.audio_encoder.state_dict(), "audio_branch.")
    sd.update({f"text_branch.{k}": v.clone() for k, v in model.text_model.state_dict().items()})
    sd.update(_projection(model.audio_projection, "audio_projection"))
    sd.update(_projection(model.text_projection, "text_projection"))
    sd["logit_scale_a"] = model.logit_scale_a.detach().clone()
    sd["logit_scale_t"] = model.logit_scale_t.detach().clone()
    return sd


def ase_config_yaml() -> dict:
    """clap_config.yaml as SLAM-LLM's ASE reads it (DRCap's public config, trimmed to what matters)."""
    return {
        "embed_size": EMBED_SIZE,
        "temp": 0.07,
        "embed_regularization": True,
        "audio_args": {
            "sr": 32000,
            "n_fft": 1024,
            "hop_length": 320,
            "f_min": 50,
            "f_max": 14000,
            "n_mels": 64,
            "max_length": 10,
            "mono": True,
        },
        "audio_encoder_args": {"type": "transformer", "model": "htsat", "pretrained": False, "freeze": False},
        "text_encoder_args": {"type": "roberta-base", "freeze": False},
        "training": {"spec_augmentation": True},
    }


def build_tiny_clap(out_dir, fmt: str = "ase", seed: int = 0) -> Path:
    """Write a tiny random CLAP in format ``fmt`` (ase | laion | hf) to ``out_dir``; return what to pass
    to ``load_clap``."""
    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(out_dir, seed=seed)
    if fmt == "ase":
        model = tiny_ase_model(len(tokenizer), seed)
        torch.save({"model": ase_state_dict(model), "epoch": 1}, out_dir / "best_model.pt")
        (out_dir / "clap_config.yaml").write_text(yaml.safe_dump(ase_config_yaml(), sort_keys=False), encoding="utf-8")
        return out_dir
    if fmt == "laion":
        model = tiny_laion_model(len(tokenizer), seed)
        torch.save({"epoch": 1, "state_dict": laion_state_dict(model)}, out_dir / "clap.pt")
        return out_dir / "clap.pt"
    if fmt == "hf":
        from transformers import ClapFeatureExtractor

        tiny_laion_model(len(tokenizer), seed).save_pretrained(str(out_dir))
        extractor = ClapFeatureExtractor(frequency_min=50, truncation="rand_trunc", padding="repeatpad")
        extractor.save_pretrained(str(out_dir))
        return out_dir
    raise ValueError(f"fmt must be 'ase', 'laion' or 'hf', not {fmt!r}")
