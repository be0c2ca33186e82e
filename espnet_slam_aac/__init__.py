"""SLAM-AAC (LLM-based automated audio captioning) as an ESPnet plugin.

    from espnet_slam_aac import Speech2Caption, load_audio

The public names load on first use, so ``espnet-slam-aac --help`` and the light sub-commands do not import
torch, transformers or ESPnet.
"""

import importlib
from typing import Any

from espnet_slam_aac.utils import quiet_imports

quiet_imports.install()  # ESPnet's import must print nothing on stdout and download nothing

__version__ = "0.1.0"

_LAZY = {
    "Speech2Caption": "espnet_slam_aac.inference.speech2caption",
    "CaptionResult": "espnet_slam_aac.inference.speech2caption",
    "Candidate": "espnet_slam_aac.inference.speech2caption",
    "DecodingOptions": "espnet_slam_aac.inference.decoding",
    "load_audio": "espnet_slam_aac.data.audio",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
