"""SLAM-AAC's CLAP (the WavCaps-style "ASE"): HTS-AT audio tower + RoBERTa text tower + two projections.

SLAM-LLM's ``ASE`` (``src/slam_llm/models/CLAP/ase_model.py``) rebuilt from transformers blocks:

- audio: 32 kHz log-mel (``clap_frontend.ASE_MEL``) -> ``ClapAudioModel`` (HTS-AT: ``bn0``, bicubic stretch to
  1024 frames, Swin stages) -> mean over all final positions (= the time-mean of HTS-AT's
  ``fine_grained_embedding``, which ``encode_audio`` takes) -> ``audio_proj`` -> L2 norm;
- text: RoBERTa tokens (``max_length=30``, no text preprocessing) -> ``RobertaModel`` without pooler ->
  first-token hidden state -> ``text_proj`` -> L2 norm;
- ``audio_proj`` / ``text_proj`` = Linear -> ReLU -> Linear (``ClapProjectionLayer``), width ``embed_size``.

A checkpoint is ``best_model.pt`` (weights under ``'model'``) with ``clap_config.yaml`` beside it. The
architecture comes from weight shapes (clap_convert.htsat_dims / roberta_dims); the YAML gives the front end
(``audio_args``), ``embed_size`` and the text encoder family. One extension to SLAM-LLM's YAML, ignored by
SLAM-LLM itself: ``text_encoder_args.config`` (RobertaConfig overrides, e.g. ``num_attention_heads``).
"""

from pathlib import Path
from typing import Optional, Tuple

import torch
from torch import nn
from transformers import ClapAudioConfig, ClapAudioModel, ClapTextConfig, RobertaConfig, RobertaModel
from transformers.models.clap.modeling_clap import ClapProjectionLayer

from espnet_slam_aac.clap import convert as clap_convert
from espnet_slam_aac.clap.frontend import ASE_MEL, MelConfig
from espnet_slam_aac.errors import CheckpointError, ConfigError
from espnet_slam_aac.utils.config import read_yaml

# RobertaConfig values of the released RoBERTa checkpoints that RobertaConfig's defaults get wrong
ROBERTA_FAMILY = dict(layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2)
ROBERTA_TYPES = ("roberta-base", "roberta-large", "distilroberta-base")
MAX_TEXT_TOKENS = 30  # SLAM-LLM TextEncoder: padding="longest", truncation=True, max_length=30


class ASEModel(nn.Module):
    """The ASE's two towers; ``embed_audio`` / ``embed_text`` return L2-normalised (B, embed_size)."""

    def __init__(self, audio_config: ClapAudioConfig, text_config: RobertaConfig, embed_size: int):
        super().__init__()
        audio_config.projection_dim = embed_size
        self.audio_model = ClapAudioModel(audio_config)
        self.audio_projection = ClapProjectionLayer(audio_config)
        self.text_model = RobertaModel(text_config, add_pooling_layer=False)
        self.text_projection = ClapProjectionLayer(
            ClapTextConfig(hidden_size=text_config.hidden_size, projection_dim=embed_size)
        )
        self.audio_config = audio_config
        self.text_vocab_size = text_config.vocab_size

    def embed_audio(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, frames, n_mels) log-mel of equal length -> (B, E)."""
        pooled = self.audio_model(input_features=mel.unsqueeze(1)).pooler_output
        return nn.functional.normalize(self.audio_projection(pooled), dim=-1)

    def embed_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids + mask -> (B, E) from the first token's last hidden state."""
        hidden = self.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return nn.functional.normalize(self.text_projection(hidden[:, 0, :]), dim=-1)


def read_config(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"{path}: no such file; the SLAM-AAC CLAP needs the clap_config.yaml it was trained with "
            "next to best_model.pt (or pass config=PATH)"
        )
    return read_yaml(path, "CLAP config")


def mel_config(config: dict, path: Path) -> MelConfig:
    """``audio_args`` of clap_config.yaml -> the front end (torchlibrosa's names and its amin default)."""
    args = config.get("audio_args") or {}
    try:
        return MelConfig(
            sample_rate=int(args.get("sr", ASE_MEL.sample_rate)),
            n_fft=int(args.get("n_fft", ASE_MEL.n_fft)),
            hop_length=int(args.get("hop_length", ASE_MEL.hop_length)),
            n_mels=int(args.get("n_mels", ASE_MEL.n_mels)),
            f_min=float(args.get("f_min", ASE_MEL.f_min)),
            f_max=float(args.get("f_max", ASE_MEL.f_max)),
            amin=float(args.get("amin", ASE_MEL.amin)),
        )
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path}: bad value in audio_args: {e}") from e


def build_ase(
    checkpoint: Path, ckpt: Optional[dict] = None, config_path: Optional[Path] = None
) -> Tuple[ASEModel, MelConfig, dict]:
    """Load ``best_model.pt`` (or its already unpickled contents ``ckpt``) with ``clap_config.yaml`` (by
    default beside it) -> (model in eval mode, front end, the YAML as a dict)."""
    checkpoint = Path(checkpoint)
    config_path = Path(config_path) if config_path else checkpoint.with_name("clap_config.yaml")
    config = read_config(config_path)
    audio_type = (config.get("audio_encoder_args") or {}).get("type")
    if audio_type != "transformer":
        raise ConfigError(
            f"{config_path}: audio_encoder_args.type is {audio_type!r}; only the HTS-AT audio encoder "
            "('transformer'), which SLAM-AAC's CLAP uses, is supported"
        )
    text_args = config.get("text_encoder_args") or {}
    if text_args.get("type") not in ROBERTA_TYPES:
        raise ConfigError(
            f"{config_path}: text_encoder_args.type is {text_args.get('type')!r}; supported: {ROBERTA_TYPES}"
        )
    mel = mel_config(config, config_path)
    if ckpt is None:
        ckpt = clap_convert.load_pickle(checkpoint)
    sd, origins = clap_convert.ase_to_hf(ckpt, checkpoint)
    audio_dims = clap_convert.htsat_dims(sd, checkpoint)
    if audio_dims["num_mel_bins"] != mel.n_mels:
        raise CheckpointError(
            f"{checkpoint}: bn0 has {audio_dims['num_mel_bins']} mel bins, {config_path} says "
            f"audio_args.n_mels={mel.n_mels}"
        )
    text_dims = {**clap_convert.roberta_dims(sd, checkpoint), **ROBERTA_FAMILY, **(text_args.get("config") or {})}
    embed_size = int(sd["audio_projection.linear1.weight"].shape[0])
    if "embed_size" in config and int(config["embed_size"]) != embed_size:
        raise CheckpointError(
            f"{checkpoint}: audio_proj.0 has {embed_size} outputs, {config_path} says embed_size={config['embed_size']}"
        )
    try:
        model = ASEModel(ClapAudioConfig(**audio_dims), RobertaConfig(**text_dims), embed_size)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{config_path}: cannot build the CLAP from these settings: {e}") from e
    clap_convert.load_converted(model, sd, origins, checkpoint)
    return model.eval(), mel, config
