#!/usr/bin/env python3
"""Run a command as one job or an array of jobs, each with its own log: the recipes' job runner.

    utils/run.py [options] [JOB=1:N] LOG COMMAND...

``JOB=1:N`` (any variable name) runs N jobs; every occurrence of the variable in LOG and COMMAND is
replaced by the job's index 1..N. COMMAND runs under ``bash -c`` with stdout and stderr going to LOG,
so pipes and redirections work when quoted as one argument. Arguments without white space are passed
as they are (a bare ``|`` is a pipe), others are quoted, as Kaldi's run.pl does.

Each LOG starts with the command and the start time and ends with ``# Ended (code C) at ...,
elapsed time S s``. The runner always runs what it is given; skipping finished work is the caller's
business. The exit status is 0 when every job succeeded; otherwise it names the failed jobs and their
logs and exits 1. ``--tee PREFIX``: lines of the logs that start with PREFIX are also printed on the
runner's stderr as they are written (training's progress lines on the console; local backend).

No job outlives the runner (Linux): each job runs in its own process group under a small leader process
(this script, ``--job_leader``) that the kernel signals when the runner dies, even by ``kill -9``; the
leader then stops the job's whole group (SIGTERM, SIGKILL after GRACE seconds). The runner itself stops
its jobs on SIGINT/SIGTERM and when its parent (the recipe's shell) dies, so detach the recipe, not the
runner (``nohup ./run.sh &``). When a job ends, processes it left running in its group are stopped too.
Jobs read no stdin.

Backends:
  local  (default) runs the jobs on this machine, at most --max_jobs_run at a time. With --gpu G and
         more than one job, job j sees GPUs (j-1)*G .. j*G-1 (modulo the visible GPUs) through
         CUDA_VISIBLE_DEVICES, so decoding jobs spread over the machine's GPUs.
  slurm  submits one ``sbatch --wait --array=1-N%M`` job that runs this script with the local backend
         for its own index; --gpu G -> --gres=gpu:G, --num_threads T -> --cpus-per-task=T, --mem M ->
         --mem=M, --num_nodes K -> --nodes=K --ntasks-per-node=1 (the COMMAND then starts its own
         ``srun``). --config FILE adds sbatch options, one per line (# comments allowed). Stopping the
         runner (SIGINT/SIGTERM, or the death of the recipe's shell) cancels the job (scancel).
"""

import argparse
import ctypes
import datetime
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Tuple

RANGE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(\d+):(\d+)$")
GRACE = 10  # seconds a stopped job has between SIGTERM and SIGKILL
LEADER = "--job_leader"  # argv[1] of this script as a job's leader: LEADER RUNNER_PID -- COMMAND...
PR_SET_PDEATHSIG = 1


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s [options] [JOB=1:N] LOG COMMAND...",
    )
    parser.add_argument("--backend", choices=["local", "slurm"], default="local")
    parser.add_argument("--gpu", type=int, default=0, help="GPUs per job")
    parser.add_argument("--num_threads", type=int, default=1, help="CPU threads per job")
    parser.add_argument("--mem", default=None, help="memory per job (slurm), e.g. 16G")
    parser.add_argument("--max_jobs_run", type=int, default=0, help="jobs at a time (0: all)")
    parser.add_argument("--num_nodes", type=int, default=1, help="nodes per job (slurm)")
    parser.add_argument("--config", default=None, help="file of extra sbatch options (slurm)")
    parser.add_argument("--sbatch", default="sbatch", help="sbatch executable (slurm)")
    parser.add_argument("--scancel", default="scancel", help="scancel executable (slurm)")
    parser.add_argument("--tee", default=None, metavar="PREFIX", help="also print log lines starting with PREFIX")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def split_rest(rest: List[str]) -> Tuple[str, int, int, str, List[str]]:
    """``[JOB=a:b] LOG CMD...`` -> (variable, first, last, log, command words)."""
    var, first, last = "", 1, 1
    if rest and RANGE.match(rest[0]):
        var, a, b = RANGE.match(rest[0]).groups()
        first, last = int(a), int(b)
        if last < first:
            raise SystemExit(f"run.py: empty job range {rest[0]}")
        rest = rest[1:]
    if len(rest) < 2:
        raise SystemExit("run.py: expected [JOB=1:N] LOG COMMAND... (run.py --help)")
    if var and var not in rest[0]:
        raise SystemExit(f"run.py: the log {rest[0]} must contain {var}, or the jobs would share one log")
    return var, first, last, rest[0], rest[1:]


def join_command(words: List[str]) -> str:
    """Kaldi's convention: words without white space verbatim (``|`` stays a pipe), others quoted."""
    return " ".join(w if w and not re.search(r"\s", w) else shlex.quote(w) for w in words)


def substitute(text: str, var: str, index: int) -> str:
    """Every occurrence of the variable, as Kaldi's run.pl does (``keys.JOB.scp``, ``split_JOB``)."""
    return text.replace(var, str(index)) if var else text


def visible_gpus() -> List[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d for d in env.split(",") if d.strip()]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def now() -> str:
    return datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")


def die_with_parent(signum: int, parent: int) -> bool:
    """Have the kernel send ``signum`` to this process when its parent dies (Linux ``PR_SET_PDEATHSIG``, which
    holds even when the parent is killed by SIGKILL). False when ``parent`` is already gone."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: jobs are stopped on SIGINT/SIGTERM only
        pass
    return os.getppid() == parent


def group_members(group: int) -> List[int]:
    """Live processes of process group ``group`` (from /proc; zombies left out)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, _ppid, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
        if state != "Z" and int(pgrp) == group:
            members.append(int(entry))
    return members


def wait_gone(pids: List[int], group: int, seconds: float) -> List[int]:
    deadline = time.time() + seconds
    while pids and time.time() < deadline:
        time.sleep(0.1)
        pids = [p for p in group_members(group) if p in pids]
    return pids


def lead(runner: int, words: List[str]) -> int:
    """A job's leader, in the job's own process group: runs the job; when the runner dies or signals the group,
    stops the whole group (SIGTERM, SIGKILL after GRACE s); stops what the job left running when it ends."""
    group, me = os.getpgrp(), os.getpid()
    stopping = []

    def stop(signum, _frame):
        if not stopping:  # the group's SIGTERM reaches this leader too, and lands here again
            stopping.append(signum)
            signal.signal(signal.SIGALRM, lambda *_: os.killpg(group, signal.SIGKILL))
            signal.alarm(GRACE)
            os.killpg(group, signal.SIGTERM)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop)
    if not die_with_parent(signal.SIGTERM, runner) or stopping:
        return 128 + signal.SIGTERM
    proc = subprocess.Popen(words, stdin=subprocess.DEVNULL, close_fds=False)
    if stopping:  # a stop that came while the job started
        os.killpg(group, signal.SIGTERM)
    code = proc.wait()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    left = [p for p in group_members(group) if p != me]
    left = wait_gone(left, group, 1.0)  # e.g. data loader workers, ending after their parent
    if left:
        print(f"# run.py: stopping {len(left)} process(es) the job left running: {left}", flush=True)
        os.killpg(group, signal.SIGTERM)
        for pid in wait_gone(left, group, 3.0):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return code if code >= 0 else 128 - code


class Follower:
    """``--tee PREFIX``: prints the lines of growing job logs that start with PREFIX on stderr."""

    def __init__(self, prefix: Optional[str]):
        self.prefix = prefix
        self.files = {}  # log path -> [binary handle, unfinished line]

    def add(self, log: Path) -> None:
        if self.prefix:
            self.files[log] = [open(log, "rb"), b""]

    def poll(self) -> None:
        for state in self.files.values():
            data = state[0].read()
            if data:
                lines = (state[1] + data).split(b"\n")
                state[1] = lines.pop()
                for line in lines:
                    text = line.decode("utf-8", errors="replace").rstrip("\r")
                    if text.startswith(self.prefix):
                        print(text, file=sys.stderr, flush=True)

    def remove(self, log: Path) -> None:
        self.poll()
        state = self.files.pop(log, None)
        if state:
            state[0].close()


def run_local(args, var: str, first: int, last: int, log: str, command: str) -> int:
    gpus = visible_gpus() if args.gpu > 0 and last > first else []
    pending = list(range(first, last + 1))
    limit = args.max_jobs_run if args.max_jobs_run > 0 else len(pending)
    running = {}  # index -> (leader process, log file, start time)
    failed = []
    follower = Follower(args.tee)
    stopping = []

    def stop(signum, _frame):
        # Each job's group gets SIGTERM (its leader SIGKILLs it after GRACE s); a second signal kills at once.
        for proc, _, _ in running.values():
            try:
                os.killpg(proc.pid, signal.SIGKILL if stopping else signal.SIGTERM)
            except ProcessLookupError:
                pass
        if stopping:
            raise SystemExit(128 + signum)
        stopping.append(signum)
        deadline = time.time() + GRACE + 5
        for proc, handle, _ in running.values():
            try:
                proc.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass
            handle.write(f"# Stopped by signal {signum} at {now()}\n")
            handle.close()
        follower.poll()
        print(f"run.py: stopped by signal {signum}; its jobs were stopped (see {log})", file=sys.stderr)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    while pending or running:
        while pending and len(running) < limit:
            index = pending.pop(0)
            job_log = Path(substitute(log, var, index))
            job_log.parent.mkdir(parents=True, exist_ok=True)
            job_command = substitute(command, var, index)
            env = dict(os.environ)
            if gpus:
                start = (index - first) * args.gpu
                env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus[(start + k) % len(gpus)] for k in range(args.gpu))
            handle = open(job_log, "w", encoding="utf-8")
            handle.write(f"# {job_command}\n# Started at {now()}\n#\n")
            handle.flush()
            follower.add(job_log)
            leader = [sys.executable, os.path.abspath(__file__), LEADER, str(os.getpid()), "--"]
            proc = subprocess.Popen(
                leader + ["bash", "-c", job_command],
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=env,
                process_group=0,
                close_fds=False,  # a lock the caller holds (utils/lock.sh) stays held while any job lives
            )
            running[index] = (proc, handle, time.time())
        follower.poll()
        for index in list(running):
            proc, handle, started = running[index]
            if proc.poll() is None:
                continue
            elapsed = time.time() - started
            follower.remove(Path(substitute(log, var, index)))
            handle.write(f"# Accounting: time={elapsed:.0f} threads={args.num_threads}\n")
            handle.write(f"# Ended (code {proc.returncode}) at {now()}, elapsed time {elapsed:.0f} s\n")
            handle.close()
            del running[index]
            if proc.returncode != 0:
                failed.append(index)
        time.sleep(0.05)

    if failed:
        failed.sort()
        logs = ", ".join(substitute(log, var, i) for i in failed[:5]) + (" ..." if len(failed) > 5 else "")
        print(f"run.py: {len(failed)} of {last - first + 1} jobs failed; see {logs}", file=sys.stderr)
        return 1
    return 0


def read_config(path: Optional[str]) -> List[str]:
    if not path:
        return []
    if not Path(path).is_file():
        raise SystemExit(f"run.py: no slurm config {path} (one sbatch option per line; create it or drop --config)")
    words = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        words += shlex.split(line)
    return words


def run_slurm(args, var: str, first: int, last: int, log: str, words: List[str]) -> int:
    log_dir = Path(substitute(log, var, first)).parent
    queue_dir = log_dir / "q"
    queue_dir.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(log).name.replace(var, "") if var else Path(log).name)
    # The job runs this script with the local backend for its own index; the words reach it unchanged.
    quoted = [shlex.quote(w) for w in [sys.executable, os.path.abspath(__file__)]]
    quoted += ["--num_threads", str(args.num_threads)]
    if var:
        quoted += [f"{var}=${{SLURM_ARRAY_TASK_ID}}:${{SLURM_ARRAY_TASK_ID}}"]
    quoted += [shlex.quote(w) for w in [log] + words]
    script = queue_dir / f"{name}.sh"
    script.write_text(
        f"#!/usr/bin/env bash\ncd {shlex.quote(os.getcwd())}\nexec {' '.join(quoted)}\n", encoding="utf-8"
    )
    sbatch = [args.sbatch, "--wait", "--parsable", f"--job-name={name}", "--export=ALL"]
    sbatch += [f"--cpus-per-task={args.num_threads}"]
    if args.gpu > 0:
        sbatch += [f"--gres=gpu:{args.gpu}"]
    if args.mem:
        sbatch += [f"--mem={args.mem}"]
    if args.num_nodes > 1:
        sbatch += [f"--nodes={args.num_nodes}", "--ntasks-per-node=1"]
    if var:
        throttle = f"%{args.max_jobs_run}" if args.max_jobs_run > 0 else ""
        sbatch += [f"--array={first}-{last}{throttle}", f"--output={queue_dir}/{name}.%a.out"]
    else:
        sbatch += [f"--output={queue_dir}/{name}.out"]
    sbatch += read_config(args.config) + [str(script)]
    code = wait_cancelling(subprocess.Popen(sbatch, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True), args)
    failed = [i for i in range(first, last + 1) if not ended_ok(Path(substitute(log, var, i)))]
    if code != 0 or failed:
        logs = ", ".join(substitute(log, var, i) for i in failed[:5]) or str(queue_dir)
        print(
            f"run.py: slurm job failed (sbatch exit {code}; {len(failed)} jobs unfinished); see {logs}", file=sys.stderr
        )
        return 1
    return 0


def wait_cancelling(sbatch: subprocess.Popen, args) -> int:
    """Waits for ``sbatch --wait --parsable``; on SIGINT/SIGTERM (and so when the recipe's shell dies) cancels
    the job it submitted (``scancel``), which would otherwise run on without anyone waiting for it."""
    job = []

    def stop(signum, _frame):
        if job:
            subprocess.run([args.scancel, job[0]], stdin=subprocess.DEVNULL)
        sbatch.terminate()
        print(
            f"run.py: stopped by signal {signum}; slurm job {job[0] if job else '(not submitted)'} cancelled",
            file=sys.stderr,
        )
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    first = sbatch.stdout.readline().strip()  # "JOBID[;CLUSTER]" as soon as the job is queued
    if first:
        job.append(first.split(";")[0])
        print(f"run.py: submitted slurm job {job[0]}", file=sys.stderr)
    sbatch.stdout.read()
    return sbatch.wait()


def ended_ok(log: Path) -> bool:
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return False
    return bool(lines) and lines[-1].startswith("# Ended (code 0)")


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [LEADER]:
        return lead(int(argv[1]), argv[3:])
    if not die_with_parent(signal.SIGTERM, os.getppid()):
        raise SystemExit("run.py: the calling process has ended; nothing was run")
    args = get_parser().parse_args(argv)
    var, first, last, log, words = split_rest(args.rest)
    if args.backend == "local":
        if args.num_nodes > 1:
            raise SystemExit("run.py: --num_nodes > 1 needs a cluster backend (cmd_backend=slurm in cmd.sh)")
        return run_local(args, var, first, last, log, join_command(words))
    return run_slurm(args, var, first, last, log, words)


if __name__ == "__main__":
    sys.exit(main())
