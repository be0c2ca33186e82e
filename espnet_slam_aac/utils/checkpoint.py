"""Checkpoints and model folders: where they come from (a folder, or a Hugging Face Hub id) and how their
tensors are read (safetensors first; torch pickles only with ``weights_only=True``)."""

import re
from pathlib import Path
from typing import Dict, Union

import torch

from espnet_slam_aac.errors import CheckpointError

HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")  # org/name, as the Hub spells repository ids


def is_hub_id(value: str) -> bool:
    """``value`` names a Hub repository, not a local path (a path that exists always wins)."""
    return bool(HUB_ID.match(str(value))) and not Path(value).exists()


def resolve_model_dir(name: Union[str, Path]) -> Path:
    """A local folder, or a Hub id fetched with ``huggingface_hub.snapshot_download`` (cached)."""
    path = Path(name)
    if path.is_dir():
        return path
    if not is_hub_id(str(name)):
        raise CheckpointError(
            f"model {str(name)!r} is neither a folder (config.yaml + model.safetensors) nor a Hugging Face Hub id"
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=str(name)))
    except Exception as err:  # offline, unknown repo, no access, network: all end here, with the reason
        raise CheckpointError(
            f"cannot fetch model {name!r} from the Hugging Face Hub ({type(err).__name__}: {err}). Offline "
            "(HF_HUB_OFFLINE=1 or no network), only models already in the cache load by id; pass a local folder "
            "instead (config.yaml + model.safetensors, as `espnet-slam-aac pack` writes it)"
        ) from err


def read_state_dict(path: Path) -> Dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"cannot read model file {path}: {err}") from err
    return state.get("module", state) if isinstance(state, dict) else state
