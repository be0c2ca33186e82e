"""Caption a corpus: millions of clips, streamed, in jobs that can be killed and rerun at any point.

    from espnet_slam_aac import Speech2Caption
    from espnet_slam_aac.inference.corpus import iter_captions

    s2c = Speech2Caption.from_pretrained("me/slam-aac-clotho", batch_size=16)
    for record in iter_captions(s2c, "/data/unlabelled"):     # a folder, a wav.scp or a jsonl
        print(record["key"], record.get("caption") or record["error"])

Inputs (``list_inputs``) are listed lazily, so the first caption comes before a folder of a million files has
been walked: a **folder** is walked recursively with ``os.scandir``, each folder's entries in name order, files
with an audio suffix (``data.audio.AUDIO_SUFFIXES``) taken, keyed by their path relative to the folder; a **wav.scp**
("KEY PATH" lines) and a **jsonl** (``{"key": ..., "source": PATH}`` lines, SLAM-AAC's manifest format; a
relative source is relative to the jsonl's folder, a missing key is the source) are read line by line. A line
that names no clip (no path, bad JSON, a key seen before) is a ``Problem``: it is listed among the failures
and never stops the corpus; so is an audio file that cannot be read, is empty, too short or not finite.

Work is cut into windows of ``window`` consecutive inputs; job J of N takes the windows w with
``w % N == J - 1``, so every job can list the inputs itself (no split files) and any number of jobs covers
them. A window's clips are decoded and resampled by loader workers and batched by duration (``loader``), so a
clip's result does not depend on the number of jobs, on kills or on resuming (``window`` and ``batch_size``
being the same). ``run_job`` appends each batch's records to the job's results file and flushes it; a rerun
skips every key already written (by any job) and goes on. ``corpus_files.merge`` writes the merged files.
"""

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Set, Tuple, Union

import torch

from espnet_slam_aac.data.audio import AUDIO_SUFFIXES
from espnet_slam_aac.errors import DataError
from espnet_slam_aac.inference import corpus_files
from espnet_slam_aac.inference.loader import ClipRef, Failed, Preparer, load_windows, window_batches

logger = logging.getLogger(__name__)

WINDOW_BATCHES = 16  # default window: this many model batches
PROGRESS_SECONDS = 10.0  # a job logs and writes its progress this often


@dataclass(frozen=True)
class Problem:
    """An input entry that names no clip to caption (listed in ``failed.tsv``)."""

    index: int
    key: str
    path: str
    reason: str


Entry = Union[ClipRef, Problem]


def list_inputs(spec: Union[str, os.PathLike]) -> Iterator[Entry]:
    """The clips of a folder (recursive), a wav.scp, a jsonl or one audio file, lazily, in input order."""
    path = Path(spec)
    if path.is_dir():
        items = _walk(path)
    elif not path.is_file():
        raise DataError(f"{spec}: no such folder or file; give a folder of audio files, a wav.scp or a jsonl")
    elif path.suffix.lower() in AUDIO_SUFFIXES:
        items = iter([(str(spec), str(spec), None)])
    elif path.suffix.lower() == ".jsonl":
        items = _jsonl(path)
    else:
        items = _wav_scp(path)
    for index, (key, audio, reason) in enumerate(items):
        yield ClipRef(index, key, audio) if reason is None else Problem(index, key, audio, reason)


def _walk(root: Path) -> Iterator[Tuple[str, str, Optional[str]]]:
    seen: Set[Tuple[int, int]] = set()  # folders visited (a symlink loop is walked once)

    def visit(folder: str, prefix: str):
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen:
                return
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as found:
                entries = sorted(found, key=lambda e: e.name)
        except OSError as err:
            yield prefix or "./", folder, f"cannot list folder: {err.strerror or err}"
            return
        for entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                yield from visit(entry.path, f"{prefix}{entry.name}/")
            elif os.path.splitext(entry.name)[1].lower() in AUDIO_SUFFIXES:
                yield f"{prefix}{entry.name}", entry.path, None

    yield from visit(os.path.abspath(root), "")


def _wav_scp(path: Path) -> Iterator[Tuple[str, str, Optional[str]]]:
    seen = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            key, _, audio = line.strip().partition(" ")
            audio = audio.strip()
            if not key:
                continue
            if not audio:
                yield key, "", f"{path} line {number}: expected 'KEY PATH'"
            elif audio.endswith("|"):
                yield key, audio, f"{path} line {number}: piped commands are not supported; give a file path"
            elif key in seen:
                yield key, audio, f"{path} line {number}: key repeats line {seen[key]}"
            else:
                seen[key] = number
                yield key, audio, None


def _jsonl(path: Path) -> Iterator[Tuple[str, str, Optional[str]]]:
    seen = {}
    with open(path, encoding="utf-8-sig") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError as err:
                yield f"{path}:{number}", "", f"{path} line {number}: not JSON ({err})"
                continue
            source = item.get("source") if isinstance(item, dict) else None
            key = item.get("key", source) if isinstance(item, dict) else None
            if not isinstance(source, str) or not source or not isinstance(key, str) or not key:
                yield (
                    str(key or f"{path}:{number}"),
                    "",
                    f'{path} line {number}: expected {{"key": ..., "source": PATH}}',
                )
                continue
            audio = str(path.parent / source) if not os.path.isabs(source) else source
            if key in seen:
                yield key, audio, f"{path} line {number}: key repeats line {seen[key]}"
            else:
                seen[key] = number
                yield key, audio, None


def job_windows(entries: Iterable[Entry], window: int, job: int = 1, nj: int = 1) -> Iterator[List[ClipRef]]:
    """The clips of the windows (``window`` consecutive inputs) that job ``job`` of ``nj`` owns."""
    if not 1 <= job <= nj:
        raise DataError(f"job {job} of {nj}: jobs are numbered 1 to {nj}")
    current: List[ClipRef] = []
    number = None
    for entry in entries:
        w = entry.index // window
        if w % nj != job - 1:
            continue
        if w != number and current:
            yield current
            current = []
        number = w
        if isinstance(entry, ClipRef):
            current.append(entry)
    if current:
        yield current


def result_record(clip, result) -> dict:
    """The JSON record of a captioned clip (``loader.Loaded``, ``CaptionResult``); an empty caption is a failure
    (a broken model or tokenizer), as in ``caption`` and ``decode``."""
    if not result.caption.strip():
        return failure_record(clip.ref, "the caption is empty: a broken model or tokenizer?")
    candidates = [
        {"text": c.text, "beam_size": c.beam_size, "logprob": c.logprob, "length": c.length} for c in result.candidates
    ]
    for candidate, similarity in zip(candidates, result.similarities or []):
        candidate["similarity"] = similarity
    return {
        "key": clip.ref.key,
        "path": clip.ref.path,
        "duration": clip.duration,
        "caption": result.caption,
        "best": result.best,
        "candidates": candidates,
    }


def failure_record(ref: ClipRef, reason: str) -> dict:
    return {"key": ref.key, "path": ref.path, "error": reason}


def _caption_batch(s2c, batch) -> List[dict]:
    """Records of one batch. When the batch fails in the model (e.g. out of memory on a huge clip), its clips
    are tried one by one and those that still fail are failures; if every one fails, the error is raised."""

    def run(clips):
        raws = [c.raw for c in clips] if s2c.clap is not None else None
        return s2c.caption_prepared([torch.from_numpy(c.wave) for c in clips], raws)

    try:
        return [result_record(c, r) for c, r in zip(batch, run(batch))]
    except Exception as err:  # noqa: BLE001 - one clip must not stop the corpus; a systematic error is re-raised
        if len(batch) == 1:
            raise
        logger.warning(
            "a batch of %d clips failed (%s: %s); captioning them one by one", len(batch), type(err).__name__, err
        )
    records, errors = [], 0
    for clip in batch:
        try:
            records.append(result_record(clip, run([clip])[0]))
        except Exception as err:  # noqa: BLE001
            errors += 1
            records.append(failure_record(clip.ref, f"captioning failed: {type(err).__name__}: {err}"))
            last = err
    if errors == len(batch):
        raise last
    return records


def caption_windows(
    s2c, windows: Iterable[List[ClipRef]], num_workers: int = 2, skip: Set[str] = frozenset()
) -> Iterator[List[dict]]:
    """Records of the clips of ``windows`` not in ``skip``, a list per model batch (and per window's failures).
    Skipped clips are still loaded and batched with the others, so that batches are as in an uninterrupted run."""
    for window in load_windows(windows, Preparer.of(s2c), num_workers, s2c.batch_size):
        failures = [failure_record(f.ref, f.reason) for f in window if isinstance(f, Failed) and f.ref.key not in skip]
        if failures:
            yield failures
        for batch in window_batches(window, s2c.batch_size):
            if all(c.ref.key in skip for c in batch):
                continue
            yield [r for r in _caption_batch(s2c, batch) if r["key"] not in skip]


def iter_captions(
    s2c,
    inputs: Union[str, os.PathLike, Iterable[Union[str, Tuple[str, str]]]],
    num_workers: int = 2,
    window: Optional[int] = None,
) -> Iterator[dict]:
    """Caption a corpus in this process: one record (``corpus_files``) per input, failures included (with
    ``"error"``), as batches finish (sorted by duration within windows: use the key, not the order).

    ``inputs``: a folder, wav.scp, jsonl or audio file (``list_inputs``), or an iterable of paths or
    ``(key, path)`` pairs. ``num_workers`` loader processes decode and resample (0: this process)."""
    if isinstance(inputs, (str, os.PathLike)):
        entries = list_inputs(inputs)
    else:
        pairs = ((x, x) if isinstance(x, (str, os.PathLike)) else x for x in inputs)
        entries = (ClipRef(i, str(key), str(path)) for i, (key, path) in enumerate(pairs))
    problems: List[Problem] = []

    def noting_problems(entries):
        for entry in entries:
            if isinstance(entry, Problem):
                problems.append(entry)
            yield entry

    windows = job_windows(noting_problems(entries), window or WINDOW_BATCHES * s2c.batch_size)
    for records in caption_windows(s2c, windows, num_workers):
        yield from records
        while problems:
            yield failure_record(problems[0], problems.pop(0).reason)
    for problem in problems:
        yield failure_record(problem, problem.reason)


class Progress:
    """A job's counts: logged and written to ``progress/J-of-N.json`` every ``PROGRESS_SECONDS``."""

    def __init__(self, out: Path, name: str, done_before: int):
        self.out, self.name, self.start = out, name, time.time()
        self.counts = {"pid": os.getpid(), "done_before": done_before, "captioned": 0, "failed": 0, "todo": None}
        self.last = 0.0
        self.update([])

    def update(self, records: List[dict], force: bool = False) -> None:
        for record in records:
            self.counts["failed" if "error" in record else "captioned"] += 1
        now = time.time()
        if not force and now - self.last < PROGRESS_SECONDS:
            return
        self.last = now
        self.counts["elapsed"] = round(now - self.start, 1)
        corpus_files.write_progress(self.out, self.name, self.counts)
        if self.counts["captioned"] + self.counts["failed"]:
            logger.info("job %s: %s", self.name, corpus_files.progress_line([self.counts], self.start, 1))


def _count_todo(progress: Progress, entries: Iterable[Entry], window: int, job: int, nj: int, done: Set[str]) -> None:
    progress.counts["todo"] = sum(1 for w in job_windows(entries, window, job, nj) for c in w if c.key not in done)


def run_job(
    s2c, spec, out: Path, job: int = 1, nj: int = 1, window: Optional[int] = None, num_workers: int = 2
) -> dict:
    """Caption job ``job`` of ``nj`` of the inputs ``spec`` into ``out/results/J-of-N.jsonl``, skipping every
    key already in a results file of ``out``; returns the job's counts."""
    out, window = Path(out), window or WINDOW_BATCHES * s2c.batch_size
    name = corpus_files.job_name(job, nj)
    writer = corpus_files.ResultWriter(out / corpus_files.RESULTS / f"{name}.jsonl")
    try:
        done = corpus_files.done_keys(out)
        progress = Progress(out, name, len(done))
        # counted in a thread started once the loader's workers are forked (a fork copies no other thread)
        counter = threading.Thread(
            target=_count_todo, args=(progress, list_inputs(spec), window, job, nj, done), daemon=True
        )
        windows = (
            w if any(c.key not in done for c in w) else [] for w in job_windows(list_inputs(spec), window, job, nj)
        )
        for records in caption_windows(s2c, windows, num_workers, skip=done):
            writer.write(records)
            progress.update(records)
            if not counter.is_alive() and counter.ident is None:
                counter.start()
        progress.counts["todo"] = progress.counts["captioned"] + progress.counts["failed"]  # all of it, counted or not
        progress.update([], force=True)
    finally:
        writer.close()
    return progress.counts
