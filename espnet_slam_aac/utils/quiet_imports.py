"""Third-party modules that write to stdout or reach for the network when merely imported, kept quiet.

Two modules that ``import espnet2`` pulls in misbehave at import time:

- ``espnet.nets.pytorch_backend.transformer.attention`` *prints* "Failed to import Flash Attention, using
  ESPnet default" on stdout when ``flash_attn`` is absent, which corrupts any tool whose stdout is data
  (``espnet-slam-aac caption ... > captions.tsv``);
- ``g2p_en.g2p`` (ESPnet's phoneme tokenizer, which we never use) calls ``nltk.download`` for two corpora
  it cannot find: a network call on every import, and 8 ``[nltk_data] Error loading`` lines offline.

``install()`` (run when ``espnet_slam_aac`` is imported) puts a finder in front of ``sys.meta_path`` that
runs just these modules' code with stdout captured (logged at DEBUG) and ``nltk.download`` a no-op, then
restores both. Nothing else is touched, and ESPnet is not edited.
"""

import contextlib
import importlib.abc
import io
import logging
import sys
from typing import Iterator, Optional

logger = logging.getLogger(__name__)

GUARDED = frozenset({"espnet.nets.pytorch_backend.transformer.attention", "g2p_en.g2p"})


def _no_download(info_or_id: Optional[str] = None, *args, **kwargs) -> bool:
    logger.debug("not downloading nltk data %r at import (only ESPnet's phoneme tokenizers need it)", info_or_id)
    return False


@contextlib.contextmanager
def _guard(name: str) -> Iterator[None]:
    printed = io.StringIO()
    nltk = sys.modules.get("nltk")
    if nltk is None and name == "g2p_en.g2p":
        import nltk
    download = getattr(nltk, "download", None)
    if nltk is not None:
        nltk.download = _no_download
    try:
        with contextlib.redirect_stdout(printed):
            yield
    finally:
        if nltk is not None:
            nltk.download = download
        if printed.getvalue().strip():
            logger.debug("%s printed on import: %s", name, printed.getvalue().strip())


class _GuardedLoader(importlib.abc.Loader):
    """The real loader, its ``exec_module`` run under ``_guard``."""

    def __init__(self, loader: importlib.abc.Loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        with _guard(module.__name__):
            self.loader.exec_module(module)

    def __getattr__(self, name: str):
        return getattr(self.loader, name)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname not in GUARDED:
            return None
        for finder in sys.meta_path:
            if isinstance(finder, _Finder) or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _GuardedLoader(spec.loader)
                return spec
        return None


def install() -> None:
    """Guard the modules of ``GUARDED`` imported from now on (idempotent)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
