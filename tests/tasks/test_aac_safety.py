"""Training on the unhappy path, through the real CLI (``python -m espnet_slam_aac.bin.aac_train``) on a tiny
model: no checkpoint ESPnet loads for us runs code (``--init_param``, which the recipe's ``--pretrained_model``
feeds, and ``exp/*/checkpoint.pth`` before ``--resume``), non-finite audio and losses stop the run with an error
naming the cause, and an epoch with a NaN loss is never saved nor marked best."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml

from espnet_slam_aac.utils.checkpoint import load_pickle

REPO = Path(__file__).resolve().parents[2]


class Payload:
    """Unpickling this touches ``marker``: what a malicious checkpoint's code could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.fixture(scope="module")
def setup(tmp_path_factory, synth_manifest, tiny_eat, tiny_llm) -> dict:
    """Data dirs (4 training clips, 2 validation clips) and a 1-epoch config of 2 steps."""
    root = tmp_path_factory.mktemp("aac_safety")
    rows = [json.loads(line) for line in synth_manifest.read_text(encoding="utf-8").splitlines()]
    rows = sorted({r["key"]: r for r in rows}.values(), key=lambda r: r["key"])
    dirs = {}
    for name, chosen in (("train", rows[:4]), ("valid", rows[4:6])):
        d = dirs[name] = root / name
        d.mkdir()
        (d / "wav.scp").write_text("".join(f"{r['key']} {r['source']}\n" for r in chosen), encoding="utf-8")
        (d / "text").write_text("".join(f"{r['key']} {r['target']}\n" for r in chosen), encoding="utf-8")
    config = dict(
        frontend="eat_fbank",
        frontend_conf=dict(target_length=400),
        encoder="eat",
        encoder_conf=dict(checkpoint=str(tiny_eat)),
        projector="linear",
        projector_conf=dict(hidden_size=64),
        decoder="llm",
        decoder_conf=dict(model_name_or_path=str(tiny_llm)),
        optim="adamw",
        optim_conf=dict(lr=1.0e-3),
        batch_type="unsorted",
        batch_size=2,
        max_epoch=1,
        num_workers=0,
        best_model_criterion=[["valid", "loss", "min"]],
        keep_nbest_models=1,
        seed=3,
        progress_interval=0,
    )
    (root / "train.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return dict(root=root, dirs=dirs, config=root / "train.yaml")


def data_args(dirs: dict) -> list:
    args = []
    for mode in ("train", "valid"):
        d = dirs[mode]
        args += [f"--{mode}_data_path_and_name_and_type", f"{d}/wav.scp,speech,sound"]
        args += [f"--{mode}_data_path_and_name_and_type", f"{d}/text,text,text"]
        args += [f"--{mode}_shape_file", str(d / "wav.scp")]
    return args


def train(setup: dict, exp: Path, *extra: str, dirs: dict = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "espnet_slam_aac.bin.aac_train", "--config", str(setup["config"])]
    cmd += ["--output_dir", str(exp), "--ngpu", "0"] + data_args(dirs or setup["dirs"]) + list(extra)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def assert_refused(run: subprocess.CompletedProcess, what: str) -> None:
    assert run.returncode == 1, run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert errors and what in errors[-1], run.stderr[-3000:]


@pytest.fixture(scope="module")
def trained(setup) -> Path:
    """One normal 1-epoch run: its checkpoint.pth and 1epoch.pth are what ESPnet really writes."""
    exp = setup["root"] / "exp_ok"
    run = train(setup, exp)
    assert run.returncode == 0, run.stderr[-3000:]
    return exp


def evil(path: Path, marker: Path, base: dict = None) -> Path:
    torch.save({**(base or {}), "payload": Payload(marker)}, path)
    return path


def test_espnet_checkpoint_holds_only_allow_listed_objects(trained):
    for name in ("checkpoint.pth", "1epoch.pth", "valid.loss.best.pth"):
        assert load_pickle(trained / name)  # the reporter's numpy means and timedeltas included


def test_init_param_with_code_is_refused_and_never_run(setup, trained, tmp_path):
    marker = tmp_path / "pwned"
    bad = evil(tmp_path / "evil.pth", marker, torch.load(trained / "1epoch.pth", weights_only=True))
    run = train(setup, tmp_path / "exp", "--init_param", str(bad))
    assert_refused(run, f"{bad}: refused to unpickle")
    assert "pathlib" in run.stderr and not marker.exists()
    assert not (tmp_path / "exp" / "1epoch.pth").exists()


def test_init_param_and_resume_of_real_checkpoints_still_work(setup, trained, tmp_path):
    exp = tmp_path / "exp"
    run = train(setup, exp, "--init_param", str(trained / "1epoch.pth"))
    assert run.returncode == 0, run.stderr[-3000:]
    run = train(setup, exp, "--resume", "true", "--max_epoch", "2")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "The training was resumed using" in run.stderr and (exp / "2epoch.pth").exists()


def test_tampered_checkpoint_before_resume_is_refused_and_never_run(setup, trained, tmp_path):
    exp = tmp_path / "exp"
    exp.mkdir()
    marker = tmp_path / "pwned"
    real = load_pickle(trained / "checkpoint.pth")
    evil(exp / "checkpoint.pth", marker, real)
    run = train(setup, exp, "--resume", "true", "--max_epoch", "2")
    assert_refused(run, f"{exp / 'checkpoint.pth'}: refused to unpickle")
    assert not marker.exists() and not (exp / "2epoch.pth").exists()


def test_nan_audio_stops_training_naming_the_clip(setup, tmp_path):
    dirs = {}
    for mode, d in setup["dirs"].items():
        dirs[mode] = tmp_path / mode
        dirs[mode].mkdir()
        (dirs[mode] / "text").write_text((d / "text").read_text())
        (dirs[mode] / "wav.scp").write_text((d / "wav.scp").read_text())
    key, source = (dirs["train"] / "wav.scp").read_text().splitlines()[1].split(" ", 1)
    wave, rate = soundfile.read(source, dtype="float32")
    wave[100:110] = np.nan
    soundfile.write(tmp_path / "nan.wav", wave, rate, subtype="FLOAT")
    lines = (dirs["train"] / "wav.scp").read_text().splitlines()
    lines[1] = f"{key} {tmp_path / 'nan.wav'}"
    (dirs["train"] / "wav.scp").write_text("\n".join(lines) + "\n")
    run = train(setup, tmp_path / "exp", "--num_workers", "1", dirs=dirs)  # raised in a DataLoader worker
    assert_refused(run, f"utterance '{key}': 10 NaN or infinite samples")
    assert "Original Traceback" not in run.stderr
    assert not (tmp_path / "exp" / "1epoch.pth").exists()


def test_nan_loss_stops_training_and_no_nan_epoch_is_saved(setup, trained, tmp_path):
    """A projector weight set to NaN in the init_param: every loss is NaN."""
    state = torch.load(trained / "1epoch.pth", weights_only=True)
    name = next(k for k in state if k.startswith("projector.") and k.endswith("weight"))
    state[name][0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    exp = tmp_path / "exp"
    run = train(setup, exp, "--init_param", str(tmp_path / "nan.pth"), "--max_nonfinite_steps", "2")
    assert_refused(run, "training loss was nan for 2 consecutive steps")
    assert not list(exp.glob("*.pth"))
    run = train(setup, exp, "--init_param", str(tmp_path / "nan.pth"), "--max_nonfinite_steps", "0")
    assert_refused(run, "no training step updated the model")  # 0: no step limit; the epoch still fails
    assert not list(exp.glob("*epoch.pth")) and not (exp / "valid.loss.best.pth").exists()


TYPOS = [
    ("projector_conf", {"downsample_rat": 5}, "projector_conf (projector 'linear'): unknown key(s) ['downsample_rat']"),
    ("decoder_conf", {"lora": {"rank": 4}}, "decoder_conf.lora: unknown key(s) ['rank']"),
]
KNOWN = ["['downsample_rate', 'hidden_size']", "['alpha', 'dropout', 'r', 'target_modules']"]


@pytest.mark.parametrize("section, value, message, known", [t + (k,) for t, k in zip(TYPOS, KNOWN)])
def test_typo_in_a_component_section_names_the_yaml_section_key_and_known_keys(
    setup, tmp_path, section, value, message, known
):
    config = yaml.safe_load(setup["config"].read_text())
    config[section] = {**config[section], **value}
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(config))
    run = train({**setup, "config": path}, tmp_path / "exp", "--collect_stats", "true")
    assert_refused(run, f"{path}: {message}")
    assert f"known keys: {known}" in run.stderr


def test_caption_longer_than_the_llm_takes_stops_collect_stats_naming_the_utterance(setup, tmp_path):
    dirs = {}
    for mode, d in setup["dirs"].items():
        dirs[mode] = tmp_path / mode
        dirs[mode].mkdir()
        (dirs[mode] / "wav.scp").write_text((d / "wav.scp").read_text())
        (dirs[mode] / "text").write_text((d / "text").read_text())
    lines = (dirs["train"] / "text").read_text().splitlines()
    key = lines[2].split(" ", 1)[0]
    lines[2] = f"{key} " + " ".join(["a low tone beeps twice"] * 400)
    (dirs["train"] / "text").write_text("\n".join(lines) + "\n")
    run = train(setup, tmp_path / "stats", "--collect_stats", "true", dirs=dirs)
    assert_refused(run, f"utterance '{key}': its caption is")
    # tiny LLM: 1024 positions; 400 fbank frames -> 201 EAT tokens -> 40 audio embeddings
    assert "the LLM can take" in run.stderr and "has 1024 positions; up to 40 go to the audio" in run.stderr
