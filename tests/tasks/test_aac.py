"""SLAM-AAC trained through ESPnet for real: collect-stats, training with validation, checkpoints, averaging,
loading, resume after a kill, and two processes (gloo) against one.

One module-scoped run (in this process) serves the tests that read its outputs; runs whose behaviour is
about processes (kill and resume, torchrun) are subprocesses.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from espnet2.torch_utils.load_pretrained_model import load_pretrained_model
from filelock import FileLock

from espnet_slam_aac.model.decoder import CaptionTokenizer, load_tokenizer
from espnet_slam_aac.model.slam_aac import SlamAAC
from espnet_slam_aac.tasks.aac import AACTask
from espnet_slam_aac.utils.checkpoint import load_pickle

REPO = Path(__file__).resolve().parents[2]
MAX_EPOCH = 4
STEPS_PER_EPOCH = 10  # 50 training captions, batch 5
# LoRA on every projection: a random 64-d Llama learns the captions' language fast enough to show in 40 steps
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def write_data_dirs(manifest: Path, root: Path) -> dict:
    """Kaldi data dirs (wav.scp, text) from the synthesized corpus: clips 0-9 train, 10-11 validate."""
    rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]
    dirs = {}
    for name, keep in [("train", lambda k: int(k[4:8]) < 10), ("valid", lambda k: int(k[4:8]) >= 10)]:
        d = dirs[name] = root / name
        d.mkdir(parents=True)
        sel = sorted((r for r in rows if keep(r["key"])), key=lambda r: r["key"])
        (d / "wav.scp").write_text("".join(f"{r['key']} {r['source']}\n" for r in sel), encoding="utf-8")
        (d / "text").write_text("".join(f"{r['key']} {r['target']}\n" for r in sel), encoding="utf-8")
    return dirs


def write_config(path: Path, tiny_eat: Path, tiny_llm: Path, **overrides) -> Path:
    config = dict(
        frontend="eat_fbank",
        frontend_conf=dict(target_length=400),  # the 4 s clips
        specaug="specaug",
        specaug_conf=dict(
            apply_time_warp=False,
            freq_mask_width_range=[0, 8],
            num_freq_mask=2,
            time_mask_width_range=[0, 64],
            num_time_mask=2,
        ),
        encoder="eat",
        encoder_conf=dict(checkpoint=str(tiny_eat)),
        projector="linear",
        projector_conf=dict(hidden_size=64),
        decoder="llm",
        decoder_conf=dict(model_name_or_path=str(tiny_llm), lora=dict(target_modules=LORA_TARGETS)),
        optim="adamw",
        optim_conf=dict(lr=1.0e-2, weight_decay=0.0),
        batch_type="unsorted",
        batch_size=5,
        shuffle_within_batch=True,
        max_epoch=MAX_EPOCH,
        num_workers=0,
        best_model_criterion=[["valid", "loss", "min"]],
        keep_nbest_models=[2, MAX_EPOCH],  # averages of the 2 best and of all; every epoch's file is kept
        seed=3,
    )
    config.update(overrides)
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def data_args(dirs: dict, stats: Path = None) -> list:
    args = []
    for mode in ("train", "valid"):
        d = dirs[mode]
        args += [f"--{mode}_data_path_and_name_and_type", f"{d}/wav.scp,speech,sound"]
        args += [f"--{mode}_data_path_and_name_and_type", f"{d}/text,text,text"]
        shape = stats / mode / "speech_shape" if stats else d / "wav.scp"
        args += [f"--{mode}_shape_file", str(shape)]
    return args


def epoch_stats(exp: Path) -> dict:
    return load_pickle(exp / "checkpoint.pth")["reporter"]["stats"]


def shared_dir(tmp_path_factory, name: str) -> Path:
    """A folder all pytest-xdist workers of this session see (the session's own temp dir without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name


@pytest.fixture(scope="session")
def trained(tmp_path_factory, synth_manifest, tiny_eat, tiny_llm):
    """One real ESPnet run, made once per session and shared by the xdist workers: collect-stats (which must not
    build the model), then training with validation, every forward pass recording
    (grad enabled, model.training, LLM.training)."""
    root = shared_dir(tmp_path_factory, "aac_task_train")
    run = dict(root=root, dirs={m: root / "data" / m for m in ("train", "valid")}, config=root / "train.yaml")
    run.update(stats=root / "stats", exp=root / "exp")
    with FileLock(f"{root}.lock"):
        if not (root / "records.json").exists():
            write_data_dirs(synth_manifest, root / "data")
            write_config(run["config"], tiny_eat, tiny_llm)
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(SlamAAC, "__init__", lambda *a, **k: pytest.fail("collect-stats built the model"))
                AACTask.main(
                    cmd=["--collect_stats", "true", "--config", str(run["config"]), "--output_dir", str(run["stats"])]
                    + data_args(run["dirs"])
                )
            records = []
            forward = SlamAAC.forward

            def recording_forward(self, *args, **kwargs):
                records.append((torch.is_grad_enabled(), self.training, self.decoder.llm.training))
                return forward(self, *args, **kwargs)

            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(SlamAAC, "forward", recording_forward)
                AACTask.main(
                    cmd=["--config", str(run["config"]), "--output_dir", str(run["exp"])]
                    + data_args(run["dirs"], run["stats"])
                )
            (root / "records.json").write_text(json.dumps(records))
    run["records"] = [tuple(r) for r in json.loads((root / "records.json").read_text())]
    return run


def test_collect_stats_measures_caption_tokens_without_building_the_model(trained, tiny_llm):
    captions = CaptionTokenizer(load_tokenizer(str(tiny_llm)))
    texts = dict(line.split(" ", 1) for line in (trained["dirs"]["train"] / "text").read_text().splitlines())
    shapes = dict(line.split() for line in (trained["stats"] / "train" / "text_shape").read_text().splitlines())
    assert shapes.keys() == texts.keys()
    assert all(int(shapes[k]) == len(captions.caption_ids(t)) for k, t in texts.items())
    assert (trained["stats"] / "train" / "speech_shape").read_text().splitlines()[0] == "clip0000_1 64000"


def test_model_is_in_train_mode_in_every_training_step_after_a_validation(trained):
    records = trained["records"]
    steps = [r for r in records if r[0]]
    validations = [i for i, r in enumerate(records) if not r[0]]
    assert len(steps) == MAX_EPOCH * STEPS_PER_EPOCH and validations
    assert all(training and llm_training for _, training, llm_training in steps)
    assert not any(training or llm_training for grad, training, llm_training in records if not grad)
    assert any(grad for grad, _, _ in records[validations[0] :])  # training steps did follow a validation


def test_validation_loss_drops(trained):
    stats = epoch_stats(trained["exp"])
    first, last = stats[1]["valid"]["loss"], stats[MAX_EPOCH]["valid"]["loss"]
    assert last < first - 0.6, (first, last)
    assert stats[MAX_EPOCH]["valid"]["acc"] > stats[1]["valid"]["acc"]


def test_checkpoints_hold_only_projector_and_lora(trained):
    exp = trained["exp"]
    saved = torch.load(exp / f"{MAX_EPOCH}epoch.pth", weights_only=True)
    assert {k.split(".")[0] for k in saved} == {"projector", "decoder"}
    lora = [k for k in saved if k.startswith("decoder.")]
    assert lora and all(".lora_A.default." in k or ".lora_B.default." in k for k in lora)
    assert set(load_pickle(exp / "checkpoint.pth")["model"]) == set(saved)


def test_nbest_average_is_the_mean_of_the_best_epochs(trained):
    exp = trained["exp"]
    stats = epoch_stats(exp)
    best = sorted(range(1, MAX_EPOCH + 1), key=lambda e: stats[e]["valid"]["loss"])[:2]
    files = [torch.load(exp / f"{e}epoch.pth", weights_only=True) for e in best]
    average = torch.load(exp / "valid.loss.ave_2best.pth", weights_only=True)
    assert average.keys() == files[0].keys()
    for k in average:
        torch.testing.assert_close(average[k], (files[0][k] + files[1][k]) / 2)
    assert os.readlink(exp / "valid.loss.best.pth") == f"{best[0]}epoch.pth"


def test_model_builds_from_config_with_frozen_weights_from_their_sources(trained, tiny_eat, tiny_llm):
    exp = trained["exp"]
    model, args = AACTask.build_model_from_file(exp / "config.yaml", exp / "valid.loss.ave.pth", "cpu")
    saved = torch.load(exp / "valid.loss.ave.pth", weights_only=True)
    state = model.state_dict()
    assert state.keys() == saved.keys() and all(torch.equal(state[k], v) for k, v in saved.items())
    from transformers import AutoModelForCausalLM

    from espnet_slam_aac.model.eat_checkpoint import load_eat_model

    eat = load_eat_model(str(tiny_eat)).state_dict()
    assert all(torch.equal(v, eat[k]) for k, v in model.encoder.eat.state_dict().items())
    llm = AutoModelForCausalLM.from_pretrained(tiny_llm).state_dict()
    base = model.decoder.llm.get_base_model().state_dict()  # LoRA-wrapped layers keep theirs as base_layer
    for k, v in llm.items():
        assert torch.equal(base.get(k, base.get(k.replace(".weight", ".base_layer.weight"))), v), k


def test_init_param_loads_a_trained_model_into_a_fresh_one(trained):
    args = AACTask.get_parser().parse_args(["--config", str(trained["config"])])
    torch.manual_seed(123)
    fresh = AACTask.build_model(args)
    path = trained["exp"] / "valid.loss.best.pth"
    load_pretrained_model(init_param=str(path), model=fresh, ignore_init_mismatch=False)
    saved = torch.load(path, weights_only=True)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in saved.items())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_train(args: list, torchrun: bool = False) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    launcher += ["--master_port", str(free_port())]  # not 0: ESPnet re-reads MASTER_PORT as its own init address
    cmd = (launcher if torchrun else [sys.executable]) + ["-m", "espnet_slam_aac.bin.aac_train"] + args
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    """Wait for a run and return its log; whatever happens, leave none of its processes behind."""
    try:
        return proc.communicate(timeout=timeout)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


def test_killed_run_resumes_from_its_last_epoch(trained, tmp_path):
    """Killed after its first epoch, resumed with the same command: it goes on from the last saved epoch and
    ends where the uninterrupted run (same config and seed) was after as many epochs."""
    exp, epochs = tmp_path / "exp", 2
    args = ["--config", str(trained["config"]), "--output_dir", str(exp), "--resume", "true", "--ngpu", "0"]
    args += ["--max_epoch", str(epochs)] + data_args(trained["dirs"], trained["stats"])
    proc = run_train(args)
    deadline = time.time() + 300
    while not (exp / "1epoch.pth").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert load_pickle(exp / "checkpoint.pth")["reporter"]["epoch"] == 1, "not killed in epoch 2"

    resumed = run_train(args)
    log = finish(resumed)
    assert resumed.returncode == 0, log[-3000:]
    assert f"2/{epochs}epoch started" in log and f"1/{epochs}epoch started" not in log
    final = torch.load(exp / f"{epochs}epoch.pth", weights_only=True)
    reference = torch.load(trained["exp"] / f"{epochs}epoch.pth", weights_only=True)
    for k in reference:
        torch.testing.assert_close(final[k], reference[k], rtol=1e-4, atol=1e-6)


def test_two_gloo_processes_take_the_same_first_step_as_one(trained, tmp_path, tiny_eat, tiny_llm):
    """SGD with lr 1 for one step: weights after it = initial weights - gradient of the global batch."""
    root = tmp_path
    config = write_config(
        root / "sgd.yaml",
        tiny_eat,
        tiny_llm,
        specaug=None,
        specaug_conf={},
        decoder_conf=dict(model_name_or_path=str(tiny_llm), lora=dict(dropout=0.0)),  # no randomness
        optim="sgd",
        optim_conf=dict(lr=1.0),
        grad_clip=1.0e9,
        batch_size=4,
        shuffle_within_batch=False,
        num_iters_per_epoch=1,
        max_epoch=1,
        keep_nbest_models=1,
    )
    common = ["--config", str(config), "--ngpu", "0"] + data_args(trained["dirs"], trained["stats"])
    distributed = ["--multiprocessing_distributed", "false", "--dist_backend", "gloo"]
    two = run_train(common + ["--output_dir", str(root / "two")] + distributed, torchrun=True)
    AACTask.main(cmd=common + ["--output_dir", str(root / "one")])
    log = finish(two)
    assert two.returncode == 0, log[-3000:]
    one = torch.load(root / "one" / "1epoch.pth", weights_only=True)
    two = torch.load(root / "two" / "1epoch.pth", weights_only=True)
    args = AACTask.get_parser().parse_args(["--config", str(config)])
    torch.manual_seed(args.seed)  # as main_worker does before building: the same initial weights
    initial = AACTask.build_model(args).state_dict()
    assert any(not torch.equal(one[k], initial[k]) for k in one)
    for k in one:
        torch.testing.assert_close(two[k] - initial[k], one[k] - initial[k], rtol=1e-4, atol=1e-7)
