"""Kaldi-style data dirs: the atomic writer and the readers.

its own speaker, so utterance and speaker orders agree as Kaldi's checks demand, and splitting by
speaker still spreads work; ESPnet's clotho_v2 uses one speaker ``dummy`` instead),
``utt2num_samples`` (samples per channel at the file's own rate, from the audio header) and ``utt2dur``
(seconds). Training sets hold one utterance per manifest line. Evaluation sets (``references=True``)
hold one utterance per clip (lines grouped by their absolute ``source`` path): its key is the key of the
clip's first line in the manifest, ``text`` and ``text_spk1`` hold that line's caption and
``text_spkK`` the K-th caption in manifest order. When clips have different numbers of references,
``text_spkK`` lists only the clips with at least K (a warning gives the counts; ``expect_refs`` makes
any other count an error). ``dropped.tsv`` (line, key, source, reason) lists the lines left out.

**Atomic writes**: the files are written into a hidden sibling folder that is renamed to the data dir
once complete, so a data dir that exists is complete (a killed run can leave only hidden
``.NAME.tmp-*`` / ``.NAME.old-*`` folders, safe to delete). An existing data dir (a folder holding
``wav.scp``, or an empty one) is replaced as a whole; any other existing path is refused.

"""

import os
import shutil
import uuid
from pathlib import Path
from typing import Iterable, List, Mapping, Optional, Sequence, Tuple

from espnet_slam_aac.data.check import check_tables
from espnet_slam_aac.data.records import DROPPED_FILE, Dropped, PathLike, Utterance
from espnet_slam_aac.errors import DataError


def write_data_dir(
    utterances: Iterable[Utterance],
    out_dir: PathLike,
    *,
    references: bool = False,
    dropped: Sequence[Dropped] = (),
    extra_files: Optional[Mapping[str, str]] = None,
) -> Path:
    """Write a sorted data dir atomically (see the module doc). ``references=True`` writes every
    utterance's ``texts`` as ``text_spk1..N``; otherwise each utterance must have exactly one text.
    ``extra_files`` (file name -> text) go into the same atomic write, e.g. a provenance list."""
    utts = sorted(utterances, key=lambda u: u.key)  # keys are ASCII: str order == byte order
    for prev, cur in zip(utts, utts[1:]):
        if prev.key == cur.key:
            raise DataError(f"duplicate utterance key {cur.key!r}; keys must be unique")
    several = next((u for u in utts if len(u.texts) > 1), None)
    if several is not None and not references:
        raise DataError(
            f"utterance {several.key!r} has {len(several.texts)} texts; write it with "
            "references=True (evaluation set) or as one utterance per caption"
        )
    files = {
        "wav.scp": [f"{u.key} {u.source}" for u in utts],
        "text": [f"{u.key} {u.text}" for u in utts],
        "utt2spk": [f"{u.key} {u.key}" for u in utts],
        "spk2utt": [f"{u.key} {u.key}" for u in utts],
        "utt2num_samples": [f"{u.key} {u.num_samples}" for u in utts],
        "utt2dur": [f"{u.key} {float(u.duration)!r}" for u in utts],
    }
    if references:
        for k in range(max((len(u.texts) for u in utts), default=0)):
            files[f"text_spk{k + 1}"] = [f"{u.key} {u.texts[k]}" for u in utts if len(u.texts) > k]
    if dropped:
        files[DROPPED_FILE] = ["line\tkey\tsource\treason"] + [
            "\t".join([str(d.line), d.key, d.source, " ".join(d.reason.split())]) for d in dropped
        ]
    contents = {name: "".join(f"{row}\n" for row in rows) for name, rows in files.items()}
    for name, text in (extra_files or {}).items():
        if name in contents or name != Path(name).name or name.startswith("."):
            raise DataError(f"extra file name {name!r} is taken by the data dir or is not a plain file name")
        contents[name] = text
    return _publish(Path(out_dir), contents)


def check_replaceable(out_dir: Path) -> None:
    """An existing output path may be replaced only if it is an empty folder or a data dir."""
    if out_dir.is_symlink() or out_dir.exists():
        if (
            not out_dir.is_dir()
            or out_dir.is_symlink()
            or (any(out_dir.iterdir()) and not (out_dir / "wav.scp").is_file())
        ):
            raise DataError(
                f"refusing to replace {out_dir}: it exists and is not a data dir (no wav.scp); "
                "remove it or choose another output folder"
            )


def _publish(out_dir: Path, files: Mapping[str, str]) -> Path:
    check_replaceable(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp, old = out_dir.with_name(f".{out_dir.name}.tmp-{tag}"), out_dir.with_name(f".{out_dir.name}.old-{tag}")
    moved_aside = False
    try:
        tmp.mkdir()
        for name, content in files.items():
            with open(tmp / name, "w", encoding="utf-8", newline="\n") as f:
                f.write(content)
                f.flush()
                os.fsync(f.fileno())
        if out_dir.exists():
            os.rename(out_dir, old)
            moved_aside = True
        os.rename(tmp, out_dir)
    except BaseException as err:
        if moved_aside and not out_dir.exists():
            os.rename(old, out_dir)  # put the previous data dir back
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError):  # name the data dir, not the hidden folder it was written in
            raise OSError(err.errno, f"cannot write the data dir: {err.strerror or err}", str(out_dir)) from err
        raise
    shutil.rmtree(old, ignore_errors=True)
    return out_dir


def read_data_dir(data_dir: PathLike) -> List[Utterance]:
    """A data dir (as ``write_data_dir`` writes it) back as records, sorted by key. Checks it first
    (audio files are not opened); needs ``utt2num_samples`` and ``utt2dur``."""
    data_dir = Path(data_dir)
    tables, problems = check_tables(data_dir)
    problems += [
        f"{data_dir / name}: missing; re-create the data dir with prepare-data"
        for name in ("utt2num_samples", "utt2dur")
        if name not in tables
    ]
    if problems:
        raise DataError(f"{data_dir}: cannot read the data dir:\n" + "\n".join(f"  {p}" for p in problems))
    maps = {name: {row.key: row.value for row in rows} for name, rows in tables.items()}
    refs = sorted((n for n in maps if n.startswith("text_spk")), key=lambda n: int(n[len("text_spk") :]))
    utterances = []
    for row in tables["wav.scp"]:
        texts = tuple(maps[n][row.key] for n in refs if row.key in maps[n]) or (maps["text"][row.key],)
        if texts[0] != maps["text"][row.key]:
            raise DataError(f"{data_dir}: utterance {row.key!r}: text differs from text_spk1")
        utterances.append(
            Utterance(row.key, row.value, texts, int(maps["utt2num_samples"][row.key]), float(maps["utt2dur"][row.key]))
        )
    return utterances


def read_wav_scp(path: PathLike) -> List[Tuple[str, str]]:
    """``(key, audio path)`` pairs of a Kaldi wav.scp; piped commands ("cmd |") are not supported."""
    if not Path(path).is_file():
        raise DataError(f"{path}: no such file; give a data dir's wav.scp (`espnet-slam-aac prepare-data` writes one)")
    entries, seen = [], {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            key, _, audio = line.strip().partition(" ")
            audio = audio.strip()
            if not audio:
                raise DataError(f"{path}:{number}: expected 'KEY PATH', got {line.strip()!r}")
            if audio.endswith("|"):
                raise DataError(f"{path}:{number}: key {key!r}: piped commands are not supported; give a file path")
            if key in seen:
                raise DataError(f"{path}:{number}: key {key!r} repeats line {seen[key]}")
            seen[key] = number
            entries.append((key, audio))
    if not entries:
        raise DataError(f"{path}: no entries")
    return entries
