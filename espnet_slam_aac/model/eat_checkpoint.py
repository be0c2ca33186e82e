"""EAT checkpoints -> ``EATModel``, without fairseq: an explicit key table per layout, plus shape checks.

Layouts (detected from the files):

- ``fairseq-pretrain``: ``torch.save`` dict, ``['model']`` keys unprefixed (``modality_encoders.IMAGE.*``,
  ``blocks.*``), plus the pre-training decoder and ``_ema`` (ignored); hyper-parameters in ``['cfg']['model']``.
- ``fairseq-finetune``: the same keys prefixed ``model.``, plus the AudioSet head ``fc_norm.*``/``head.*``
  (ignored); hyper-parameters in ``['cfg']['model']['pretrained_model_args']['model']``.
- ``hf``: the Hugging Face release, a folder with ``config.json`` and ``model.safetensors``, keys ``model.*``.

fairseq pickles load with ``utils.checkpoint.load_pickle`` (``weights_only=True`` and the one allow-list of what
fairseq trainer checkpoints hold besides tensors and plain containers); nothing in a checkpoint can run code.
The stored sin-cos position table (6144 rows, 512 in pre-April-2024 files) is checked against the formula and
not loaded: ``EATModel`` regenerates it.
"""

import json
import zipfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import torch

from espnet_slam_aac.errors import CheckpointError, ConfigError
from espnet_slam_aac.model.eat import EATConfig, EATModel, sincos_positions
from espnet_slam_aac.utils.checkpoint import is_hub_id, load_pickle, snapshot

# native key -> key in the fairseq pre-training layout (the fine-tuned layout adds "model.")
FAIRSEQ_KEYS = {
    "patch_embed.weight": "modality_encoders.IMAGE.local_encoder.proj.weight",
    "patch_embed.bias": "modality_encoders.IMAGE.local_encoder.proj.bias",
    "cls_token": "modality_encoders.IMAGE.extra_tokens",
    "pre_norm.weight": "modality_encoders.IMAGE.context_encoder.norm.weight",
    "pre_norm.bias": "modality_encoders.IMAGE.context_encoder.norm.bias",
}
# native key -> key in the Hugging Face release
HF_KEYS = {
    "patch_embed.weight": "model.local_encoder.proj.weight",
    "patch_embed.bias": "model.local_encoder.proj.bias",
    "cls_token": "model.extra_tokens",
    "pre_norm.weight": "model.pre_norm.weight",
    "pre_norm.bias": "model.pre_norm.bias",
}
# per block, the same names in every layout, under "blocks.{i}." (fairseq) or "model.blocks.{i}." (HF)
BLOCK_KEYS = [
    f"{part}.{kind}"
    for part in ("attn.qkv", "attn.proj", "norm1", "mlp.fc1", "mlp.fc2", "norm2")
    for kind in ("weight", "bias")
]
POSITION_KEY = {
    "fairseq-pretrain": "modality_encoders.IMAGE.fixed_positional_encoder.positions",
    "fairseq-finetune": "model.modality_encoders.IMAGE.fixed_positional_encoder.positions",
    "hf": "model.fixed_positional_encoder.positions",
}
# keys of other parts of the network, dropped: pre-training decoder and EMA teacher, AudioSet classifier
IGNORED = {
    "fairseq-pretrain": ("modality_encoders.IMAGE.decoder.", "_ema", "recon_proj.", "cls_proj.", "center"),
    "fairseq-finetune": ("fc_norm.", "head.", "model.modality_encoders.IMAGE.decoder.", "model._ema"),
    "hf": ("model.fc_norm.", "model.head."),
}


def block_prefix(layout: str) -> str:
    return "blocks." if layout == "fairseq-pretrain" else "model.blocks."


def key_table(layout: str, depth: int) -> Dict[str, str]:
    """Native key -> key in ``layout`` for a ``depth``-block EAT (positions excluded)."""
    if layout == "hf":
        table = dict(HF_KEYS)
    else:
        prefix = "model." if layout == "fairseq-finetune" else ""
        table = {name: prefix + key for name, key in FAIRSEQ_KEYS.items()}
    for i in range(depth):
        table.update({f"blocks.{i}.{k}": f"{block_prefix(layout)}{i}.{k}" for k in BLOCK_KEYS})
    return table


def resolve_checkpoint(spec: str) -> Path:
    """A local file or folder, or a Hub id (``org/name``) fetched with huggingface_hub (config + weights)."""
    path = Path(spec).expanduser()
    if path.exists():
        return path
    if is_hub_id(spec):
        return snapshot(spec, "EAT checkpoint", ["config.json", "model.safetensors"], "pass a local file or folder")
    raise CheckpointError(f"EAT checkpoint not found: {spec}")


def read_checkpoint(path: Path) -> Tuple[str, Dict[str, torch.Tensor], Optional[Mapping[str, Any]]]:
    """``(layout, state dict, hyper-parameters or None)`` of a fairseq file or a Hugging Face folder."""
    if path.is_file() and path.suffix == ".safetensors":
        path = path.parent
    if path.is_dir():
        return ("hf",) + _read_hf(path)
    ckpt = load_pickle(path, mmap=zipfile.is_zipfile(path))
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise CheckpointError(f"{path}: not a fairseq checkpoint (no 'model' state dict in it)")
    state = ckpt["model"]
    layout = "fairseq-finetune" if "model." + FAIRSEQ_KEYS["patch_embed.weight"] in state else "fairseq-pretrain"
    return layout, state, _fairseq_hparams(ckpt.get("cfg"), layout)


def _read_hf(folder: Path):
    from safetensors.torch import load_file

    config_file, weights = folder / "config.json", folder / "model.safetensors"
    for f in (config_file, weights):
        if not f.is_file():
            raise CheckpointError(
                f"{folder}: a Hugging Face EAT folder needs config.json and model.safetensors; {f.name} is missing"
            )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{config_file}: not valid JSON: {e}") from e
    try:
        state = load_file(str(weights))
    except Exception as e:
        raise CheckpointError(f"{weights}: cannot read safetensors (truncated or corrupt?): {e}") from e
    return state, config


def _fairseq_hparams(cfg: Any, layout: str) -> Optional[Mapping[str, Any]]:
    """fairseq's ``cfg`` (a plain dict) -> the HF config names ``config_from_hparams`` reads."""
    model = cfg.get("model") if isinstance(cfg, dict) else None
    if layout == "fairseq-finetune" and isinstance(model, dict):
        model = (model.get("pretrained_model_args") or {}).get("model")
    if not isinstance(model, dict):
        return None
    image = (model.get("modalities") or {}).get("image") or {}
    model_keys = ("embed_dim", "depth", "num_heads", "mlp_ratio", "norm_eps", "layer_norm_first")
    image_keys = ("patch_size", "in_chans", "max_length", "num_extra_tokens", "prenet_depth")
    hp = {k: model[k] for k in model_keys if k in model}
    hp.update({k: image[k] for k in image_keys if k in image})
    return hp


def config_from_hparams(
    hp: Optional[Mapping[str, Any]], state: Mapping[str, torch.Tensor], layout: str, where: str
) -> EATConfig:
    """``EATConfig`` from the checkpoint's hyper-parameters; what is absent is inferred from tensor shapes."""
    hp = dict(hp or {})
    supported = dict(
        layer_norm_first=False, fixed_positions=True, in_chans=1, num_extra_tokens=1, prenet_depth=0, norm_affine=True
    )
    for k, value in supported.items():
        if k in hp and hp[k] != value:
            raise CheckpointError(f"{where}: {k}={hp[k]!r} is not an EAT this loader supports (needs {value!r})")
    if hp.get("stride", hp.get("patch_size")) != hp.get("patch_size"):
        raise CheckpointError(f"{where}: overlapping patches (stride {hp['stride']}) are not supported")
    patch_key = key_table(layout, 0)["patch_embed.weight"]
    if patch_key not in state:
        raise CheckpointError(
            f"{where}: missing key {patch_key!r}: not an EAT checkpoint (its first keys: {', '.join(list(state)[:4])})"
        )
    embed_dim = int(hp.get("embed_dim", state[patch_key].shape[0]))
    prefix = block_prefix(layout)
    blocks = {int(k[len(prefix) :].split(".")[0]) for k in state if k.startswith(prefix)}
    fc1 = state.get(f"{prefix}0.mlp.fc1.weight")
    positions = state.get(POSITION_KEY[layout])
    patch_size, mel_bins = int(hp.get("patch_size", 16)), int(hp.get("mel_bins", 128))
    try:
        return EATConfig(
            embed_dim=embed_dim,
            depth=int(hp.get("depth", len(blocks))),
            num_heads=int(hp.get("num_heads", max(1, embed_dim // 64))),  # not in the shapes; EAT uses 64-d heads
            mlp_ratio=float(hp.get("mlp_ratio", fc1.shape[0] / embed_dim if fc1 is not None else 4.0)),
            norm_eps=float(hp.get("norm_eps", 1e-6)),
            qkv_bias=bool(hp.get("qkv_bias", True)),
            max_length=int(
                hp.get("max_length", positions.shape[1] // (mel_bins // patch_size) if positions is not None else 768)
            ),
            patch_size=patch_size,
            mel_bins=mel_bins,
        )
    except (ConfigError, TypeError, ValueError, ZeroDivisionError) as e:
        raise CheckpointError(f"{where}: inconsistent EAT hyper-parameters: {e}") from e


def check_positions(table: torch.Tensor, config: EATConfig, key: str, where: str) -> None:
    """The stored table must have ``max_length * 8`` rows and equal the sin-cos formula."""
    expected = sincos_positions(config)
    if tuple(table.shape) != tuple(expected.shape):
        raise CheckpointError(
            f"{where}: key {key!r} has shape {tuple(table.shape)}, expected {tuple(expected.shape)} "
            f"({config.max_length} time patches x {config.freq_patches} x {config.embed_dim})"
        )
    error = (table.float() - expected).abs().max().item()
    if error > 1e-5:
        raise CheckpointError(
            f"{where}: key {key!r} is not EAT's fixed 2-D sin-cos table (max difference {error:.3g}); "
            "this checkpoint uses another position encoding"
        )


def convert_state_dict(
    state: Mapping[str, torch.Tensor], layout: str, config: EATConfig, where: str
) -> Dict[str, torch.Tensor]:
    """A checkpoint's state dict -> ``EATModel`` keys, with shape checks; other networks' keys are dropped."""
    with torch.device("meta"):
        expected = {k: v.shape for k, v in EATModel(config).state_dict().items()}
    table = key_table(layout, config.depth)
    native = {}
    for name, key in table.items():
        if key not in state:
            raise CheckpointError(f"{where}: missing key {key!r} (EAT {config.embed_dim}-d, {config.depth} blocks)")
        if tuple(state[key].shape) != tuple(expected[name]):
            raise CheckpointError(
                f"{where}: key {key!r} has shape {tuple(state[key].shape)}, expected {tuple(expected[name])} "
                f"for an EAT with {config}"
            )
        native[name] = state[key]
    if POSITION_KEY[layout] in state:
        check_positions(state[POSITION_KEY[layout]], config, POSITION_KEY[layout], where)
    known = set(table.values()) | {POSITION_KEY[layout]}
    unexpected = [k for k in state if k not in known and not k.startswith(IGNORED[layout])]
    if unexpected:
        raise CheckpointError(
            f"{where}: unexpected keys for an EAT with {config}: {', '.join(unexpected[:5])}"
            + (f" and {len(unexpected) - 5} more" if len(unexpected) > 5 else "")
        )
    return native


def load_eat_state_dict(spec: str) -> Tuple[EATConfig, Dict[str, torch.Tensor]]:
    """Any EAT checkpoint (fairseq file, HF folder, Hub id) -> ``(config, EATModel state dict)``."""
    path = resolve_checkpoint(str(spec))
    layout, state, hparams = read_checkpoint(path)
    where = f"EAT checkpoint {path} ({layout})"
    config = config_from_hparams(hparams, state, layout, where)
    return config, convert_state_dict(state, layout, config, where)


def load_eat_model(spec: str) -> EATModel:
    """An ``EATModel`` with the checkpoint's weights, in eval mode, on CPU."""
    config, state = load_eat_state_dict(spec)
    with torch.device("meta"):  # no random initialization of weights about to be replaced
        model = EATModel(config)
    model.load_state_dict({k: v.float() for k, v in state.items()}, assign=True)
    model.positions = sincos_positions(config)
    return model.eval()


def save_hf_checkpoint(model: EATModel, folder) -> Path:
    """Write ``model`` as a Hugging Face EAT folder (config.json + model.safetensors, the release's keys)."""
    from safetensors.torch import save_file

    c = model.config
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["EATModel"],
        "model_type": "eat",
        "embed_dim": c.embed_dim,
        "depth": c.depth,
        "num_heads": c.num_heads,
        "patch_size": c.patch_size,
        "stride": c.patch_size,
        "in_chans": 1,
        "mel_bins": c.mel_bins,
        "max_length": c.max_length,
        "num_classes": 527,
        "model_variant": "pretrain",
        "mlp_ratio": c.mlp_ratio,
        "qkv_bias": c.qkv_bias,
        "drop_rate": 0.0,
        "attn_drop_rate": 0.0,
        "activation_dropout": 0.0,
        "post_mlp_drop": 0.0,
        "start_drop_path_rate": 0.0,
        "end_drop_path_rate": 0.0,
        "layer_norm_first": False,
        "norm_eps": c.norm_eps,
        "norm_affine": True,
        "fixed_positions": True,
        "img_size": [1024, c.mel_bins],
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    state = model.state_dict()
    tensors = {key: state[name].detach().cpu().contiguous() for name, key in key_table("hf", c.depth).items()}
    tensors[POSITION_KEY["hf"]] = sincos_positions(c)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder
