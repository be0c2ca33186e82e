"""Audio for corpus captioning: decoded and resampled in DataLoader worker processes, batched by duration.

    windows of ClipRefs (main process, lazy) --chunks--> DataLoader workers: load_audio + prepare_waveform
        --> the window again, in order --> its good clips sorted by length --> full model batches

The main process lists the clips and cuts them into windows (``corpus.windows``); the workers of a torch
``DataLoader`` read each file, pick its channel and resample it exactly as ``Speech2Caption.prepare`` does, and
send back numpy arrays (pickled: no shared-memory handle per clip to run out of). A file that cannot be read
comes back as ``Failed`` with the reason, never as an exception. Each window's good clips are sorted by length
(ties by input position) and cut into batches of ``batch_size``: every batch is full except the last of a
window, and a window's batches depend only on its clips, not on the number of jobs or workers, on resuming,
or on which clips of it were done before, so results are the same however a corpus is split and restarted.
"""

from dataclasses import dataclass
from typing import Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch

from espnet_slam_aac.data.audio import load_audio
from espnet_slam_aac.errors import AudioError
from espnet_slam_aac.inference.speech2caption import prepare_waveform


@dataclass(frozen=True)
class ClipRef:
    """A clip of the input listing: its position, key and audio path."""

    index: int
    key: str
    path: str


@dataclass
class Loaded:
    ref: ClipRef
    wave: np.ndarray  # mono float32 at the front end's rate (``Speech2Caption.prepare``)
    duration: float  # seconds of the file as read
    raw: Optional[Tuple[np.ndarray, int]] = None  # the file's (samples, rate), kept for CLAP-Refine


@dataclass(frozen=True)
class Failed:
    ref: ClipRef
    reason: str


@dataclass(frozen=True)
class Preparer:
    """What a worker needs to prepare a clip as the model's front end would (picklable, no model)."""

    fs: int
    channel: str
    resampler: str
    keep_raw: bool = False

    @classmethod
    def of(cls, s2c) -> "Preparer":
        frontend = s2c.frontend
        return cls(frontend.fs, frontend.channel, frontend.resampler, keep_raw=s2c.clap is not None)

    def __call__(self, ref: ClipRef) -> Union[Loaded, Failed]:
        try:
            samples, rate = load_audio(ref.path)
            wave = prepare_waveform(samples, rate, self.fs, self.channel, self.resampler).numpy()
        except Exception as err:  # a bad file must not stop a corpus: its reason goes to failed.tsv
            return Failed(ref, _reason(err))
        return Loaded(ref, wave, round(len(samples) / rate, 3), (samples, rate) if self.keep_raw else None)


def _reason(err: Exception) -> str:
    """One line: our AudioError's message (it names the file and the problem), else the exception's type too."""
    text = " ".join(str(err).split())
    return text if isinstance(err, AudioError) else f"{type(err).__name__}: {text}"


class _Chunks:
    """Map-style dataset whose "index" is a chunk ``(window number, last chunk of the window?, refs)``."""

    def __init__(self, preparer: Preparer):
        self.preparer = preparer

    def __getitem__(self, chunk):
        number, last, refs = chunk
        return number, last, [self.preparer(ref) for ref in refs]


def _unchanged(item):
    return item


def _chunks(windows: Iterable[List[ClipRef]], size: int):
    for number, window in enumerate(windows):
        for start in range(0, len(window), size):
            yield number, start + size >= len(window), window[start : start + size]


def load_windows(
    windows: Iterable[List[ClipRef]], preparer: Preparer, num_workers: int = 2, chunk_size: int = 8
) -> Iterator[List[Union[Loaded, Failed]]]:
    """Each non-empty window's clips loaded, in the window's order; windows in order, read ahead by
    ``num_workers`` processes (0: in this process). ``windows`` is consumed lazily."""
    loader = torch.utils.data.DataLoader(
        _Chunks(preparer),
        sampler=_chunks((w for w in windows if w), max(1, chunk_size)),
        batch_size=None,
        collate_fn=_unchanged,
        num_workers=num_workers,
        prefetch_factor=4 if num_workers > 0 else None,
    )
    window: List[Union[Loaded, Failed]] = []
    for _, last, items in loader:
        window += items
        if last:
            yield window
            window = []


def window_batches(window: List[Union[Loaded, Failed]], batch_size: int) -> List[List[Loaded]]:
    """The window's good clips by length (then input position), cut into batches of ``batch_size``."""
    good = sorted((c for c in window if isinstance(c, Loaded)), key=lambda c: (len(c.wave), c.ref.index))
    return [good[start : start + batch_size] for start in range(0, len(good), batch_size)]
