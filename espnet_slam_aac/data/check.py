"""The data-dir checker: every problem of a data dir listed with file, line, key and what to do."""

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np

from espnet_slam_aac.data.audio import probe_many
from espnet_slam_aac.data.records import MAX_LISTED, PathLike, caption_problem, key_problem
from espnet_slam_aac.errors import AudioError, DataError

REQUIRED_FILES = ("wav.scp", "text", "utt2spk", "spk2utt")
PER_UTT_FILES = ("text", "utt2spk", "utt2num_samples", "utt2dur")  # keys must equal wav.scp's


@dataclass(frozen=True)
class Row:
    line: int
    key: str
    value: str


@dataclass(frozen=True)
class DataDirSummary:
    data_dir: Path
    num_utterances: int
    num_reference_files: int  # text_spk1..N


def validate_data_dir(data_dir: PathLike, *, audio: str = "header", num_workers: int = 8) -> DataDirSummary:
    """Check a data dir; DataError listing every problem (file, line, key, what to do) if any.

    ``audio``: "none", "exists" (files exist), "header" (also readable, >= one frame, and matching
    ``utt2num_samples``) or "decode" (also decode every file).
    """
    if audio not in ("none", "exists", "header", "decode"):
        raise ValueError(f"audio must be none|exists|header|decode, got {audio!r}")
    tables, problems = check_tables(Path(data_dir))
    if not problems and audio != "none":
        problems += _check_audio(Path(data_dir), tables, audio, num_workers)
    if problems:
        listed = problems[:MAX_LISTED] + (
            [f"... and {len(problems) - MAX_LISTED} more"] if len(problems) > MAX_LISTED else []
        )
        raise DataError(
            f"{data_dir}: {len(problems)} problem(s) in the data dir:\n" + "\n".join(f"  {p}" for p in listed)
        )
    return DataDirSummary(Path(data_dir), len(tables["wav.scp"]), sum(n.startswith("text_spk") for n in tables))


def _read_rows(path: Path, problems: List[str]) -> List[Row]:
    rows: List[Row] = []
    seen: Dict[str, int] = {}
    order_reported = False
    is_text = path.name.startswith("text")
    data = path.read_bytes()
    chunks = data.split(b"\n")
    if chunks and chunks[-1] == b"":
        chunks.pop()
    for lineno, raw in enumerate(chunks, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            problems.append(f"{path}:{lineno}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})")
            continue
        if line.endswith("\r"):
            problems.append(f"{path}:{lineno}: Windows line ending (\\r); convert the file to Unix line endings")
            line = line[:-1]
        parts = line.split(maxsplit=1)
        if not parts:
            problems.append(f"{path}:{lineno}: empty line; remove it")
            continue
        key, value = parts[0], (parts[1].strip() if len(parts) > 1 else "")
        problem = key_problem(key)
        if problem:
            problems.append(f"{path}:{lineno}: {problem}")
        elif not value:
            problems.append(
                f"{path}:{lineno}: key {key!r}: no value after the key (empty {'text' if is_text else 'entry'})"
            )
        elif is_text and caption_problem(value):
            problems.append(f"{path}:{lineno}: key {key!r}: {caption_problem(value)}")
        if key in seen:
            problems.append(f"{path}:{lineno}: duplicate key {key!r} (also on line {seen[key]}); keys must be unique")
        elif rows and key < rows[-1].key and not order_reported:  # one report per unsorted file is enough
            problems.append(
                f"{path}:{lineno}: not sorted ({key!r} after {rows[-1].key!r}); "
                "sort it in byte order (LC_ALL=C sort) or re-create the data dir"
            )
            order_reported = True
        seen.setdefault(key, lineno)
        rows.append(Row(lineno, key, value))
    return rows


def check_tables(data_dir: Path) -> Tuple[Dict[str, List[Row]], List[str]]:
    problems: List[str] = []
    if not data_dir.is_dir():
        return {}, [f"{data_dir}: not a folder"]
    names = [n for n in REQUIRED_FILES if (data_dir / n).is_file()]
    problems += [f"{data_dir / n}: missing (required)" for n in REQUIRED_FILES if n not in names]
    names += [n for n in ("utt2num_samples", "utt2dur") if (data_dir / n).is_file()]
    spk = sorted(
        (p.name for p in data_dir.glob("text_spk*") if re.fullmatch(r"text_spk[0-9]+", p.name)),
        key=lambda n: int(n[len("text_spk") :]),
    )
    if spk and spk != [f"text_spk{k}" for k in range(1, len(spk) + 1)]:
        problems.append(f"{data_dir}: reference files {', '.join(spk)} are not numbered 1..{len(spk)} without gaps")
    tables = {n: _read_rows(data_dir / n, problems) for n in names + spk}
    if "wav.scp" not in tables:
        return tables, problems
    keys = {row.key for row in tables["wav.scp"]}
    if not keys:
        problems.append(f"{data_dir / 'wav.scp'}: no utterances")
    for name in [n for n in PER_UTT_FILES if n in tables] + spk[:1]:
        problems += _compare_keys(data_dir, name, tables[name], keys)
    for prev, name in zip(spk, spk[1:]):
        prev_keys = {row.key for row in tables[prev]}
        extra = [row for row in tables[name] if row.key not in prev_keys]
        if extra:
            problems.append(
                f"{data_dir / name}:{extra[0].line}: key {extra[0].key!r} has no {prev} "
                f"({len(extra)} such); references must fill text_spk1, text_spk2, ... in order"
            )
    for row in tables.get("utt2num_samples", []):
        if not (re.fullmatch(r"[0-9]+", row.value) and int(row.value) > 0):
            problems.append(
                f"{data_dir / 'utt2num_samples'}:{row.line}: key {row.key!r}: {row.value!r} is not a positive integer"
            )
    for row in tables.get("utt2dur", []):
        if not _positive_float(row.value):
            problems.append(
                f"{data_dir / 'utt2dur'}:{row.line}: key {row.key!r}: {row.value!r} is not a positive number"
            )
    if "utt2spk" in tables and "spk2utt" in tables:
        problems += _check_speakers(data_dir, tables["utt2spk"], tables["spk2utt"])
    return tables, problems


def _positive_float(value: str) -> bool:
    try:
        return float(value) > 0 and np.isfinite(float(value))
    except ValueError:
        return False


def _compare_keys(data_dir: Path, name: str, rows: List[Row], keys: set) -> List[str]:
    out = []
    extra = [row for row in rows if row.key not in keys]
    if extra:
        out.append(
            f"{data_dir / name}:{extra[0].line}: key {extra[0].key!r} is not in wav.scp "
            f"({len(extra)} such); every file must list the same utterances (fix or re-create the dir)"
        )
    lacking = sorted(keys - {row.key for row in rows})
    if lacking:
        out.append(f"{data_dir / name}: lacks {len(lacking)} utterance(s) of wav.scp (first: {lacking[0]!r})")
    return out


def _check_speakers(data_dir: Path, utt2spk: List[Row], spk2utt: List[Row]) -> List[str]:
    out = []
    for prev, cur in zip(utt2spk, utt2spk[1:]):
        if cur.value < prev.value:
            out.append(
                f"{data_dir / 'utt2spk'}:{cur.line}: key {cur.key!r}: speaker {cur.value!r} sorts before "
                f"{prev.value!r}; utterance ids must sort in the same order as their speakers "
                "(e.g. prefix them with the speaker id, or use utt2spk identity)"
            )
            break
    expected: Dict[str, List[str]] = {}
    for row in utt2spk:
        expected.setdefault(row.value, []).append(row.key)
    found = {row.key: row.value.split() for row in spk2utt}
    if found != {spk: sorted(utts) for spk, utts in expected.items()}:
        out.append(f"{data_dir / 'spk2utt'}: does not match utt2spk; regenerate it from utt2spk")
    return out


def _check_audio(data_dir: Path, tables: Dict[str, List[Row]], audio: str, num_workers: int) -> List[str]:
    rows = [row for row in tables["wav.scp"] if not row.value.endswith("|")]  # "cmd |" entries: not checked
    where: Callable[[Row], str] = lambda row: f"{data_dir / 'wav.scp'}:{row.line}: key {row.key!r}"
    if audio == "exists":
        return [f"{where(row)}: audio file not found: {row.value}" for row in rows if not os.path.isfile(row.value)]
    infos = probe_many(sorted({row.value for row in rows}), audio == "decode", num_workers)
    num_samples = {row.key: int(row.value) for row in tables.get("utt2num_samples", [])}
    out = []
    for row in rows:
        info = infos[row.value]
        if isinstance(info, AudioError):
            out.append(f"{where(row)}: {info}")
        elif row.key in num_samples and num_samples[row.key] != info.num_samples:
            out.append(
                f"{where(row)}: utt2num_samples says {num_samples[row.key]} but the file has "
                f"{info.num_samples} samples; re-create the data dir"
            )
    return out
