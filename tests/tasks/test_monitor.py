"""Training progress lines (tasks/monitor.py): the line's arithmetic on a given clock, and a real ESPnet
training run printing them."""

import io
import json
import re
from pathlib import Path

import yaml

from espnet_slam_aac.tasks.aac import AACTask
from espnet_slam_aac.tasks.monitor import PREFIX, Progress


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lines_come_once_per_interval_with_mean_loss_and_time_left():
    clock, out = Clock(), io.StringIO()
    progress = Progress(max_epoch=3, interval=30, stream=out, clock=clock)
    progress.start_epoch(1, 10)
    for i in range(10):
        clock.now += 6  # 6 s a batch
        progress.batch_done(float(i))
    clock.now += 12  # validation
    progress.epoch_done(2.5)
    lines = out.getvalue().splitlines()
    # the first batch always (no rate yet); then one at most every 30 s (batch 6 at +36 s: 6 s a batch since the
    # first one, 4 + 20 left); the epoch end at +72 s (66 s for 9 batches, validation included; 20 left)
    assert lines == [
        f"{PREFIX} epoch 1/3 batch 1/10 loss 0.000 | 0:00:06 elapsed, ? left",
        f"{PREFIX} epoch 1/3 batch 6/10 loss 3.000 | 0:00:36 elapsed, ~0:02:24 left",
        f"{PREFIX} epoch 1/3 done: train loss 4.500, valid loss 2.500 | 0:01:12 elapsed, ~0:02:26 left",
    ]


def test_unknown_epoch_length_is_learned_from_the_first_epoch_and_the_last_epoch_always_ends_with_a_line():
    clock, out = Clock(), io.StringIO()
    progress = Progress(max_epoch=2, interval=1000, stream=out, clock=clock)
    for epoch in (1, 2):
        progress.start_epoch(epoch, None)
        for _ in range(4):
            clock.now += 1
            progress.batch_done(1.0)
        progress.epoch_done(None)
    lines = out.getvalue().splitlines()
    assert lines[0] == f"{PREFIX} epoch 1/2 batch 1/? loss 1.000 | 0:00:01 elapsed, ? left"
    assert lines[1] == f"{PREFIX} epoch 2/2 done: train loss 1.000, valid loss ? | 0:00:08 elapsed, ~0:00:00 left"


def test_a_real_training_run_prints_progress_lines_on_stderr(tmp_path, synth_manifest, tiny_eat, tiny_llm, capsys):
    rows = [json.loads(line) for line in synth_manifest.read_text(encoding="utf-8").splitlines()]
    args = []
    for mode, sel in [("train", rows[:10]), ("valid", rows[50:55])]:
        d = tmp_path / mode
        d.mkdir()
        (d / "wav.scp").write_text("".join(f"{r['key']} {r['source']}\n" for r in sel))
        (d / "text").write_text("".join(f"{r['key']} {r['target']}\n" for r in sel))
        args += [f"--{mode}_data_path_and_name_and_type", f"{d}/wav.scp,speech,sound"]
        args += [f"--{mode}_data_path_and_name_and_type", f"{d}/text,text,text", f"--{mode}_shape_file", f"{d}/wav.scp"]
    config = dict(
        frontend_conf=dict(target_length=400),
        encoder_conf=dict(checkpoint=str(tiny_eat)),
        projector_conf=dict(hidden_size=16),
        decoder_conf=dict(model_name_or_path=str(tiny_llm)),
        batch_type="unsorted",
        batch_size=5,
        max_epoch=2,
        num_workers=0,
        best_model_criterion=[["valid", "loss", "min"]],
    )
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    out_dir = tmp_path / "exp"
    cmd = ["--config", str(tmp_path / "train.yaml"), "--output_dir", str(out_dir), "--progress_interval", "1e-9"]
    AACTask.main(cmd=cmd + args)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith(PREFIX)]
    times = r" \| \d:\d\d:\d\d elapsed, (?:~\d:\d\d:\d\d|\?) left"  # "?" after the first batch
    batch = r"progress: epoch (\d)/2 batch (\d)/2 loss \d+\.\d{3}" + times
    done = r"progress: epoch (\d)/2 done: train loss \d+\.\d{3}, valid loss \d+\.\d{3}" + times
    assert [re.fullmatch(batch, x).groups() for x in lines if "batch" in x] == [
        ("1", "1"),
        ("1", "2"),
        ("2", "1"),
        ("2", "2"),
    ]
    assert [re.fullmatch(done, x).group(1) for x in lines if "done" in x] == ["1", "2"]
    assert lines[0].endswith("? left") and lines[-1].endswith("~0:00:00 left")
    assert yaml.safe_load((out_dir / "config.yaml").read_text())["progress_interval"] == 1e-9
    assert Path(out_dir / "valid.loss.best.pth").exists()
