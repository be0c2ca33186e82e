"""The TEMPLATE training configs: valid for AACTask, and the reference's optimization settings."""

from pathlib import Path

import pytest
import torch
from espnet2.tasks.abs_task import scheduler_classes

from espnet_slam_aac.tasks.aac import AACTask

CONF = Path(__file__).resolve().parents[2] / "egs2" / "TEMPLATE" / "aac1" / "conf"


@pytest.mark.parametrize("name, lr, batch", [("train_pretrain", 1e-4, 16), ("train_finetune", 8e-6, 4)])
def test_config_has_the_references_optimizer_batch_and_schedule(name, lr, batch):
    args = AACTask.get_parser().parse_args(["--config", str(CONF / f"{name}.yaml")])  # unknown keys fail here
    assert (args.optim, args.optim_conf) == ("adamw", {"lr": lr, "weight_decay": 0.0})
    assert args.batch_size == batch and args.shuffle_within_batch and args.use_amp
    assert args.decoder_conf["lora"] == dict(r=8, alpha=32, dropout=0.05, target_modules=["q_proj", "v_proj"])
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], **args.optim_conf)
    scheduler = scheduler_classes[args.scheduler](optimizer, **args.scheduler_conf)
    optimizer.step()
    lrs = [None]  # lrs[n]: the learning rate of optimizer step n
    for _ in range(100_002):
        lrs.append(optimizer.param_groups[0]["lr"])
        scheduler.step()
    assert lrs[500] == pytest.approx(lr / 2, rel=1e-2) and lrs[1000] == pytest.approx(lr)
    assert lrs[2000] == pytest.approx(lr * 98_000 / 99_000)
    assert lrs[100_000] == 0.0 and lrs[100_002] == 0.0  # decayed to 0, and stays there
