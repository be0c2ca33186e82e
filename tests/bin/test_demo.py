"""``espnet-slam-aac demo``: a wrong flag or model is one ``error:`` line and exit status 1, before serving."""

import os
import subprocess
import sys


def run_demo(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "espnet_slam_aac.cli", "demo", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )


def test_demo_refuses_a_bad_queue_size_and_a_missing_model_with_one_error_line(tmp_path):
    done = run_demo("--model", tmp_path / "missing", "--queue_size", "0")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines()[-1] == "error: --queue_size must be at least 1, got 0"
    done = run_demo("--model", tmp_path / "missing", "--port", "1")
    assert done.returncode == 1 and done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: ") and "missing" in done.stderr
