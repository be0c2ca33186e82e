"""Config files: YAML read with errors naming the file, unknown keys listed with the known ones, paths
resolved beside the file, and the "auto" device and dtype rules. Every config reader of the package uses
these, so a mistake in any YAML reads the same way."""

import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union

import yaml

from espnet_slam_aac.errors import ConfigError

PathLike = Union[str, os.PathLike]
DTYPES = ("auto", "float32", "bfloat16", "float16")


def resolve_beside(folder: PathLike, value: Any) -> Any:
    """A relative path that names something in ``folder`` -> that path; anything else as is.

    Configs that travel with their files (a packed model's config.yaml and refine.yaml) name them relative to
    their own folder; a recipe's conf/*.yaml names them relative to the recipe, where they do not exist beside
    the YAML.
    """
    if isinstance(value, str) and value and not Path(value).is_absolute() and (Path(folder) / value).exists():
        return str(Path(folder) / value)
    return value


def read_yaml(path: PathLike, what: str = "config") -> dict:
    """A YAML mapping (an empty file is ``{}``); ConfigError naming the file when it is missing, malformed or
    not a mapping. ``what`` says in the message what the file is (``decode config``)."""
    try:
        conf = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read the {what} {path}: {err}") from err
    if conf is None:
        return {}
    if not isinstance(conf, dict):
        raise ConfigError(f"{path}: a {what} is a YAML mapping of key: value, got {type(conf).__name__}")
    return conf


def check_keys(values: Mapping, known: Iterable[str], where: str) -> None:
    """ConfigError naming ``where`` (the file and section), the unknown keys and the known ones."""
    known = sorted(known)
    unknown = sorted(str(k) for k in values if k not in known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known keys: {known}")


def resolve_device(device: Optional[str]) -> str:
    """``auto`` (or None): cuda if torch sees a GPU, else cpu; a cuda device asked for without one is an error."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but torch sees no CUDA GPU; use cpu")
    return device


def resolve_dtype(dtype: str, device: str):
    """A ``torch.dtype``. ``auto``: on a GPU the dtype ESPnet's ``use_amp`` computes in (bfloat16 where the GPU
    supports it, else float16); float32 on CPU, whose bf16 products are slow (and the reference decodes in it)."""
    import torch

    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if dtype == "auto":
        if str(device).startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, dtype)
