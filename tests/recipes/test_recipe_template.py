"""aac.sh itself, run as a user runs it: decoding in jobs that resume, scoring, the skipping of complete
stages, and its option errors. The model is a tiny packed one (--download_model), the data synthesized."""

import fcntl
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from espnet_slam_aac.data.manifest import prepare_data_dir
from espnet_slam_aac.testing import synth


@pytest.fixture(scope="module")
def recipe(toy_recipe) -> Path:
    """A recipe dir (links into the real TEMPLATE) with a 4-clip evaluation set and a tiny packed model."""
    recipe = toy_recipe("template")
    root = recipe.parents[2]
    manifest = synth.write_corpus(root / "corpus", n_clips=4, captions_per_clip=2, seed=5)
    prepare_data_dir(manifest, recipe / "data" / "test", references=True)
    return recipe


def aac(recipe: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["./aac.sh", *map(str, args)],
        cwd=recipe,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def common(recipe: Path):
    return [
        "--download_model",
        recipe.parents[2] / "tiny" / "packed",
        "--test_sets",
        "test",
        "--skip_refine",
        "true",
        "--ngpu",
        "0",
        "--gpu_inference",
        "false",
        "--inference_nj",
        "2",
        "--decode_config",
        "conf/decode.yaml",
    ]


def test_decoding_runs_in_jobs_resumes_the_missing_ones_and_scores(recipe):
    done = aac(recipe, "--stage", "3", "--stop_stage", "8", *common(recipe))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    decoded = recipe / "exp/download_tiny_packed/decode_decode_packed/test"
    assert len((decoded / "text").read_text().splitlines()) == 4
    assert (decoded / "beam1/text").is_file() and (decoded / "candidates.jsonl").is_file()
    first = {i: (decoded / f"logdir/output.{i}/text").stat().st_mtime_ns for i in (1, 2)}

    # An interrupted decode: job 2's output and the set's marker are gone. The rerun decodes job 2 only.
    shutil.rmtree(decoded / "logdir/output.2")
    (decoded / ".done").unlink()
    again = aac(recipe, "--stage", "8", "--stop_stage", "8", *common(recipe))
    assert again.returncode == 0, again.stderr[-3000:]
    assert (decoded / "logdir/output.1/text").stat().st_mtime_ns == first[1]
    assert (decoded / "logdir/output.2/text").is_file()
    job1 = (decoded / "logdir/decode.1.log").read_text().splitlines()
    assert len(job1) == 5 and job1[-1].startswith("# Ended (code 0)")  # the command line, no decoding output
    assert len((decoded / "text").read_text().splitlines()) == 4

    # A complete stage is skipped.
    skipped = aac(recipe, "--stage", "8", "--stop_stage", "8", *common(recipe))
    assert "Stage 8: exp/download_tiny_packed/decode_decode_packed/test is complete: skipped" in skipped.stdout

    scored = aac(
        recipe, "--stage", "10", "--stop_stage", "10", *common(recipe), "--score_args", "--metrics bleu_1 cider_d"
    )
    assert scored.returncode == 0, scored.stdout[-3000:] + scored.stderr[-3000:]
    results = (recipe / "exp/download_tiny_packed/RESULTS.md").read_text()
    assert "|1best|" in results and "|beam1|" in results and "|beam2|" in results

    # Scored decode dirs are skipped; other scoring options, or new captions, score again.
    score = [*common(recipe), "--score_args", "--metrics bleu_1 cider_d"]
    again = aac(recipe, "--stage", "10", "--stop_stage", "10", *score)
    assert again.returncode == 0 and f"Stage 10: {decoded.relative_to(recipe)} is scored: skipped" in again.stdout
    assert "|beam2|" in again.stdout  # RESULTS.md is still collected and shown
    other = aac(recipe, "--stage", "10", "--stop_stage", "10", *common(recipe), "--score_args", "--metrics bleu_1")
    assert other.returncode == 0 and "Stage 10: scoring" in other.stdout
    (decoded / "beam1/text").write_text((decoded / "beam1/text").read_text().replace(" ", "  ", 1))
    changed = aac(recipe, "--stage", "10", "--stop_stage", "10", *common(recipe), "--score_args", "--metrics bleu_1")
    assert changed.returncode == 0 and "Stage 10: scoring" in changed.stdout


def test_options_are_checked_before_anything_runs(recipe):
    wrong = aac(recipe, "--stage", "8", "--no_such_option", "1")
    assert wrong.returncode != 0 and "unknown option --no_such_option" in wrong.stderr
    missing = aac(recipe, "--stage", "8", "--test_sets", "test")
    assert missing.returncode != 0 and "--train_set is required" in missing.stderr
    help_ = aac(recipe, "--help")
    assert help_.returncode == 0 and "Stages (fixed numbers):" in help_.stdout and "--inference_nj" in help_.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--stage", "eight"], "--stage must be a whole number from 1 to 12, got 'eight'"),
        (["--stage", "0"], "--stage must be a whole number from 1 to 12, got '0'"),
        (["--stop_stage", "13"], "--stop_stage must be a whole number from 1 to 12, got '13'"),
        (["--stage", "9", "--stop_stage", "8"], "--stop_stage 8 is before --stage 9: no stage would run"),
        (["--inference_nj", "two"], "--inference_nj must be a whole number of at least 1, got 'two'"),
        (["--ngpu", "-1"], "--ngpu must be a whole number of at least 0, got '-1'"),
    ],
)
def test_invalid_stage_and_number_options_are_errors(recipe, args, message):
    out = aac(recipe, *common(recipe), *args)
    assert out.returncode == 1 and message in out.stderr
    assert "integer expression expected" not in out.stderr and "Stage" not in out.stdout


def test_a_stage_whose_output_dir_another_run_holds_is_refused_with_its_pid(recipe):
    decoded = recipe / "exp/download_tiny_packed/decode_held_packed/test"
    lock = decoded.parent / ".test.lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as held:  # a live run (this test) holds the decode dir
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write(f"pid={os.getpid()}\nhost={socket.gethostname()}\nstarted=now\ncommand=./run.sh --stage 8\n")
        held.flush()
        out = aac(recipe, "--stage", "8", "--stop_stage", "8", *common(recipe), "--decode_tag", "held")
    assert out.returncode == 1
    assert f"{decoded.relative_to(recipe)} is in use by another run: PID {os.getpid()} on " in out.stderr
    assert "./run.sh --stage 8" in out.stderr and f"kill {os.getpid()}" in out.stderr
    assert not decoded.exists()  # nothing was decoded beside the live run
