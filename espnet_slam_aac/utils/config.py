"""Config files: YAML read with errors naming the file, unknown keys listed with the known ones, paths
resolved beside the file, and the "auto" device and dtype rules."""

import os
from pathlib import Path
from typing import Any, Union

import yaml

from espnet_slam_aac.errors import ConfigError

PathLike = Union[str, os.PathLike]


def resolve_beside(folder: PathLike, value: Any) -> Any:
    """A relative path that names something in ``folder`` -> that path; anything else as is.

    Configs that travel with their files (a packed model's config.yaml and refine.yaml) name them relative to
    their own folder; a recipe's conf/*.yaml names them relative to the recipe, where they do not exist beside
    the YAML.
    """
    if isinstance(value, str) and value and not Path(value).is_absolute() and (Path(folder) / value).exists():
        return str(Path(folder) / value)
    return value


def read_yaml(path: PathLike) -> dict:
    """A YAML mapping; ConfigError naming the file when it is missing, malformed or not a mapping."""
    try:
        conf = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read {path}: {err}") from err
    if not isinstance(conf, dict):
        raise ConfigError(f"{path}: expected a YAML mapping")
    return conf
