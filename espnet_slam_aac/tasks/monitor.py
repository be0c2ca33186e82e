"""Training progress for people: a ``progress:`` line with the epoch, the batch, the loss and the time left.

ESPnet's trainer writes its statistics to its log (``exp/*/train.log`` in a recipe) and nothing to the
console, so a user of ``./run.sh`` saw minutes of silence at each training stage. ``ProgressTrainer`` is
ESPnet's ``Trainer`` plus such a line on stderr (so in the log too) every ``--progress_interval`` seconds,
from rank 0; the recipe's job runner also prints the lines that start with ``PREFIX`` on the console
(``utils/run.py --tee progress:``)::

    progress: epoch 2/30 batch 12/40 loss 3.214 | 0:01:05 elapsed, ~0:14:10 left
    progress: epoch 2/30 done: train loss 3.180, valid loss 3.402 | 0:01:12 elapsed, ~0:13:50 left

The loss is the mean over the batches since the previous line. Time left: the wall time per training batch
since the run's first batch ended (its start-up left out; validation included once an epoch has ended) times
the batches left; ``?`` after the first batch and while the epoch's length is unknown (an iterator without
a length, before its first epoch ends). The first batch and the end of training always get a line; the
others come at most once per interval.
"""

import dataclasses
import datetime
import math
import sys
import time
from typing import Callable, Iterable, Iterator, List, Optional, TextIO

from espnet2.train.reporter import SubReporter, aggregate
from espnet2.train.trainer import Trainer, TrainerOptions
from espnet2.utils.build_dataclass import build_dataclass

PREFIX = "progress:"  # utils/run.py --tee PREFIX shows these lines on the console
DEFAULT_INTERVAL = 30.0  # seconds


def _hms(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(seconds)))


def _mean(values: List[float]) -> float:
    return sum(values) / len(values) if values else math.nan


class Progress:
    """The progress lines of one training run (rank 0). ``clock`` and ``stream`` are there for tests."""

    def __init__(
        self,
        max_epoch: int,
        interval: float = DEFAULT_INTERVAL,
        stream: Optional[TextIO] = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.max_epoch, self.interval, self.stream, self.clock = max_epoch, interval, stream, clock
        self.started = clock()
        self.last_line: Optional[float] = None
        self.first_batch_end: Optional[float] = None  # the clock then: time per batch is measured from here
        self.batches_done = 0  # in this run (after a resume: since the resume)
        self.epoch_length: Optional[int] = None
        self.epoch = self.batch = 0
        self.recent: List[float] = []  # losses since the last line
        self.epoch_losses: List[float] = []

    def start_epoch(self, epoch: int, length: Optional[int]) -> None:
        self.epoch, self.batch, self.epoch_losses = epoch, 0, []
        self.epoch_length = length or self.epoch_length

    def batch_done(self, loss: Optional[float]) -> None:
        self.batch += 1
        self.batches_done += 1
        if self.first_batch_end is None:
            self.first_batch_end = self.clock()
        if loss is not None:
            self.recent.append(loss)
            self.epoch_losses.append(loss)
        if self._due():
            total = self.epoch_length or "?"
            self._line(f"epoch {self.epoch}/{self.max_epoch} batch {self.batch}/{total} loss {_mean(self.recent):.3f}")
            self.recent = []

    def epoch_done(self, valid_loss: Optional[float]) -> None:
        self.epoch_length = self.epoch_length or self.batch
        self.batch = self.epoch_length
        if self._due() or self.epoch == self.max_epoch:
            valid = "?" if valid_loss is None else f"{valid_loss:.3f}"
            train = f"{_mean(self.epoch_losses):.3f}"
            self._line(f"epoch {self.epoch}/{self.max_epoch} done: train loss {train}, valid loss {valid}")
            self.recent = []

    def _due(self) -> bool:
        return self.last_line is None or self.clock() - self.last_line >= self.interval

    def _line(self, what: str) -> None:
        now = self.clock()
        self.last_line = now
        elapsed = now - self.started
        left = "?"
        if self.epoch_length and self.batches_done > 1:
            per_batch = (now - self.first_batch_end) / (self.batches_done - 1)
            batches_left = (self.epoch_length - self.batch) + (self.max_epoch - self.epoch) * self.epoch_length
            left = "~" + _hms(per_batch * max(0, batches_left))
        print(f"{PREFIX} {what} | {_hms(elapsed)} elapsed, {left} left", file=self.stream or sys.stderr, flush=True)


class _Observed:
    """The trainer's batches, calling ``after_batch`` each time the trainer has finished one (when it asks for
    the next, or the iterator ends). Keeps the iterator's length: ESPnet's default --log_interval uses it."""

    def __init__(self, batches: Iterable, after_batch: Callable[[], None]):
        self.batches, self.after_batch = batches, after_batch

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator:
        started = False
        for batch in self.batches:
            if started:
                self.after_batch()
            started = True
            yield batch
        if started:
            self.after_batch()


def _length(batches: Iterable) -> Optional[int]:
    try:
        return len(batches)
    except TypeError:
        return None


def _loss(reporter: SubReporter, last_only: bool) -> Optional[float]:
    values = reporter.stats.get("loss", [])
    values = values[-1:] if last_only else values
    return float(aggregate(values)) if values else None


@dataclasses.dataclass
class ProgressOptions(TrainerOptions):
    progress_interval: float = DEFAULT_INTERVAL


class ProgressTrainer(Trainer):
    """ESPnet's trainer with the progress line (``--progress_interval`` seconds apart; 0: none)."""

    _progress: Optional[Progress] = None

    @classmethod
    def add_arguments(cls, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "--progress_interval",
            type=float,
            default=DEFAULT_INTERVAL,
            help=f"seconds between '{PREFIX} epoch, batch, loss, time left' lines on stderr (0: none)",
        )

    @classmethod
    def build_options(cls, args) -> ProgressOptions:
        return build_dataclass(ProgressOptions, args)

    @classmethod
    def run(cls, *, trainer_options, distributed_option, **kwargs) -> None:
        rank0 = not distributed_option.distributed or distributed_option.dist_rank == 0
        interval = getattr(trainer_options, "progress_interval", DEFAULT_INTERVAL)
        cls._progress = Progress(trainer_options.max_epoch, interval) if rank0 and interval > 0 else None
        try:
            super().run(trainer_options=trainer_options, distributed_option=distributed_option, **kwargs)
        finally:
            cls._progress = None

    @classmethod
    def train_one_epoch(cls, *, iterator, reporter, **kwargs) -> bool:
        progress = cls._progress
        if progress is not None:
            progress.start_epoch(reporter.get_epoch(), _length(iterator))
            iterator = _Observed(iterator, lambda: progress.batch_done(_loss(reporter, last_only=True)))
        return super().train_one_epoch(iterator=iterator, reporter=reporter, **kwargs)

    @classmethod
    def validate_one_epoch(cls, *, reporter, **kwargs) -> None:
        super().validate_one_epoch(reporter=reporter, **kwargs)
        if cls._progress is not None:
            cls._progress.epoch_done(_loss(reporter, last_only=False))
