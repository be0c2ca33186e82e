"""GuardedTrainer's rules on ESPnet's real trainer loop, with a one-weight model whose loss is NaN exactly on
the batches that carry a NaN: consecutive non-finite steps, an epoch without an update, a NaN validation."""

import math

import pytest
import torch
from espnet2.train.distributed_utils import DistributedOption
from espnet2.train.reporter import Reporter

from espnet_slam_aac.errors import TrainingError
from espnet_slam_aac.tasks.aac import AACTask
from espnet_slam_aac.tasks.guard import GuardedTrainer


class OneWeight(torch.nn.Module):
    """loss = mean((w * x - 1)^2): NaN when x holds a NaN, finite otherwise."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor, utt_id=None):
        loss = ((self.w * x - 1) ** 2).mean()
        return loss, {"loss": loss.detach()}, torch.tensor(float(x.numel()))


def batches(values):
    return [([f"utt{i}"], {"x": torch.tensor([v])}) for i, v in enumerate(values)]


def options(**overrides):
    args = AACTask.get_parser().parse_args(["--ngpu", "0", *[f"--{k}={v}" for k, v in overrides.items()]])
    return GuardedTrainer.build_options(args)


def train_epoch(values, **overrides) -> bool:
    model = OneWeight()
    reporter = Reporter()
    reporter.set_epoch(1)
    GuardedTrainer._nonfinite_steps = 0
    with reporter.observe("train") as sub:
        return GuardedTrainer.train_one_epoch(
            model=model,
            iterator=batches(values),
            optimizers=[torch.optim.SGD(model.parameters(), lr=0.1)],
            schedulers=[None],
            scaler=None,
            reporter=sub,
            summary_writer=None,
            options=options(**overrides),
            distributed_option=DistributedOption(),
        )


NAN = math.nan


def test_non_finite_steps_that_are_not_consecutive_go_on():
    assert train_epoch([0.5, NAN, NAN, 0.7, NAN, NAN, 0.9], max_nonfinite_steps=3) is False


def test_consecutive_non_finite_steps_stop_training_naming_the_count_and_step():
    with pytest.raises(TrainingError, match=r"loss was nan for 3 consecutive steps \(epoch 1, up to step 4\)"):
        train_epoch([0.5, NAN, NAN, NAN, 0.7], max_nonfinite_steps=3)


def test_an_epoch_without_any_update_is_an_error_even_without_a_step_limit():
    with pytest.raises(TrainingError, match="epoch 1: no training step updated the model"):
        train_epoch([NAN, NAN], max_nonfinite_steps=0)


def test_a_non_finite_validation_loss_stops_before_the_epoch_is_saved():
    reporter = Reporter()
    reporter.set_epoch(2)
    with pytest.raises(TrainingError, match="epoch 2: validation loss is not finite in 1 of 2 batches"):
        with reporter.observe("valid") as sub:
            GuardedTrainer.validate_one_epoch(
                model=OneWeight(),
                iterator=batches([0.5, NAN]),
                reporter=sub,
                options=options(),
                distributed_option=DistributedOption(),
            )
