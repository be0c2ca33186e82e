"""The recipe's shell tools (egs2/TEMPLATE/aac1/utils), run as real subprocesses."""

import contextlib
import fcntl
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

UTILS = Path(__file__).resolve().parents[2] / "egs2" / "TEMPLATE" / "aac1" / "utils"


def sh(script: str, cwd: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, text=True, env={**os.environ, **env})


def run_py(cwd: Path, *args, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(UTILS / "run.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )


def split_merge_py(cwd: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(UTILS / "split_merge.py"), *map(str, args)], cwd=cwd, capture_output=True, text=True
    )


# ---------------------------------------------------------------- parse_options.sh

PARSE = f"""
nj=4; use_gpu=false; train_config=conf/a.yaml; help_message="usage: demo"
. {UTILS}/parse_options.sh
echo "nj=$nj use_gpu=$use_gpu train_config=$train_config rest=$*"
"""


def test_parse_options_sets_variables_in_both_spellings_and_keeps_positionals(tmp_path):
    out = sh(PARSE + "", tmp_path)
    assert out.stdout.strip() == "nj=4 use_gpu=false train_config=conf/a.yaml rest="
    script = tmp_path / "s.sh"
    script.write_text(PARSE)
    out = subprocess.run(
        ["bash", str(script), "--nj", "8", "--use-gpu=true", "--train_config", "b c.yaml", "pos1", "--nj", "3"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "nj=8 use_gpu=true train_config=b c.yaml rest=pos1 --nj 3"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--nj_typo", "3"], "unknown option --nj_typo"),
        (["--use_gpu", "yes"], "takes true or false, got 'yes'"),
        (["--nj"], "option --nj needs a value"),
    ],
)
def test_parse_options_rejects_unknown_options_bad_booleans_and_missing_values(tmp_path, args, message):
    script = tmp_path / "s.sh"
    script.write_text(PARSE)
    out = subprocess.run(["bash", str(script), *args], capture_output=True, text=True)
    assert out.returncode != 0
    assert message in out.stderr


def test_parse_options_help_prints_help_message(tmp_path):
    script = tmp_path / "s.sh"
    script.write_text(PARSE)
    out = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "usage: demo"


def test_parse_options_double_dash_ends_options(tmp_path):
    script = tmp_path / "s.sh"
    script.write_text(PARSE)
    out = subprocess.run(["bash", str(script), "--nj", "2", "--", "--nj", "5"], capture_output=True, text=True)
    assert out.stdout.strip() == "nj=2 use_gpu=false train_config=conf/a.yaml rest=--nj 5"


# ---------------------------------------------------------------- run.py (local)


def test_run_local_job_array_substitutes_job_in_log_and_command_and_logs_exit_code(tmp_path):
    out = run_py(tmp_path, "JOB=1:3", "log/echo.JOB.log", "echo", "job", "JOB", "|", "tr", "a-z", "A-Z")
    assert out.returncode == 0, out.stderr
    for i in (1, 2, 3):
        lines = (tmp_path / f"log/echo.{i}.log").read_text().splitlines()
        assert lines[0] == f"# echo job {i} | tr a-z A-Z"
        assert f"JOB {i}" in lines
        assert lines[-1].startswith("# Ended (code 0)")


def test_run_local_reports_failed_jobs_with_their_logs_and_fails(tmp_path):
    out = run_py(tmp_path, "JOB=1:4", "log/t.JOB.log", "test", "JOB", "-ne", "3")
    assert out.returncode == 1
    assert "1 of 4 jobs failed" in out.stderr and "log/t.3.log" in out.stderr
    assert (tmp_path / "log/t.3.log").read_text().splitlines()[-1].startswith("# Ended (code 1)")
    assert (tmp_path / "log/t.4.log").read_text().splitlines()[-1].startswith("# Ended (code 0)")


def test_run_local_single_job_without_range_and_espnet_launch_style_gpu_option(tmp_path):
    out = run_py(tmp_path, "--gpu", "0", "train.log", "echo", "a b")
    assert out.returncode == 0
    assert "a b" in (tmp_path / "train.log").read_text()


def test_run_local_max_jobs_run_limits_parallelism(tmp_path):
    # Each job records how many jobs were running when it started (a marker file per running job).
    cmd = "touch run.JOB ; ls run.* | wc -l > seen.JOB ; sleep 0.3 ; rm run.JOB".split()
    out = run_py(tmp_path, "--max_jobs_run", "2", "JOB=1:5", "log/p.JOB.log", *cmd)
    assert out.returncode == 0, out.stderr
    assert max(int((tmp_path / f"seen.{i}").read_text()) for i in range(1, 6)) <= 2


def test_run_local_spreads_gpu_jobs_over_visible_devices(tmp_path):
    out = run_py(
        tmp_path,
        "--gpu",
        "1",
        "JOB=1:3",
        "log/g.JOB.log",
        "echo",
        "dev=$CUDA_VISIBLE_DEVICES",
        CUDA_VISIBLE_DEVICES="4,6",
    )
    assert out.returncode == 0, out.stderr
    devices = [(tmp_path / f"log/g.{i}.log").read_text().split("dev=")[-1].split()[0] for i in (1, 2, 3)]
    assert devices == ["4", "6", "4"]


def test_run_local_refuses_multi_node_and_a_shared_log(tmp_path):
    out = run_py(tmp_path, "--num_nodes", "2", "x.log", "true")
    assert out.returncode != 0 and "needs a cluster backend" in out.stderr
    out = run_py(tmp_path, "JOB=1:2", "x.log", "true")
    assert out.returncode != 0 and "must contain JOB" in out.stderr


# ---------------------------------------------------------------- run.py (slurm, with a stand-in sbatch)

FAKE_SBATCH = """#!/usr/bin/env bash
# Records its arguments, then runs the batch script once per array index as slurm would.
echo "$@" > "$SBATCH_RECORD"
array=""; script=""
for a in "$@"; do
  case "$a" in --array=*) array=${a#--array=}; array=${array%%%*} ;; --*) ;; *) script=$a ;; esac
done
rc=0
if [ -n "$array" ]; then
  for i in $(seq ${array%-*} ${array#*-}); do SLURM_ARRAY_TASK_ID=$i bash "$script" || rc=1; done
else
  bash "$script" || rc=1
fi
exit $rc
"""


@pytest.fixture
def fake_sbatch(tmp_path):
    path = tmp_path / "bin" / "sbatch"
    path.parent.mkdir()
    path.write_text(FAKE_SBATCH)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_run_slurm_submits_an_array_with_resources_and_config_options(tmp_path, fake_sbatch):
    (tmp_path / "slurm.conf").write_text("--partition=gpu  # the queue\n--time=1:00:00\n")
    record = tmp_path / "record"
    out = run_py(
        tmp_path,
        "--backend",
        "slurm",
        "--sbatch",
        str(fake_sbatch),
        "--config",
        "slurm.conf",
        "--gpu",
        "2",
        "--mem",
        "8G",
        "--max_jobs_run",
        "2",
        "JOB=1:3",
        "log/s.JOB.log",
        "echo",
        "task JOB",
        SBATCH_RECORD=str(record),
    )
    assert out.returncode == 0, out.stderr
    args = record.read_text().split()
    for expected in ("--wait", "--array=1-3%2", "--gres=gpu:2", "--mem=8G", "--partition=gpu", "--time=1:00:00"):
        assert expected in args
    for i in (1, 2, 3):
        log = (tmp_path / f"log/s.{i}.log").read_text()
        assert f"task {i}" in log and log.splitlines()[-1].startswith("# Ended (code 0)")


def test_run_slurm_multi_node_asks_for_nodes_and_fails_when_a_task_fails(tmp_path, fake_sbatch):
    record = tmp_path / "record"
    out = run_py(
        tmp_path,
        "--backend",
        "slurm",
        "--sbatch",
        str(fake_sbatch),
        "--num_nodes",
        "2",
        "train.log",
        "false",
        SBATCH_RECORD=str(record),
    )
    assert out.returncode == 1 and "train.log" in out.stderr
    assert "--nodes=2" in record.read_text().split()


def test_run_slurm_missing_config_is_a_clear_error(tmp_path, fake_sbatch):
    out = run_py(tmp_path, "--backend", "slurm", "--sbatch", str(fake_sbatch), "--config", "nope.conf", "x.log", "true")
    assert out.returncode != 0 and "no slurm config nope.conf" in out.stderr


# ---------------------------------------------------------------- split_keys.py


def split_keys(cwd: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(UTILS / "split_keys.py"), *map(str, args)], cwd=cwd, capture_output=True, text=True
    )


def test_split_keys_is_contiguous_balanced_and_refuses_more_parts_than_keys(tmp_path):
    keys = tmp_path / "wav.scp"
    keys.write_text("".join(f"k{i} /a/{i}.wav\n" for i in range(7)))
    assert split_keys(tmp_path, keys, 3, "split").returncode == 0
    parts = [(tmp_path / f"split/keys.{i}.scp").read_text().splitlines() for i in (1, 2, 3)]
    assert [len(p) for p in parts] == [3, 2, 2]
    assert sum(parts, []) == keys.read_text().splitlines()
    out = split_keys(tmp_path, keys, 8, "split")
    assert out.returncode == 1 and "cannot split the 7 keys" in out.stderr
    keys.write_text("k1 a\n\nk2 b\n")
    out = split_keys(tmp_path, keys, 1, "split")
    assert out.returncode == 1 and "wav.scp:2: empty line" in out.stderr


# ---------------------------------------------------------------- run.py: console lines, stopping, no orphans


def test_run_tee_shows_prefixed_lines_on_stderr_and_logs_everything(tmp_path):
    out = run_py(tmp_path, "--tee", "progress:", "t.log", "echo", "a", ";", "echo", "progress: 1/2", ";", "echo", "b")
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines() == ["progress: 1/2"] and out.stdout == ""
    assert ["a", "progress: 1/2", "b"] == (tmp_path / "t.log").read_text().splitlines()[3:6]


def processes_with(marker: str) -> dict:
    """PID -> command line (words joined by spaces) of the live processes whose command line holds ``marker``."""
    found = {}
    for entry in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError, UnicodeDecodeError):
            continue
        if marker in cmdline and state != "Z":
            found[int(entry)] = cmdline
    return found


def sleeps(seconds: str) -> list:
    return [p for p, cmd in processes_with(seconds).items() if cmd == f"sleep {seconds}"]


def wait_until(condition, seconds: float = 30.0) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_run_stops_what_a_job_left_running_when_the_job_ends(tmp_path):
    marker = f"{os.getpid()}{time.time_ns() % 10**6}"
    out = run_py(tmp_path, "bg.log", "sleep", f"9{marker}", "&", "echo", "started")
    assert out.returncode == 0, out.stderr
    assert "stopping 1 process(es) the job left running" in (tmp_path / "bg.log").read_text()
    assert wait_until(lambda: not processes_with(f"9{marker}"), 10)


STAGE = """#!/usr/bin/env bash
# a recipe stage in miniature: hold the output dir, run jobs through run.py (a grandchild sleep in each)
set -euo pipefail
python=${{PYTHON}}
. {utils}/lock.sh
hold exp/x
{utils}/run.py JOB=1:2 exp/x/log/job.JOB.log true '&&' sleep "$1" || exit 1
release exp/x
"""


@pytest.fixture
def stage(tmp_path):
    (tmp_path / "stage.sh").write_text(STAGE.format(utils=UTILS))
    (tmp_path / "run.sh").write_text('#!/usr/bin/env bash\nexec bash stage.sh "$@"\n')
    return tmp_path


@contextlib.contextmanager
def started_run(cwd: Path, seconds: str) -> Iterator[subprocess.Popen]:
    """./run.sh as a user starts it: its own process group (a terminal's job); killed if a test fails."""
    run = subprocess.Popen(
        ["bash", "run.sh", seconds],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHON": sys.executable},
    )
    try:
        yield run
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)
        run.wait()


@pytest.mark.parametrize("target", ["process group", "run.sh", "runner"])
def test_kill_9_of_the_run_leaves_no_job_running_and_the_next_run_takes_over_its_lock(stage, target):
    seconds = f"7{os.getpid()}{time.time_ns() % 10**6}"  # a number no other process holds
    rerun = ["bash", "run.sh", "0"]
    env = {**os.environ, "PYTHON": sys.executable}
    with started_run(stage, seconds) as run:
        assert wait_until(lambda: len(sleeps(seconds)) == 2)
        (runner,) = processes_with(f"run.py JOB=1:2 exp/x/log/job.JOB.log true && sleep {seconds}")

        second = subprocess.run(rerun, cwd=stage, capture_output=True, text=True, env=env)
        assert second.returncode == 1
        assert f"exp/x is in use by another run: PID {run.pid} on " in second.stderr
        assert f"bash stage.sh {seconds}" in second.stderr and f"kill {run.pid}" in second.stderr

        if target == "process group":
            os.killpg(run.pid, signal.SIGKILL)
        else:
            os.kill(run.pid if target == "run.sh" else runner, signal.SIGKILL)
        run.wait()
        assert wait_until(lambda: not processes_with(seconds)), processes_with(seconds)

    third = subprocess.run(rerun, cwd=stage, capture_output=True, text=True, env=env)
    assert third.returncode == 0, third.stderr
    if target != "runner":  # the runner's death ends the stage with an error: its lock is released
        assert f"taking over exp/.x.lock from the run PID {run.pid} on " in third.stderr
    assert (stage / "exp/.x.lock").read_text() == ""  # released: the next run has nothing to take over


def test_interrupt_stops_the_jobs_and_says_so(stage):
    seconds = f"8{os.getpid()}{time.time_ns() % 10**6}"
    with started_run(stage, seconds) as run:
        assert wait_until(lambda: len(sleeps(seconds)) == 2)
        os.killpg(run.pid, signal.SIGINT)  # Ctrl-C in the terminal
        assert run.wait(30) != 0
        assert "run.py: stopped by signal 2; its jobs were stopped" in run.stderr.read()
        assert wait_until(lambda: not processes_with(seconds))
    assert (stage / "exp/x/log/job.1.log").read_text().splitlines()[-1].startswith("# Stopped by signal 2")


def test_a_lock_still_held_by_processes_of_an_ended_run_names_them(tmp_path):
    # The run's script (a finished process) recorded itself; one of its processes still has the lock file open.
    script = subprocess.Popen(["sleep", "0"])
    script.wait()
    lock = tmp_path / "exp" / ".x.lock"
    lock.parent.mkdir()
    fd = os.open(lock, os.O_WRONLY | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, f"pid={script.pid}\nhost={socket.gethostname()}\nstarted=then\ncommand=bash old.sh\n".encode())
    orphan = subprocess.Popen(["sleep", "60"], pass_fds=(fd,))
    os.close(fd)
    try:
        out = sh(f"python={sys.executable}; . {UTILS}/lock.sh; hold exp/x; echo held", tmp_path)
        assert out.returncode == 1 and "held" not in out.stdout
        assert f"its script (PID {script.pid} on " in out.stderr and "bash old.sh) has ended" in out.stderr
        assert f"still hold exp/.x.lock: PIDs {orphan.pid}" in out.stderr
    finally:
        orphan.kill()
        orphan.wait()
    out = sh(f"python={sys.executable}; . {UTILS}/lock.sh; hold exp/x; echo held", tmp_path)
    assert out.returncode == 0 and "held" in out.stdout
    assert f"taking over exp/.x.lock from the run PID {script.pid}" in out.stderr


def test_run_slurm_cancels_its_job_when_stopped(tmp_path):
    record = tmp_path / "scancel.args"
    (tmp_path / "sbatch").write_text("#!/usr/bin/env bash\necho 4242\ntouch queued\nexec sleep 60\n")
    (tmp_path / "scancel").write_text(f'#!/usr/bin/env bash\necho "$@" > {record}\n')
    for name in ("sbatch", "scancel"):
        (tmp_path / name).chmod(0o755)
    args = ["--backend", "slurm", "--sbatch", str(tmp_path / "sbatch"), "--scancel", str(tmp_path / "scancel")]
    runner = subprocess.Popen(
        [sys.executable, str(UTILS / "run.py"), *args, "x.log", "true"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert wait_until(lambda: (tmp_path / "queued").exists())
        time.sleep(0.5)  # the runner reads the job id
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(30) == 128 + signal.SIGTERM
        assert "submitted slurm job 4242" in (err := runner.stderr.read())
        assert "stopped by signal 15; slurm job 4242 cancelled" in err
        assert record.read_text().split() == ["4242"]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(runner.pid, signal.SIGKILL)
