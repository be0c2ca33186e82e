"""Training that stops on a non-finite loss instead of logging ``loss=nan`` to the end and exiting 0.

ESPnet's ``Trainer`` skips a step whose gradient norm is not finite and, when every step of an epoch was
skipped, stops with a warning and exit status 0; a validation loss of NaN can still be sorted as the "best"
epoch (NaN compares false both ways). ``GuardedTrainer`` (ESPnet's trainer with the progress line) makes
each of these an error, before the epoch's checkpoint is written:

- ``--max_nonfinite_steps N`` (default 10) consecutive training steps with a NaN/inf loss. One such step can
  be a transient (one odd batch; ESPnet skips its update), ten in a row are not: the weights or the data
  are broken, and every further step is wasted compute. 0 turns the check off.
- an epoch in which no step updated the model;
- a validation loss that is not finite (any validation batch): such an epoch is never saved, so it can never
  be marked best nor averaged.

Every rank sees the same all-reduced losses, so in distributed training all ranks stop together.
"""

import dataclasses
import math
from typing import Callable, Iterable, Iterator

from espnet2.utils.build_dataclass import build_dataclass

from espnet_slam_aac.errors import TrainingError
from espnet_slam_aac.tasks.monitor import ProgressOptions, ProgressTrainer

DEFAULT_MAX_NONFINITE_STEPS = 10


@dataclasses.dataclass
class GuardedOptions(ProgressOptions):
    max_nonfinite_steps: int = DEFAULT_MAX_NONFINITE_STEPS


def _last_loss(reporter) -> float:
    values = reporter.stats.get("loss") or []
    return float(values[-1].value) if values else 0.0


class _Watched:
    """The trainer's batches; ``after_step(n)`` once the trainer has finished step ``n`` (when it asks for the
    next batch, or the batches end). Keeps the length: ESPnet's default --log_interval uses it."""

    def __init__(self, batches: Iterable, after_step: Callable[[int], None]):
        self.batches, self.after_step = batches, after_step

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator:
        step = 0
        for batch in self.batches:
            if step:
                self.after_step(step)
            step += 1
            yield batch
        if step:
            self.after_step(step)


class GuardedTrainer(ProgressTrainer):
    """ESPnet's trainer (with the progress line) that stops with a ``TrainingError`` on non-finite losses."""

    _nonfinite_steps = 0  # consecutive, over the run (an epoch boundary does not reset it)

    @classmethod
    def add_arguments(cls, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "--max_nonfinite_steps",
            type=int,
            default=DEFAULT_MAX_NONFINITE_STEPS,
            help="stop training with an error after this many consecutive steps with a NaN/inf loss (0: never)",
        )

    @classmethod
    def build_options(cls, args) -> GuardedOptions:
        return build_dataclass(GuardedOptions, args)

    @classmethod
    def run(cls, **kwargs) -> None:
        cls._nonfinite_steps = 0
        super().run(**kwargs)

    @classmethod
    def _check(cls, loss: float, epoch: int, step: int, limit: int) -> None:
        cls._nonfinite_steps = 0 if math.isfinite(loss) else cls._nonfinite_steps + 1
        if limit and cls._nonfinite_steps >= limit:
            raise TrainingError(
                f"training loss was {loss} for {cls._nonfinite_steps} consecutive steps (epoch {epoch}, up to step "
                f"{step}); stopping (--max_nonfinite_steps {limit}). Check the data (validate-data --check_audio) "
                "and lower the learning rate, or resume from the last good checkpoint"
            )

    @classmethod
    def train_one_epoch(cls, *, iterator, reporter, options, **kwargs) -> bool:
        limit = getattr(options, "max_nonfinite_steps", DEFAULT_MAX_NONFINITE_STEPS)
        watched = iterator
        if limit > 0:
            watched = _Watched(iterator, lambda n: cls._check(_last_loss(reporter), reporter.get_epoch(), n, limit))
        all_steps_invalid = super().train_one_epoch(iterator=watched, reporter=reporter, options=options, **kwargs)
        if all_steps_invalid:
            raise TrainingError(
                f"epoch {reporter.get_epoch()}: no training step updated the model (every gradient was NaN/inf, or "
                "there were no batches); check the data and the learning rate"
            )
        return all_steps_invalid

    @classmethod
    def validate_one_epoch(cls, *, reporter, **kwargs) -> None:
        super().validate_one_epoch(reporter=reporter, **kwargs)
        losses = [v.value for v in reporter.stats.get("loss", [])]
        bad = sum(not math.isfinite(v) for v in losses)
        if bad:
            raise TrainingError(
                f"epoch {reporter.get_epoch()}: validation loss is not finite in {bad} of {len(losses)} batches; "
                "this epoch is not saved (it must not become the best model). Check the validation data "
                "(validate-data --check_audio) and lower the learning rate"
            )
