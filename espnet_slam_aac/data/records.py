"""Validated records of a manifest line and a data-dir utterance, and the rules keys, sources and captions follow.


**Manifest** (the SLAM-AAC reference format), one JSON object per line::

    {"key": "Y7fmOlUlwoNg_1", "source": "/data/clotho/x.wav", "target": "A dog barks twice."}

- ``key``, ``source`` and ``target`` are required strings. Other fields (``prompt``, ``source_len``, ...)
  are kept on the record (``ManifestLine.extra``) and not written to the data dir.
- Blank lines are skipped; a UTF-8 byte-order mark at the start of the file is ignored.
- ``key`` must be a Kaldi token: printable ASCII without whitespace (bytes 0x21-0x7e, what Kaldi's
  ``IsToken`` accepts in the C locale), unique in the manifest. A key is also a file name (stage 3 writes
  ``<key>.flac``), so it holds no ``/``, does not start with ``.`` (no ``.``, ``..`` or hidden files) and
  has at most ``MAX_KEY_LENGTH`` characters (file names are limited to 255 bytes).
- ``source``: a relative path is taken relative to ``audio_root`` (default: the manifest's folder);
  ``wav.scp`` holds absolute paths (symlinks are kept, not resolved).
- ``target``: every run of whitespace (spaces, tabs, newlines, ...) becomes one space and the ends are
  stripped; the number of captions this changed is logged. A caption that is then empty, or that holds
  another control character, is invalid.

**Data dir**: UTF-8 files of ``key value`` lines, sorted by key in byte order (``LC_ALL=C sort``):
"""

import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Tuple, Union

from espnet_slam_aac.errors import DataError

PathLike = Union[str, os.PathLike]
REQUIRED_FIELDS = ("key", "source", "target")
DROPPED_FILE = "dropped.tsv"
MAX_LISTED = 20  # problems listed in one error message
MAX_KEY_LENGTH = 200  # a key is a file name (<key>.flac and its temporary sibling) under the 255-byte limit
KEY_FILE_RULE = f"keys are file names: no '/', no leading '.', at most {MAX_KEY_LENGTH} characters"
_KEY = re.compile(r"[\x21-\x7e]+")  # Kaldi's IsToken in the C locale
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # Unicode category Cc


def key_problem(key: Any) -> Optional[str]:
    """Why ``key`` cannot be a Kaldi utterance id that is also a safe file name, or None."""
    if not isinstance(key, str):
        return f"key must be a string, got {type(key).__name__} {key!r}"
    if not key:
        return "key is empty"
    if not _KEY.fullmatch(key):
        for ch in key:
            if ch.isspace():
                return f"key {key!r} contains whitespace (Kaldi keys are single tokens); replace it, e.g. with '_'"
            if not "\x21" <= ch <= "\x7e":
                return f"key {key!r} contains U+{ord(ch):04X}; Kaldi keys must be printable ASCII"
    if "/" in key:
        return f"key {key!r} contains '/' ({KEY_FILE_RULE}); replace it, e.g. with '_'"
    if key.startswith("."):
        return f"key {key!r} starts with '.' ({KEY_FILE_RULE}); rename it, e.g. with a prefix"
    if len(key) > MAX_KEY_LENGTH:
        return f"key {key[:40]!r}... has {len(key)} characters ({KEY_FILE_RULE}); shorten it"
    return None


def key_file_name(key: str, suffix: str) -> str:
    """The file name ``<key><suffix>`` of an utterance's own file; every place that names a file after a key
    goes through here, so that no key can name a path outside its folder."""
    problem = key_problem(key)
    if problem:
        raise DataError(f"cannot name a file after key {key!r}: {problem}")
    return f"{key}{suffix}"


def normalize_caption(text: str) -> str:
    """Every whitespace run (tabs and newlines included) becomes one space; the ends are stripped."""
    return " ".join(text.split())


def caption_problem(text: str) -> Optional[str]:
    """Why the (normalized) caption ``text`` cannot go into a ``text`` file, or None."""
    if not text:
        return "empty caption"
    control = _CONTROL.search(text)
    if control:
        return f"caption contains control character U+{ord(control.group()):04X}"
    if text != normalize_caption(text):
        return "caption has tabs, line breaks or repeated/outer spaces; collapse them to single spaces"
    return None


def source_problem(source: Any) -> Optional[str]:
    if not isinstance(source, str):
        return f"source must be a string path, got {type(source).__name__}"
    if not source.strip():
        return "source is empty"
    if source != source.strip() or "\n" in source or "\r" in source:
        return f"source {source!r} has leading/trailing whitespace or a line break, which wav.scp cannot hold"
    return None


@dataclass(frozen=True)
class ManifestLine:
    """One jsonl line: a (clip, caption) pair, validated when built. ``source`` is absolute."""

    key: str
    source: str
    target: str
    manifest: str
    line: int  # 1-based
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def where(self) -> str:
        return f"{self.manifest}:{self.line}: key {self.key!r}"

    def __post_init__(self):
        problem = key_problem(self.key)
        if problem:
            raise DataError(f"{self.manifest}:{self.line}: {problem}")
        problem = source_problem(self.source) or caption_problem(self.target)
        if problem:
            raise DataError(f"{self.where}: {problem}")


@dataclass(frozen=True)
class Utterance:
    """One data-dir utterance. ``texts``: its caption, or for evaluation sets all references in order."""

    key: str
    source: str
    texts: Tuple[str, ...]
    num_samples: int
    duration: float  # seconds

    @property
    def text(self) -> str:
        return self.texts[0]

    def __post_init__(self):
        problem = key_problem(self.key)
        if problem:
            raise DataError(problem)
        problem = source_problem(self.source)
        if not problem and (not isinstance(self.texts, tuple) or not self.texts):
            problem = "texts must be a non-empty tuple of captions"
        problem = problem or next(filter(None, map(caption_problem, self.texts)), None)
        if not problem and not (isinstance(self.num_samples, int) and self.num_samples > 0):
            problem = f"num_samples must be a positive int, got {self.num_samples!r}"
        if not problem and not self.duration > 0:
            problem = f"duration must be positive, got {self.duration!r}"
        if problem:
            raise DataError(f"utterance {self.key!r}: {problem}")


@dataclass(frozen=True)
class Dropped:
    """A manifest line left out by ``drop_invalid``, and why."""

    line: int
    key: str
    source: str
    reason: str
