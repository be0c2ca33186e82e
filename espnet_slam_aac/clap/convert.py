"""CLAP checkpoint conversion: SLAM-AAC's ASE and original LAION-CLAP state dicts -> transformers blocks.

Pure functions over state dicts, in the spirit of transformers' conversion scripts: an explicit table of
key renames, a split of HTS-AT's fused ``qkv``, the list of keys that are dropped (front-end weights,
classification head, buffers the model recomputes), then shape checks against the target module. Every
error names the file and the original key. Layouts (metrics_clap.md sections 7.2 and 9.6):

- HTS-AT (both): ``bn0`` -> ``batch_norm``; in ``layers.N.blocks.M``: ``norm1/norm2`` -> ``layernorm_before/
  after``, ``attn.qkv`` -> ``attention.self.{query,key,value}``, ``attn.proj`` -> ``attention.output.dense``,
  ``mlp.fc1/fc2`` -> ``intermediate.dense/output.dense``; ``patch_embed``, ``downsample``, ``norm`` unchanged.
- ASE ``best_model.pt['model']``: ``audio_encoder.audio_enc.`` (HTS-AT) -> ``audio_model.audio_encoder.``,
  ``text_encoder.text_encoder.`` (RoBERTa, no pooler) -> ``text_model.``, ``audio_proj.0/2`` and
  ``text_proj.0/2`` -> ``{audio,text}_projection.linear1/2``; ``temp`` dropped.
- LAION ``.pt['state_dict']`` (optional ``module.`` prefix): ``audio_branch.`` -> ``audio_model.audio_encoder.``,
  ``text_branch.`` -> ``text_model.``, ``{audio,text}_projection.0/2`` -> ``.linear1/2``; the training-only
  ``{audio,text}_transform`` MLPs are dropped.
"""

import math
import re
from pathlib import Path
from typing import Dict, Mapping, Tuple

import torch

from espnet_slam_aac.errors import CheckpointError
from espnet_slam_aac.utils.checkpoint import load_pickle as safe_load_pickle

StateDict = Dict[str, torch.Tensor]
Origins = Dict[str, str]  # converted key -> key in the checkpoint file

_BLOCK = r"(layers\.\d+\.blocks\.\d+)"
HTSAT_RENAMES = [
    (re.compile(r"^bn0\.(.+)$"), r"batch_norm.\1"),
    (re.compile(rf"^{_BLOCK}\.norm1\.(weight|bias)$"), r"\1.layernorm_before.\2"),
    (re.compile(rf"^{_BLOCK}\.norm2\.(weight|bias)$"), r"\1.layernorm_after.\2"),
    (re.compile(rf"^{_BLOCK}\.attn\.proj\.(weight|bias)$"), r"\1.attention.output.dense.\2"),
    (re.compile(rf"^{_BLOCK}\.attn\.relative_position_bias_table$"), r"\1.attention.self.relative_position_bias_table"),
    (re.compile(rf"^{_BLOCK}\.mlp\.fc1\.(weight|bias)$"), r"\1.intermediate.dense.\2"),
    (re.compile(rf"^{_BLOCK}\.mlp\.fc2\.(weight|bias)$"), r"\1.output.dense.\2"),
    (re.compile(r"^(patch_embed\.(?:proj|norm)\.(?:weight|bias))$"), r"\1"),
    (re.compile(r"^(layers\.\d+\.downsample\.(?:reduction\.weight|norm\.weight|norm\.bias))$"), r"\1"),
    (re.compile(r"^(norm\.(?:weight|bias))$"), r"\1"),
]
HTSAT_QKV = re.compile(rf"^{_BLOCK}\.attn\.qkv\.(weight|bias)$")
# front ends (we compute the log-mel ourselves), the AudioSet head, and buffers HF rebuilds identically
HTSAT_DROP = re.compile(
    r"^(audio_feats_extractor|spectrogram_extractor|logmel_extractor|tscam_conv|head|spec_augmenter)\."
    r"|\.attn_mask$|\.relative_position_index$"
)
TEXT_DROP = re.compile(r"^embeddings\.(position_ids|token_type_ids)$")
# buffers a converted checkpoint may lack: the target module's own values are right
OPTIONAL_TARGET_KEYS = re.compile(
    r"\.relative_position_index$|embeddings\.(position_ids|token_type_ids)$|num_batches_tracked$"
)


def load_pickle(path: Path) -> dict:
    """A CLAP ``.pt`` on CPU through the one safe loader (``utils.checkpoint.load_pickle``): nothing in it can
    run code. A file that needs more than tensors and plain data is refused with how to convert it."""
    obj = safe_load_pickle(Path(path))
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict of weights, found {type(obj).__name__}")
    return obj


def _tensors(obj: Mapping, path: Path, entry: str) -> StateDict:
    sd = obj.get(entry) if entry else obj
    if not isinstance(sd, Mapping):
        raise CheckpointError(f"{path}: has no {entry!r} entry of weights (entries: {sorted(obj)[:10]})")
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: entry {entry!r} holds non-tensors, e.g. key {bad[0]!r}")
    return dict(sd)


def rename_htsat(sd: StateDict, prefix: str, target: str, path: Path, out: StateDict, origins: Origins) -> None:
    """HTS-AT keys under ``prefix`` -> ClapAudioEncoder keys under ``target``; qkv split in three."""
    for key, value in sd.items():
        if not key.startswith(prefix):
            continue
        inner = key[len(prefix) :]
        if HTSAT_DROP.search(inner):
            continue
        match = HTSAT_QKV.match(inner)
        if match:
            if value.shape[0] % 3:
                raise CheckpointError(f"{path}: {key!r} of shape {tuple(value.shape)} is not a fused q/k/v")
            for name, part in zip(("query", "key", "value"), value.chunk(3, dim=0)):
                new = f"{target}{match.group(1)}.attention.self.{name}.{match.group(2)}"
                out[new], origins[new] = part.clone(), key
            continue
        for pattern, repl in HTSAT_RENAMES:
            if pattern.match(inner):
                new = target + pattern.sub(repl, inner)
                out[new], origins[new] = value, key
                break
        else:
            raise CheckpointError(f"{path}: unexpected HTS-AT weight {key!r}; is this an HTS-AT audio encoder?")


def _rename_prefix(sd: StateDict, prefix: str, target: str, drop, out: StateDict, origins: Origins) -> None:
    for key, value in sd.items():
        if key.startswith(prefix) and not (drop and drop.search(key[len(prefix) :])):
            new = target + key[len(prefix) :]
            out[new], origins[new] = value, key


def _rename_projection(sd: StateDict, name: str, target: str, path: Path, out: StateDict, origins: Origins):
    for index, linear in (("0", "linear1"), ("2", "linear2")):
        for param in ("weight", "bias"):
            key = f"{name}.{index}.{param}"
            if key not in sd:
                raise CheckpointError(f"{path}: lacks the projection weight {key!r}")
            new = f"{target}.{linear}.{param}"
            out[new], origins[new] = sd[key], key


def ase_to_hf(ckpt: Mapping, path: Path) -> Tuple[StateDict, Origins]:
    """SLAM-AAC CLAP ``best_model.pt`` contents -> keys of ``clap_ase.ASEModel``."""
    sd = _tensors(ckpt, path, "model")
    if not any(k.startswith("audio_encoder.audio_enc.") for k in sd):
        raise CheckpointError(f"{path}: 'model' has no 'audio_encoder.audio_enc.*' weights: not an ASE CLAP")
    out: StateDict = {}
    origins: Origins = {}
    rename_htsat(sd, "audio_encoder.audio_enc.", "audio_model.audio_encoder.", path, out, origins)
    _rename_prefix(sd, "text_encoder.text_encoder.", "text_model.", TEXT_DROP, out, origins)
    _rename_projection(sd, "audio_proj", "audio_projection", path, out, origins)
    _rename_projection(sd, "text_proj", "text_projection", path, out, origins)
    known = ("audio_encoder.audio_enc.", "text_encoder.text_encoder.", "audio_proj.", "text_proj.")
    stray = [k for k in sd if not k.startswith(known) and k != "temp"]
    if stray:
        raise CheckpointError(f"{path}: unexpected ASE weight {stray[0]!r} ({len(stray)} in all)")
    return out, origins


def laion_to_hf(ckpt: Mapping, path: Path) -> Tuple[StateDict, Origins]:
    """Original LAION-CLAP ``.pt`` contents -> keys of transformers' ``ClapModel``."""
    sd = _tensors(ckpt, path, "state_dict" if "state_dict" in ckpt else "")
    sd = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in sd.items()}
    if not any(k.startswith("audio_branch.") for k in sd):
        raise CheckpointError(f"{path}: has no 'audio_branch.*' weights: not a LAION-CLAP checkpoint")
    out: StateDict = {}
    origins: Origins = {}
    rename_htsat(sd, "audio_branch.", "audio_model.audio_encoder.", path, out, origins)
    _rename_prefix(sd, "text_branch.", "text_model.", None, out, origins)
    _rename_projection(sd, "audio_projection", "audio_projection", path, out, origins)
    _rename_projection(sd, "text_projection", "text_projection", path, out, origins)
    for key in ("logit_scale_a", "logit_scale_t"):
        if key in sd:
            out[key], origins[key] = sd[key], key
    known = (
        "audio_branch.",
        "text_branch.",
        "audio_projection.",
        "text_projection.",
        "audio_transform.",
        "text_transform.",
        "logit_scale_",
    )
    stray = [k for k in sd if not k.startswith(known)]
    if stray:
        raise CheckpointError(f"{path}: unexpected LAION-CLAP weight {stray[0]!r} ({len(stray)} in all)")
    return out, origins


def htsat_dims(sd: StateDict, path: Path, prefix: str = "audio_model.audio_encoder.") -> dict:
    """ClapAudioConfig fields read off converted HTS-AT weight shapes (no config file needed)."""
    key = prefix + "patch_embed.proj.weight"
    if key not in sd:
        raise CheckpointError(f"{path}: lacks the HTS-AT patch embedding (converted key {key!r})")
    embed, _, patch, _ = sd[key].shape
    depths: Dict[int, int] = {}
    for k in sd:
        m = re.match(re.escape(prefix) + r"layers\.(\d+)\.blocks\.(\d+)\.", k)
        if m:
            depths[int(m.group(1))] = max(depths.get(int(m.group(1)), 0), int(m.group(2)) + 1)
    stages = sorted(depths)
    if not stages or stages != list(range(len(stages))):
        raise CheckpointError(f"{path}: HTS-AT stages are missing or not numbered 0..N-1: {stages}")
    tables = [sd[f"{prefix}layers.{i}.blocks.0.attention.self.relative_position_bias_table"] for i in stages]
    window = (math.isqrt(tables[0].shape[0]) + 1) // 2
    fc1 = sd[f"{prefix}layers.0.blocks.0.intermediate.dense.weight"]
    return dict(
        patch_embeds_hidden_size=int(embed),
        patch_size=int(patch),
        depths=[depths[i] for i in stages],
        num_attention_heads=[int(t.shape[1]) for t in tables],
        window_size=int(window),
        mlp_ratio=float(fc1.shape[0] / embed),
        num_mel_bins=int(sd[prefix + "batch_norm.weight"].shape[0]),
        hidden_size=int(embed * 2 ** (len(stages) - 1)),
    )


def roberta_dims(sd: StateDict, path: Path, prefix: str = "text_model.", head_dim: int = 64) -> dict:
    """RoBERTa config fields read off converted weight shapes; heads = hidden // ``head_dim`` (64 in all
    BERT/RoBERTa sizes), since no shape records them."""
    key = prefix + "embeddings.word_embeddings.weight"
    if key not in sd:
        raise CheckpointError(f"{path}: lacks the text encoder's word embeddings (converted key {key!r})")
    vocab, hidden = sd[key].shape
    layers = {int(m.group(1)) for k in sd if (m := re.match(re.escape(prefix) + r"encoder\.layer\.(\d+)\.", k))}
    return dict(
        vocab_size=int(vocab),
        hidden_size=int(hidden),
        num_hidden_layers=len(layers),
        num_attention_heads=max(1, int(hidden) // head_dim),
        intermediate_size=int(sd[prefix + "encoder.layer.0.intermediate.dense.weight"].shape[0]),
        max_position_embeddings=int(sd[prefix + "embeddings.position_embeddings.weight"].shape[0]),
        type_vocab_size=int(sd[prefix + "embeddings.token_type_embeddings.weight"].shape[0]),
    )


def load_converted(module: torch.nn.Module, sd: StateDict, origins: Origins, path: Path) -> None:
    """Load converted weights into ``module``: every key must fit by name and shape, and every weight of
    the module must be given (except buffers it rebuilds itself)."""
    target = module.state_dict()
    for key, value in sd.items():
        origin = origins.get(key, key)
        if key not in target:
            raise CheckpointError(f"{path}: weight {origin!r} (as {key!r}) has no place in the model")
        if tuple(target[key].shape) != tuple(value.shape):
            raise CheckpointError(
                f"{path}: weight {origin!r} has shape {tuple(value.shape)}, the model expects "
                f"{tuple(target[key].shape)} for {key!r}: wrong architecture or config"
            )
    missing = [k for k in target if k not in sd and not OPTIONAL_TARGET_KEYS.search(k)]
    if missing:
        raise CheckpointError(
            f"{path}: lacks {len(missing)} weights of the model, e.g. {missing[:3]} (converted names): "
            "incomplete or of another architecture"
        )
    module.load_state_dict(sd, strict=False)
