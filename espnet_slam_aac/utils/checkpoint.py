"""Checkpoints and model folders: where they come from (a folder, or a Hugging Face Hub id) and how they are
read. This module is the one place that unpickles: every torch pickle goes through ``load_pickle``
(``weights_only=True`` plus ``SAFE_GLOBALS``), so no checkpoint can run code, whoever wrote it.

``SAFE_GLOBALS`` is what the checkpoints we read really hold besides tensors and plain containers:

- fairseq EAT checkpoints: ``argparse.Namespace`` (``args`` of old files), numpy scalars/arrays (meters,
  LR-scheduler state in ``extra_state`` / ``optimizer_history``); configs are plain dicts.
- SLAM-LLM ``model.pt``, LAION / ASE CLAP ``.pt``: tensors, dicts, numbers (numpy scalars in metadata).
- ESPnet's ``checkpoint.pth`` (``Trainer.run``): model/optimizer/scheduler/scaler state dicts (tensors,
  numbers, tuples) and the reporter's stats (numpy float64 means, ``datetime.timedelta`` epoch times).

numpy pickles name ``numpy.core.*`` (numpy 1) or ``numpy._core.*`` (numpy 2): both spellings are listed. None
of these classes runs code when unpickled. ``safe_torch_load()`` makes the ``torch.load`` that ESPnet calls
(``--init_param``, ``--resume``, model averaging, ``build_model_from_file``) this loader, while a task runs.
"""

import argparse
import contextlib
import datetime
import re
from pathlib import Path
from typing import IO, Any, Dict, Iterator, List, Optional, Union

import numpy as np
import torch

from espnet_slam_aac.errors import CheckpointError

HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")  # org/name, as the Hub spells repository ids

_NUMPY_DTYPES = [
    type(np.dtype(t))
    for t in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)
    + (np.float16, np.float32, np.float64, np.longdouble, np.complex64, np.complex128, np.str_, np.bytes_)
]
SAFE_GLOBALS = [
    argparse.Namespace,
    datetime.timedelta,
    np.dtype,
    np.ndarray,
    np._core.multiarray.scalar,
    np._core.multiarray._reconstruct,
    (np._core.multiarray.scalar, "numpy.core.multiarray.scalar"),
    (np._core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
] + _NUMPY_DTYPES

_TORCH_LOAD = torch.load  # the real one, whatever safe_torch_load rebinds later
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def is_hub_id(value: Union[str, Path]) -> bool:
    """``value`` names a Hub repository (``org/name``), not a local path (a path that exists always wins)."""
    text = str(value)
    return bool(HUB_ID.match(text)) and not text.startswith(".") and not Path(text).expanduser().exists()


def snapshot(
    repo_id: str, what: str, allow_patterns: Optional[List[str]] = None, instead: str = "pass a local path instead"
) -> Path:
    """A Hub repository's files (cached) via ``huggingface_hub.snapshot_download``, the one way any model part
    is fetched by id; ``what`` names it in errors, ``instead`` says what to pass offline."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=repo_id, allow_patterns=allow_patterns))
    except Exception as err:  # offline, unknown repo, no access, network: all end here, with the reason
        raise CheckpointError(
            f"cannot fetch {what} {repo_id!r} from the Hugging Face Hub ({type(err).__name__}: {err}). Offline "
            f"(HF_HUB_OFFLINE=1 or no network), only repositories already in the cache load by id; {instead}"
        ) from err


def resolve_model_dir(name: Union[str, Path]) -> Path:
    """A local folder, or a Hub id fetched with ``huggingface_hub.snapshot_download`` (cached)."""
    path = Path(name)
    if path.is_dir():
        return path
    if not is_hub_id(str(name)):
        raise CheckpointError(
            f"model {str(name)!r} is neither a folder (config.yaml + model.safetensors) nor a Hugging Face Hub id"
        )
    return snapshot(
        str(name),
        "model",
        instead="pass a local folder instead (config.yaml + model.safetensors, as `espnet-slam-aac pack` writes it)",
    )


def load_pickle(path: Union[str, Path, IO[bytes]], map_location: Any = "cpu", mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` with ``SAFE_GLOBALS``: tensors, plain containers, numbers and
    the classes listed above, nothing that can run code. A ``CheckpointError`` names the file and, for a
    refused pickle, the offending global."""
    if isinstance(path, (str, Path)):
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: no such checkpoint file")
    name = path if isinstance(path, Path) else getattr(path, "name", "<stream>")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return _TORCH_LOAD(path, map_location=map_location, weights_only=True, mmap=mmap or None)
    except Exception as err:
        message = str(err)
        found = (_unsafe_globals(path) or _GLOBAL.findall(message)) if "Weights only load failed" in message else []
        if found:
            raise CheckpointError(
                f"{name}: refused to unpickle: it holds Python objects beyond tensors and plain data "
                f"(global{'s' if len(found) > 1 else ''} {', '.join(found)}), which could run code when loaded. "
                "Only if you trust the file: load it in a separate Python session and re-save just its tensors and "
                "plain values (e.g. torch.save(ckpt['model'], 'weights.pth')) or as .safetensors"
            ) from err
        detail = message.split("WeightsUnpickler error:")[-1].strip().split("\n")[0] or type(err).__name__
        raise CheckpointError(
            f"{name}: not a readable torch checkpoint (truncated or corrupt, or not written by torch.save): {detail}"
        ) from err


def _unsafe_globals(path: Any) -> List[str]:
    """Every global a zip-format checkpoint names outside ``SAFE_GLOBALS`` (read, never run); [] otherwise."""
    if not isinstance(path, Path):
        return []
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # not a zip file: the unpickler's message names the first one
        return []


def read_state_dict(path: Path) -> Dict[str, torch.Tensor]:
    """A model's tensors from ``.safetensors`` or a torch pickle (``load_pickle``); DeepSpeed's ``module`` unwrapped."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:
            raise CheckpointError(f"cannot read model file {path}: {err}") from err
    state = load_pickle(path)
    return state.get("module", state) if isinstance(state, dict) else state


def _torch_load_for_espnet(f, map_location=None, pickle_module=None, *, weights_only=None, mmap=None, **kwargs):
    """``torch.load``'s signature, ``load_pickle``'s rules: ``weights_only=False`` and pickle modules are ignored."""
    return load_pickle(f, map_location=map_location, mmap=bool(mmap))


@contextlib.contextmanager
def safe_torch_load() -> Iterator[None]:
    """Within this block, ``torch.load`` (as ESPnet calls it: ``torch.load(path, weights_only=False)``) is
    ``load_pickle``. Restored on exit; nesting is harmless."""
    previous = torch.load
    torch.load = _torch_load_for_espnet
    try:
        yield
    finally:
        torch.load = previous
