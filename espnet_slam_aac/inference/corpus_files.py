"""The files of a corpus captioning run (``inference.corpus``): per-job results that survive a kill, and the merge.

An output folder OUT holds:

    setup.json             what is captioned with what; a rerun with other settings is refused
    results/J-of-N.jsonl   job J's records (of N jobs), appended and flushed batch by batch
    progress/J-of-N.json   job J's counts, rewritten every few seconds (summed by ``progress_line``)
    captions.jsonl         merged: the record of every captioned clip, once, in input order
    captions.tsv           ``key<TAB>caption``, the same clips in the same order
    failed.tsv             ``key<TAB>path<TAB>reason`` of every input that could not be captioned, in input order
    summary.json           the counts of the merge and the speed of the last run

A record is one JSON line: ``{"key", "path", "duration", "caption", "best", "candidates": [{"text", "beam_size",
"logprob", "length", "similarity" (CLAP-Refine only)}]}``, or ``{"key", "path", "error"}`` for a clip that
could not be captioned. A job killed mid-write leaves at most a torn last line: the next run of the job
truncates it (its own file, under an flock that also keeps two processes off one job) and every reader
ignores it. Every key found in any results file counts as done, whatever the number of jobs that wrote it.
"""

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

from espnet_slam_aac.errors import ConfigError, DataError
from espnet_slam_aac.utils.fileio import atomic_output, write_atomically

RESULTS, PROGRESS, SETUP = "results", "progress", "setup.json"
CAPTIONS, CAPTIONS_TSV, FAILED, SUMMARY = "captions.jsonl", "captions.tsv", "failed.tsv", "summary.json"
# failure reasons counted by kind in the summary: (kind, words of our messages that say it)
FAILURE_KINDS = (
    ("missing", ("not found", "is not a file")),
    ("empty caption", ("caption is empty",)),
    ("empty", ("empty",)),
    ("too short", ("too short", "shorter than")),
    ("non-finite", ("NaN", "infinite")),
    ("unreadable", ("cannot read", "unreadable", "corrupt")),
)


def job_name(job: int, nj: int) -> str:
    return f"{job}-of-{nj}"


def record_line(record: dict) -> bytes:
    return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")


def scan(path: Path) -> Tuple[List[Tuple[int, str]], int]:
    """``([(byte offset, key), ...], end of the last complete line)`` of a results file. A last line without
    its newline is a torn write and left out; a complete line that is not a record is an error."""
    entries, end = [], 0
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.endswith(b"\n"):
                break
            try:
                key = json.loads(line)["key"]
            except (ValueError, KeyError, TypeError) as err:
                raise DataError(
                    f"{path}:{number}: not a caption record ({err}); delete this line and rerun (the clip is "
                    "captioned again)"
                ) from None
            entries.append((end, key))
            end += len(line)
    return entries, end


def result_files(out: Path) -> List[Path]:
    return sorted((out / RESULTS).glob("*.jsonl"))


def done_keys(out: Path) -> Set[str]:
    """Keys with a record in any results file of ``out``."""
    return {key for path in result_files(out) for _, key in scan(path)[0]}


class ResultWriter:
    """Appends one job's records to its results file, flushed per call; holds the file's flock meanwhile."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.file = open(path, "ab")
        try:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.close()
            raise DataError(
                f"{path} is being written by another process (this job runs twice?); wait for it or stop it"
            ) from None
        _, end = scan(path)
        if end < self.file.seek(0, os.SEEK_END):  # a torn last line of a killed run
            self.file.truncate(end)

    def write(self, records: List[dict]) -> None:
        self.file.write(b"".join(record_line(r) for r in records))
        self.file.flush()

    def close(self) -> None:
        self.file.close()  # releases the flock


def check_setup(out: Path, setup: dict) -> None:
    """Write ``setup.json``, or refuse a run whose settings differ from those of the results already there."""
    path = out / SETUP
    if not path.is_file():
        write_atomically(path, [json.dumps(setup, indent=1, sort_keys=True)])
        return
    old = read_setup(out)
    changed = [
        f"{k}: {old.get(k)!r} -> {setup.get(k)!r}" for k in sorted(set(old) | set(setup)) if old.get(k) != setup.get(k)
    ]
    if changed:
        raise ConfigError(
            f"{out} holds captions made with other settings ({'; '.join(changed)}); rerun with the settings of "
            f"{path}, or choose another output folder"
        )


def read_setup(out: Path) -> dict:
    path = out / SETUP
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{out}: no {SETUP}; is this the output folder of a corpus captioning run?") from None
    except ValueError as err:
        raise ConfigError(f"{path}: not JSON ({err}); delete it and rerun with the settings you want") from None


def write_progress(out: Path, name: str, counts: dict) -> None:
    write_atomically(out / PROGRESS / f"{name}.json", [json.dumps(counts)])


def read_progress(out: Path, nj: Optional[int], since: float) -> List[dict]:
    """The progress files of this run's jobs (of ``nj`` jobs, any if None; written at or after ``since``)."""
    found = []
    for path in sorted((out / PROGRESS).glob(f"*-of-{nj or '*'}.json")):
        try:
            if path.stat().st_mtime >= since:
                found.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):  # being replaced right now: next time
            continue
    return found


def progress_line(jobs: List[dict], since: float, expected_jobs: Optional[int] = None) -> str:
    """``N / TOTAL clips (F failed) in S s, R clips/s, about T left`` of jobs' counts (``write_progress``);
    TOTAL and the time left once every job (``expected_jobs``) has counted its clips."""
    processed = sum(j["captioned"] + j["failed"] for j in jobs)
    failed = sum(j["failed"] for j in jobs)
    elapsed = max(time.time() - since, 1e-9)
    rate = processed / elapsed
    counted = jobs and len(jobs) == (expected_jobs or len(jobs)) and all(j.get("todo") is not None for j in jobs)
    if not counted:
        return f"{processed} clips ({failed} failed) in {elapsed:.0f} s, {rate:.2f} clips/s"
    todo = sum(j["todo"] for j in jobs)
    left = duration((todo - processed) / rate) if rate > 0 else "unknown time"
    return f"{processed} / {todo} clips ({failed} failed) in {elapsed:.0f} s, {rate:.2f} clips/s, {left} left"


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"about {seconds:.0f} s"
    if seconds < 5400:
        return f"about {seconds / 60:.0f} min"
    return f"about {seconds / 3600:.1f} h"


def failure_kind(reason: str) -> str:
    for kind, words in FAILURE_KINDS:
        if any(w in reason for w in words):
            return kind
    return "other"


def _tsv(text: str) -> str:
    return " ".join(str(text).replace("\t", " ").splitlines())


def merge(out: Path, entries: Iterator, since: Optional[float] = None) -> dict:
    """Write ``captions.jsonl``, ``captions.tsv`` and ``failed.tsv`` in the order of ``entries`` (the input
    listing: ``ClipRef``/``Problem``), each key once, and ``summary.json``; returns the summary. A clip of the
    listing without a record is an error (the run is not finished) and nothing is written."""
    files = result_files(out)
    where: Dict[str, Tuple[int, int]] = {}
    for number, path in enumerate(files):
        for offset, key in scan(path)[0]:
            where.setdefault(key, (number, offset))
    handles = [open(path, "rb") for path in files]
    inputs = captioned = missing = 0
    kinds: Dict[str, int] = {}
    first_missing = None
    try:
        with atomic_output(out / CAPTIONS, binary=True) as jsonl, atomic_output(out / CAPTIONS_TSV) as tsv:
            with atomic_output(out / FAILED) as failed:
                failed.write("key\tpath\treason\n")
                for entry in entries:
                    inputs += 1
                    reason, kind = getattr(entry, "reason", None), "bad input"  # a Problem of the listing
                    if reason is None:
                        located = where.pop(entry.key, None)
                        if located is None:
                            missing += 1
                            first_missing = first_missing or entry.key
                            continue
                        handles[located[0]].seek(located[1])
                        line = handles[located[0]].readline()
                        record = json.loads(line)
                        if "error" not in record:
                            jsonl.write(line)
                            tsv.write(f"{_tsv(record['key'])}\t{_tsv(record['caption'])}\n")
                            captioned += 1
                            continue
                        reason, kind = record["error"], failure_kind(record["error"])
                    failed.write(f"{_tsv(entry.key)}\t{_tsv(entry.path)}\t{_tsv(reason)}\n")
                    kinds[kind] = kinds.get(kind, 0) + 1
                if missing:
                    raise DataError(
                        f"{missing} of {inputs} clips have no caption yet (e.g. {first_missing!r}): a job did not "
                        "finish; rerun the same command to caption them"
                    )
    finally:
        for handle in handles:
            handle.close()
    summary = {
        "inputs": inputs,
        "captioned": captioned,
        "failed": sum(kinds.values()),
        "failed_by_kind": dict(sorted(kinds.items())),
        "results_not_in_input": len(where),  # of clips no longer listed (left out)
    }
    if since is not None:
        jobs = read_progress(out, None, since)
        processed = sum(j["captioned"] + j["failed"] for j in jobs)
        seconds = max(time.time() - since, 1e-9)
        summary["this_run"] = {
            "clips": processed,
            "seconds": round(seconds, 1),
            "clips_per_s": round(processed / seconds, 3),
        }
    write_atomically(out / SUMMARY, [json.dumps(summary, indent=1)])
    return summary
