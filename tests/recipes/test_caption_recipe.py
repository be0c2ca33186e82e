"""egs2/TEMPLATE/caption1/caption.sh run as a user runs it: a corpus of synthesized clips and bad files captioned
in 3 local jobs, one of them killed (SIGKILL) mid-way and the command rerun, against a single-job run; the slurm
path through the recipes' job runner with a stand-in sbatch; option errors. The model is the tiny packed one."""

import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from espnet_slam_aac.bin import caption_corpus
from espnet_slam_aac.testing import synth

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "egs2" / "TEMPLATE" / "caption1"
MODEL = REPO / "tests" / "fixtures" / "premove_packed" / "model"
DECODING = ["--beams", "2", "--max_new_tokens", "3", "--window", "16"]
OPTIONS = ["--model", MODEL, "--batch_size", "8", "--num_workers", "1", "--progress_interval", "2"]
OPTIONS += ["--caption_args", " ".join(DECODING)]
N_CLIPS = 200
BAD = ("empty.wav", "nan.wav", "short.wav", "unreadable.wav")


def write_corpus(folder: Path, n: int, seed: int) -> Path:
    """``n`` synthesized clips of 0.5-1 s (a third at 44.1 kHz) in nested folders, and one bad file of each kind."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        rate = 44100 if i % 3 == 0 else 16000
        wave, _ = synth.synthesize_clip(rng, rate, float(rng.uniform(0.5, 1.0)))
        path = folder / f"set{i % 4}" / f"sub{i % 2}" / f"clip{i:04d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, wave, rate, subtype="PCM_16")
    (folder / "unreadable.wav").write_bytes(b"RIFF but not really a wave file")
    soundfile.write(folder / "empty.wav", np.zeros(0, np.float32), 16000)
    soundfile.write(folder / "short.wav", np.full(200, 0.1, np.float32), 16000)
    soundfile.write(folder / "nan.wav", np.full(8000, np.nan, np.float32), 16000, subtype="FLOAT")
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"), N_CLIPS, seed=3)


def caption_sh(*args) -> list:
    return ["./caption.sh", *map(str, args)]


def run(*args, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        caption_sh(*args),
        cwd=TEMPLATE,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
        timeout=1800,
    )


def lines(path: Path) -> list:
    return path.read_text(encoding="utf-8").splitlines()


def processes_naming(text: str) -> list:
    found = []
    for entry in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if entry.isdigit() and text in cmdline:
            found.append(f"{entry}: {cmdline}")
    return found


def test_three_jobs_one_killed_and_rerun_equal_one_uninterrupted_job(corpus, tmp_path, capsys):
    # the reference: one job, in this process
    reference = tmp_path / "one_job"
    argv = ["--model", MODEL, "--audio", corpus, "--out", reference, "--batch_size", "8", "--num_workers", "1"]
    with pytest.raises(SystemExit) as exit_:
        caption_corpus.main([str(a) for a in argv + ["--device", "cpu", "--dtype", "auto", *DECODING]])
    assert exit_.value.code == 1  # the bad files
    capsys.readouterr()

    out = tmp_path / "three_jobs"
    proc = subprocess.Popen(
        caption_sh(*OPTIONS, "--audio", corpus, "--out", out, "--nj", "3"),
        cwd=TEMPLATE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        start_new_session=True,
    )
    job2 = out / "results" / "2-of-3.jsonl"
    try:
        deadline = time.time() + 900
        while not (job2.is_file() and job2.read_bytes().count(b"\n") >= 8):  # job 2 has written a batch
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[0][-3000:]
            time.sleep(0.2)
        pid = json.loads((out / "progress" / "2-of-3.json").read_text())["pid"]
        os.kill(pid, signal.SIGKILL)
        console, _ = proc.communicate(timeout=1800)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1, console[-3000:]
    assert "a captioning job stopped" in console and "rerun the same command" in console
    assert "progress:" in console and "clips/s" in console
    job2_share = sum(1 for i in range(N_CLIPS + len(BAD)) if (i // 16) % 3 == 1)
    killed_at = len(lines(job2))
    assert 8 <= killed_at < job2_share  # killed mid-way
    assert not (out / "captions.jsonl").exists()
    with open(job2, "ab") as f:  # as if it had been killed in the middle of a line
        f.write(b'{"key": "set1/sub1/clip0001.wav", "path": "/x", "capt')
    time.sleep(1.5)
    assert not processes_naming(str(out)), "a process of the killed run is still running"

    again = run(*OPTIONS, "--audio", corpus, "--out", out, "--nj", "3")
    assert again.returncode == 1, again.stdout[-3000:] + again.stderr[-3000:]  # 1: some clips failed
    assert f"captioned {N_CLIPS} of {N_CLIPS + len(BAD)} inputs; 4 failed" in again.stderr
    assert "this run:" in again.stderr and "clips/s" in again.stderr
    keys = [json.loads(line)["key"] for line in lines(out / "captions.jsonl")]
    assert len(keys) == len(set(keys)) == N_CLIPS
    assert sorted(row.split("\t")[0] for row in lines(out / "failed.tsv")[1:]) == sorted(BAD)
    for name in ("captions.jsonl", "captions.tsv", "failed.tsv"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    # the rerun captioned only what job 2 had not written (the torn line is dropped and captioned again)
    assert json.loads((out / "summary.json").read_text())["this_run"]["clips"] == job2_share - killed_at


FAKE_SBATCH = """#!/usr/bin/env bash
# Records its arguments, then runs the batch script once per array index as slurm would.
echo "$@" >> "$SBATCH_RECORD"
array=""; script=""
for a in "$@"; do
  case "$a" in --array=*) array=${a#--array=}; array=${array%%%*} ;; --*) ;; *) script=$a ;; esac
done
rc=0
for i in $(seq ${array%-*} ${array#*-}); do SLURM_ARRAY_TASK_ID=$i bash "$script" || rc=1; done
exit $rc
"""


@pytest.fixture
def fake_sbatch(tmp_path) -> Path:
    path = tmp_path / "bin" / "sbatch"
    path.parent.mkdir()
    path.write_text(FAKE_SBATCH)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_the_slurm_backend_submits_one_array_job_and_the_gpu_option_asks_for_gpus(tmp_path, fake_sbatch):
    audio = write_corpus(tmp_path / "audio", 6, seed=4)
    for name in ("empty.wav", "nan.wav", "unreadable.wav"):
        (audio / name).unlink()
    record = tmp_path / "sbatch.args"
    env = dict(cmd_backend="slurm", SBATCH_RECORD=str(record), PATH=f"{fake_sbatch.parent}:{os.environ['PATH']}")
    done = run(*OPTIONS, "--audio", audio, "--out", tmp_path / "out", "--nj", "2", **env)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "captioned 6 of 7 inputs; 1 failed (too short 1)" in done.stderr
    args = record.read_text().split()
    assert "--wait" in args and "--array=1-2" in args and not any(a.startswith("--gres") for a in args)
    assert "--cpus-per-task=2" in args  # the job and its loader worker
    for job in (1, 2):
        log = lines(tmp_path / "out" / "logs" / f"caption.{job}.log")
        assert f"--job {job} --nj 2" in log[0] and log[-1].startswith("# Ended (code 0)")
    assert len(lines(tmp_path / "out" / "captions.jsonl")) == 6

    record.unlink()
    gpu = run(*OPTIONS, "--audio", audio, "--out", tmp_path / "gpu", "--nj", "1", "--gpu_inference", "true", **env)
    assert "--gres=gpu:1" in record.read_text().split()
    log = (tmp_path / "gpu" / "logs" / "caption.1.log").read_text()
    assert "--device cuda" in log.splitlines()[0]
    if "sees no CUDA GPU" in log:  # this machine has none: the job says so and the run stops
        assert gpu.returncode == 1 and "a captioning job stopped" in gpu.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--audio", "a", "--out", "o"], "--model is required"),
        (["--model", "m", "--out", "o"], "--audio is required"),
        (["--model", "m", "--audio", "a", "--out", "o", "--nj", "0"], "--nj must be a positive whole number"),
        (["--model", "m", "--audio", "a", "--out", "o", "--gpu_inference", "yes"], "takes true or false"),
        (["--modle", "m"], "unknown option --modle"),
    ],
)
def test_option_errors_name_the_option(args, message):
    out = run(*args)
    assert out.returncode == 1 and message in out.stderr


def test_a_missing_input_or_a_rerun_with_other_settings_stops_before_any_job(corpus, tmp_path):
    missing = run(*OPTIONS, "--audio", tmp_path / "nowhere", "--out", tmp_path / "out")
    assert missing.returncode == 1 and "no such folder or file" in missing.stderr
    assert not (tmp_path / "out" / "logs").exists()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "setup.json").write_text(json.dumps({"audio": str(corpus), "model": "another"}))
    other = run(*OPTIONS, "--audio", corpus, "--out", tmp_path / "out")
    assert other.returncode == 1 and "other settings" in other.stderr
    assert not (tmp_path / "out" / "logs").exists()
