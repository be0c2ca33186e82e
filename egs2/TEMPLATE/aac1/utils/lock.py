#!/usr/bin/env python3
"""Take an output dir's lock for one run of a recipe stage: the helper of utils/lock.sh.

    lock.py LOCK_FILE FD PID

FD is the caller's open descriptor of LOCK_FILE (bash: ``exec {fd}>>LOCK_FILE``) and PID the caller's
process id. The flock taken here on FD outlives this helper: it belongs to the open file, which the caller
and every process it starts share, so the lock is held until the last of them has ended, however it ended
(the kernel releases it; a killed run never blocks the next one). LOCK_FILE records the holder (PID, host,
start time, command). When another run holds the lock, this prints who and exits 1. A record in a file
that nobody holds is from a run that ended without releasing its lock: it is taken over, with a log line.
"""

import datetime
import fcntl
import os
import socket
import sys
from pathlib import Path
from typing import Dict, List, Optional


def command_of(pid: int) -> str:
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    return " ".join(w.decode("utf-8", errors="replace") for w in words if w)


def read_record(path: Path) -> Dict[str, str]:
    """``name=value`` lines (the value runs to the end of the line)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holders(path: Path) -> List[int]:
    """Processes of this host with the lock file open (the lock's holders)."""
    target = path.stat()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                st = os.stat(f"/proc/{entry}/fd/{fd}")
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                found.append(int(entry))
                break
    return found


def describe(record: Dict[str, str]) -> str:
    return f"PID {record.get('pid', '?')} on {record.get('host', '?')} since {record.get('started', '?')}"


def refusal(path: Path, record: Dict[str, str]) -> str:
    out_dir = path.with_name(path.name[1 : -len(".lock")])
    head = f"{out_dir} is in use by another run"
    pid = int(record["pid"]) if record.get("pid", "").isdigit() else None
    same_host = record.get("host") == socket.gethostname()
    if pid is None:
        return f"{head} (it is starting: {path} holds no record yet); wait for it or stop it, then rerun"
    if same_host and not alive(pid):
        others = [p for p in holders(path) if p not in (os.getpid(), os.getppid())]
        return (
            f"{head}: its script ({describe(record)}: {record.get('command', '?')}) has ended, but processes it "
            f"started still hold {path}: PIDs {' '.join(map(str, others)) or '?'}; they are stopped within "
            "seconds (or kill them), then rerun"
        )
    return (
        f"{head}: {describe(record)}: {record.get('command', '?')}\n"
        f"  wait for it to finish, or stop it (kill {pid}) and rerun (lock: {path})"
    )


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3 or not argv[1].isdigit() or not argv[2].isdigit():
        print("usage: lock.py LOCK_FILE FD PID (see utils/lock.sh)", file=sys.stderr)
        return 2
    path, fd, pid = Path(argv[0]), int(argv[1]), int(argv[2])
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"error: {refusal(path, read_record(path))}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: cannot lock {path}: {e.strerror}", file=sys.stderr)
        return 1
    old = read_record(path)
    if old:
        print(
            f"lock.py: taking over {path} from the run {describe(old)}, which ended without releasing it",
            file=sys.stderr,
        )
    started = datetime.datetime.now().isoformat(timespec="seconds")
    record = f"pid={pid}\nhost={socket.gethostname()}\nstarted={started}\ncommand={command_of(pid)}\n"
    os.ftruncate(fd, 0)
    os.write(fd, record.encode("utf-8", errors="replace"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
