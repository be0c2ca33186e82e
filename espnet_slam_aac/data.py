"""Kaldi-style data dirs from jsonl manifests: validated records, the manifest reader, the writer, the checker.

**Manifest** (the SLAM-AAC reference format), one JSON object per line::

    {"key": "Y7fmOlUlwoNg_1", "source": "/data/clotho/x.wav", "target": "A dog barks twice."}

- ``key``, ``source`` and ``target`` are required strings. Other fields (``prompt``, ``source_len``, ...)
  are kept on the record (``ManifestLine.extra``) and not written to the data dir.
- Blank lines are skipped; a UTF-8 byte-order mark at the start of the file is ignored.
- ``key`` must be a Kaldi token: printable ASCII without whitespace (bytes 0x21-0x7e, what Kaldi's
  ``IsToken`` accepts in the C locale), unique in the manifest.
- ``source``: a relative path is taken relative to ``audio_root`` (default: the manifest's folder);
  ``wav.scp`` holds absolute paths (symlinks are kept, not resolved).
- ``target``: every run of whitespace (spaces, tabs, newlines, ...) becomes one space and the ends are
  stripped; the number of captions this changed is logged. A caption that is then empty, or that holds
  another control character, is invalid.

**Data dir**: UTF-8 files of ``key value`` lines, sorted by key in byte order (``LC_ALL=C sort``):
``wav.scp`` (absolute audio path), ``text``, ``utt2spk`` and ``spk2utt`` (identity: each utterance is
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

**Audio checks** read headers only (``soundfile.info``: missing, unreadable, empty, or shorter than one
25 ms frame). Corrupt data behind a valid header (e.g. a truncated FLAC) and digital silence are found
only by ``decode_audio=True``, which decodes every file (costs a full read of the corpus). A truncated
WAV needs neither: libsndfile reports the samples actually present, and it is taken as that shorter clip.
"""

import codecs
import json
import logging
import os
import re
import shutil
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import soundfile

from espnet_slam_aac.errors import AudioError, DataError

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
REQUIRED_FIELDS = ("key", "source", "target")
FRAME_MS = 25  # one Kaldi/EAT analysis window; a clip must hold at least one
REQUIRED_FILES = ("wav.scp", "text", "utt2spk", "spk2utt")
PER_UTT_FILES = ("text", "utt2spk", "utt2num_samples", "utt2dur")  # keys must equal wav.scp's
DROPPED_FILE = "dropped.tsv"
MAX_LISTED = 20  # problems listed in one error message
_KEY = re.compile(r"[\x21-\x7e]+")  # Kaldi's IsToken in the C locale
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # Unicode category Cc


# ---------------------------------------------------------------------------------------------- checks
def key_problem(key: Any) -> Optional[str]:
    """Why ``key`` cannot be a Kaldi utterance id, or None."""
    if not isinstance(key, str):
        return f"key must be a string, got {type(key).__name__} {key!r}"
    if _KEY.fullmatch(key):
        return None
    if not key:
        return "key is empty"
    for ch in key:
        if ch.isspace():
            return f"key {key!r} contains whitespace (Kaldi keys are single tokens); replace it, e.g. with '_'"
        if not "\x21" <= ch <= "\x7e":
            return f"key {key!r} contains U+{ord(ch):04X}; Kaldi keys must be printable ASCII"
    return None


def normalize_caption(text: str) -> str:
    """Every whitespace run (tabs and newlines included) becomes one space; the ends are stripped."""
    return " ".join(text.split())


def caption_problem(text: str) -> Optional[str]:
    """Why the (normalized) caption ``text`` cannot go into a ``text`` file, or None."""
    if not text:
        return "empty caption"
    control = _CONTROL.search(text)
    if control:
        return f"caption contains control character U+{ord(control.group()):04X}"
    if text != normalize_caption(text):
        return "caption has tabs, line breaks or repeated/outer spaces; collapse them to single spaces"
    return None


def source_problem(source: Any) -> Optional[str]:
    if not isinstance(source, str):
        return f"source must be a string path, got {type(source).__name__}"
    if not source.strip():
        return "source is empty"
    if source != source.strip() or "\n" in source or "\r" in source:
        return f"source {source!r} has leading/trailing whitespace or a line break, which wav.scp cannot hold"
    return None


# --------------------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class ManifestLine:
    """One jsonl line: a (clip, caption) pair, validated when built. ``source`` is absolute."""

    key: str
    source: str
    target: str
    manifest: str
    line: int  # 1-based
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def where(self) -> str:
        return f"{self.manifest}:{self.line}: key {self.key!r}"

    def __post_init__(self):
        problem = key_problem(self.key)
        if problem:
            raise DataError(f"{self.manifest}:{self.line}: {problem}")
        problem = source_problem(self.source) or caption_problem(self.target)
        if problem:
            raise DataError(f"{self.where}: {problem}")


@dataclass(frozen=True)
class Utterance:
    """One data-dir utterance. ``texts``: its caption, or for evaluation sets all references in order."""

    key: str
    source: str
    texts: Tuple[str, ...]
    num_samples: int
    duration: float  # seconds

    @property
    def text(self) -> str:
        return self.texts[0]

    def __post_init__(self):
        problem = key_problem(self.key)
        if problem:
            raise DataError(problem)
        problem = source_problem(self.source)
        if not problem and (not isinstance(self.texts, tuple) or not self.texts):
            problem = "texts must be a non-empty tuple of captions"
        problem = problem or next(filter(None, map(caption_problem, self.texts)), None)
        if not problem and not (isinstance(self.num_samples, int) and self.num_samples > 0):
            problem = f"num_samples must be a positive int, got {self.num_samples!r}"
        if not problem and not self.duration > 0:
            problem = f"duration must be positive, got {self.duration!r}"
        if problem:
            raise DataError(f"utterance {self.key!r}: {problem}")


@dataclass(frozen=True)
class Dropped:
    """A manifest line left out by ``drop_invalid``, and why."""

    line: int
    key: str
    source: str
    reason: str


@dataclass(frozen=True)
class Manifest:
    lines: List[ManifestLine]
    dropped: List[Dropped]  # lines with invalid captions (only with drop_invalid_captions)
    num_normalized: int  # captions whose whitespace was normalized


@dataclass(frozen=True)
class AudioInfo:
    num_samples: int  # per channel
    sample_rate: int
    channels: int

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate


@dataclass(frozen=True)
class PrepareReport:
    out_dir: Path
    num_lines: int
    num_utterances: int
    dropped: List[Dropped]
    num_normalized: int


# ---------------------------------------------------------------------------------------------- audio
def probe_audio(path: PathLike, decode: bool = False) -> AudioInfo:
    """Header facts of an audio file; AudioError if it is missing, unreadable, empty or under one frame.

    ``decode=True`` also decodes all of it, to find corrupt or truncated data and digital silence.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise AudioError(f"audio file not found: {path}")
    if not os.path.isfile(path):
        raise AudioError(f"audio path is not a file: {path}")
    try:
        info = soundfile.info(path)
    except (RuntimeError, OSError) as e:  # soundfile.LibsndfileError is a RuntimeError
        raise AudioError(f"unreadable audio file {path}: {e}") from None
    n, rate = int(info.frames), int(info.samplerate)
    if n <= 0:
        raise AudioError(f"empty audio (0 samples): {path}")
    if n * 1000 < FRAME_MS * rate:
        raise AudioError(f"audio shorter than one {FRAME_MS} ms frame ({n} samples at {rate} Hz): {path}")
    if decode:
        _decode_all(path, n)
    return AudioInfo(n, rate, int(info.channels))


def _decode_all(path: str, expected: int) -> None:
    decoded, peak = 0, 0.0
    try:
        with soundfile.SoundFile(path) as f:
            for block in f.blocks(blocksize=1 << 16, dtype="float32"):
                decoded += len(block)
                peak = max(peak, float(np.abs(block).max(initial=0.0)))
    except (RuntimeError, OSError) as e:
        raise AudioError(f"corrupt audio data in {path} (decoding failed after {decoded} samples: {e})") from None
    if decoded != expected:
        raise AudioError(f"truncated audio {path}: header says {expected} samples, decoded {decoded}")
    if peak == 0.0:
        raise AudioError(f"digital silence (every sample is 0): {path}")


def _probe_many(paths: Sequence[str], decode: bool, num_workers: int) -> Dict[str, Union[AudioInfo, AudioError]]:
    def probe(path: str) -> Union[AudioInfo, AudioError]:
        try:
            return probe_audio(path, decode)
        except AudioError as e:
            return e

    with ThreadPoolExecutor(max(1, num_workers)) as pool:  # libsndfile calls release the GIL
        return dict(zip(paths, pool.map(probe, paths)))


# ------------------------------------------------------------------------------------------- manifest
def read_manifest(
    path: PathLike, *, audio_root: Optional[PathLike] = None, drop_invalid_captions: bool = False
) -> Manifest:
    """Read and validate a jsonl manifest (see the module doc). Structural problems always raise
    DataError naming file and line; invalid captions raise too unless ``drop_invalid_captions``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest not found: {path}")
    root = os.path.abspath(audio_root if audio_root is not None else path.parent)
    lines: List[ManifestLine] = []
    dropped: List[Dropped] = []
    first_line: Dict[str, int] = {}
    num_normalized = 0
    for lineno, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(
                f"{path}:{lineno}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                "re-encode the manifest as UTF-8"
            ) from None
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{path}:{lineno}: malformed JSON ({e.msg}, column {e.colno}); each line must be one JSON object"
            ) from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        where = f"{path}:{lineno}: key {obj.get('key')!r}"
        missing = [name for name in REQUIRED_FIELDS if name not in obj]
        if missing:
            raise DataError(f"{where}: missing required field(s) {', '.join(missing)}; "
                            f"every line needs {', '.join(REQUIRED_FIELDS)}")
        key, source, target = obj["key"], obj["source"], obj["target"]
        problem = key_problem(key) or source_problem(source)
        if not problem and not isinstance(target, str):
            problem = f"target must be a string, got {type(target).__name__}"
        if problem:
            raise DataError(f"{path}:{lineno}: {problem}")
        if key in first_line:
            raise DataError(f"{where}: duplicate key (first used on line {first_line[key]}); keys must be unique")
        first_line[key] = lineno
        source = os.path.normpath(os.path.join(root, source))
        caption = normalize_caption(target)
        num_normalized += caption != target
        problem = caption_problem(caption)
        if problem and drop_invalid_captions:
            dropped.append(Dropped(lineno, key, source, problem))
            continue
        if problem:
            raise DataError(f"{where}: {problem}")
        extra = {k: v for k, v in obj.items() if k not in REQUIRED_FIELDS}
        lines.append(ManifestLine(key, source, caption, str(path), lineno, extra))
    if num_normalized:
        logger.warning("%s: normalized whitespace (tabs, newlines, repeated or outer spaces) in %d caption(s)",
                       path, num_normalized)
    return Manifest(lines, dropped, num_normalized)


def prepare_data_dir(
    manifest: PathLike,
    out_dir: PathLike,
    *,
    references: bool = False,
    expect_refs: Optional[int] = None,
    drop_invalid: bool = False,
    decode_audio: bool = False,
    audio_root: Optional[PathLike] = None,
    num_workers: int = 8,
) -> PrepareReport:
    """Manifest -> data dir. Lines with unusable audio or captions stop it with one DataError listing them
    (file, line, key, reason), or with ``drop_invalid`` are left out and listed in ``dropped.tsv``."""
    _check_replaceable(Path(out_dir))  # fail before probing 50k files, not after
    parsed = read_manifest(manifest, audio_root=audio_root, drop_invalid_captions=True)
    dropped = list(parsed.dropped)
    sources = sorted({line.source for line in parsed.lines})
    infos = _probe_many(sources, decode_audio, num_workers)
    usable = []
    for line in parsed.lines:
        info = infos[line.source]
        if isinstance(info, AudioError):
            dropped.append(Dropped(line.line, line.key, line.source, str(info)))
        else:
            usable.append((line, info))
    dropped.sort(key=lambda d: d.line)
    if dropped and not drop_invalid:
        listed = [f"  {manifest}:{d.line}: key {d.key!r}: {d.reason}" for d in dropped[:MAX_LISTED]]
        more = [f"  ... and {len(dropped) - MAX_LISTED} more"] if len(dropped) > MAX_LISTED else []
        raise DataError("\n".join(
            [f"{manifest}: {len(dropped)} line(s) with unusable audio or captions:"] + listed + more
            + [f"Fix them, or pass --drop_invalid to leave them out (listed in {Path(out_dir) / DROPPED_FILE})."]
        ))
    if references:
        utterances = _group_by_clip(usable, expect_refs, manifest)
    else:
        utterances = [Utterance(ln.key, ln.source, (ln.target,), i.num_samples, i.duration) for ln, i in usable]
    if not utterances:
        raise DataError(f"{manifest}: no usable lines ({len(dropped)} dropped); nothing to write to {out_dir}")
    out = write_data_dir(utterances, out_dir, references=references, dropped=dropped)
    if dropped:
        logger.warning("%s: dropped %d of %d line(s); see %s", manifest, len(dropped),
                       len(parsed.lines) + len(parsed.dropped), out / DROPPED_FILE)
    return PrepareReport(out, len(parsed.lines) + len(parsed.dropped), len(utterances), dropped,
                         parsed.num_normalized)


def _group_by_clip(
    usable: Sequence[Tuple[ManifestLine, AudioInfo]], expect_refs: Optional[int], manifest: PathLike
) -> List[Utterance]:
    clips: Dict[str, List[Tuple[ManifestLine, AudioInfo]]] = {}
    for line, info in usable:  # manifest order: the first line names the clip, captions keep their order
        clips.setdefault(line.source, []).append((line, info))
    counts = Counter(len(group) for group in clips.values())
    if expect_refs is not None:
        for group in clips.values():
            if len(group) != expect_refs:
                line = group[0][0]
                raise DataError(
                    f"{line.where}: clip {line.source} has {len(group)} reference(s) (lines "
                    f"{', '.join(str(ln.line) for ln, _ in group)}), expected {expect_refs}"
                )
    elif len(counts) > 1:
        logger.warning("%s: clips have different numbers of references (%s); text_spkK lists only the "
                       "clips with at least K", manifest,
                       ", ".join(f"{n} refs: {c} clips" for n, c in sorted(counts.items(), reverse=True)))
    return [
        Utterance(group[0][0].key, source, tuple(ln.target for ln, _ in group), group[0][1].num_samples,
                  group[0][1].duration)
        for source, group in clips.items()
    ]


# --------------------------------------------------------------------------------------------- writer
def write_data_dir(
    utterances: Iterable[Utterance], out_dir: PathLike, *, references: bool = False,
    dropped: Sequence[Dropped] = (), extra_files: Optional[Mapping[str, str]] = None,
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
        raise DataError(f"utterance {several.key!r} has {len(several.texts)} texts; write it with "
                        "references=True (evaluation set) or as one utterance per caption")
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


def _check_replaceable(out_dir: Path) -> None:
    """An existing output path may be replaced only if it is an empty folder or a data dir."""
    if out_dir.is_symlink() or out_dir.exists():
        if not out_dir.is_dir() or out_dir.is_symlink() or (any(out_dir.iterdir())
                                                            and not (out_dir / "wav.scp").is_file()):
            raise DataError(f"refusing to replace {out_dir}: it exists and is not a data dir (no wav.scp); "
                            "remove it or choose another output folder")


def _publish(out_dir: Path, files: Mapping[str, str]) -> Path:
    _check_replaceable(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp, old = out_dir.with_name(f".{out_dir.name}.tmp-{tag}"), out_dir.with_name(f".{out_dir.name}.old-{tag}")
    tmp.mkdir()
    moved_aside = False
    try:
        for name, content in files.items():
            with open(tmp / name, "w", encoding="utf-8", newline="\n") as f:
                f.write(content)
                f.flush()
                os.fsync(f.fileno())
        if out_dir.exists():
            os.rename(out_dir, old)
            moved_aside = True
        os.rename(tmp, out_dir)
    except BaseException:
        if moved_aside and not out_dir.exists():
            os.rename(old, out_dir)  # put the previous data dir back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return out_dir


# ------------------------------------------------------------------------------------- reader/checker
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
    tables, problems = _check_tables(Path(data_dir))
    if not problems and audio != "none":
        problems += _check_audio(Path(data_dir), tables, audio, num_workers)
    if problems:
        listed = problems[:MAX_LISTED] + ([f"... and {len(problems) - MAX_LISTED} more"]
                                          if len(problems) > MAX_LISTED else [])
        raise DataError(f"{data_dir}: {len(problems)} problem(s) in the data dir:\n" +
                        "\n".join(f"  {p}" for p in listed))
    return DataDirSummary(Path(data_dir), len(tables["wav.scp"]), sum(n.startswith("text_spk") for n in tables))


def read_data_dir(data_dir: PathLike) -> List[Utterance]:
    """A data dir (as ``write_data_dir`` writes it) back as records, sorted by key. Checks it first
    (audio files are not opened); needs ``utt2num_samples`` and ``utt2dur``."""
    data_dir = Path(data_dir)
    tables, problems = _check_tables(data_dir)
    problems += [f"{data_dir / name}: missing; re-create the data dir with prepare-data"
                 for name in ("utt2num_samples", "utt2dur") if name not in tables]
    if problems:
        raise DataError(f"{data_dir}: cannot read the data dir:\n" + "\n".join(f"  {p}" for p in problems))
    maps = {name: {row.key: row.value for row in rows} for name, rows in tables.items()}
    refs = sorted((n for n in maps if n.startswith("text_spk")), key=lambda n: int(n[len("text_spk"):]))
    utterances = []
    for row in tables["wav.scp"]:
        texts = tuple(maps[n][row.key] for n in refs if row.key in maps[n]) or (maps["text"][row.key],)
        if texts[0] != maps["text"][row.key]:
            raise DataError(f"{data_dir}: utterance {row.key!r}: text differs from text_spk1")
        utterances.append(Utterance(row.key, row.value, texts, int(maps["utt2num_samples"][row.key]),
                                    float(maps["utt2dur"][row.key])))
    return utterances


def resolve_beside(folder: PathLike, value: Any) -> Any:
    """A relative path that names something in ``folder`` -> that path; anything else as is.

    Configs that travel with their files (a packed model's config.yaml and refine.yaml) name them relative to
    their own folder; a recipe's conf/*.yaml names them relative to the recipe, where they do not exist beside
    the YAML.
    """
    if isinstance(value, str) and value and not Path(value).is_absolute() and (Path(folder) / value).exists():
        return str(Path(folder) / value)
    return value


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
            problems.append(f"{path}:{lineno}: not valid UTF-8 "
                            f"(byte 0x{raw[e.start]:02x} at column {e.start + 1})")
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
            problems.append(f"{path}:{lineno}: key {key!r}: no value after the key "
                            f"(empty {'text' if is_text else 'entry'})")
        elif is_text and caption_problem(value):
            problems.append(f"{path}:{lineno}: key {key!r}: {caption_problem(value)}")
        if key in seen:
            problems.append(f"{path}:{lineno}: duplicate key {key!r} (also on line {seen[key]}); "
                            "keys must be unique")
        elif rows and key < rows[-1].key and not order_reported:  # one report per unsorted file is enough
            problems.append(f"{path}:{lineno}: not sorted ({key!r} after {rows[-1].key!r}); "
                            "sort it in byte order (LC_ALL=C sort) or re-create the data dir")
            order_reported = True
        seen.setdefault(key, lineno)
        rows.append(Row(lineno, key, value))
    return rows


def _check_tables(data_dir: Path) -> Tuple[Dict[str, List[Row]], List[str]]:
    problems: List[str] = []
    if not data_dir.is_dir():
        return {}, [f"{data_dir}: not a folder"]
    names = [n for n in REQUIRED_FILES if (data_dir / n).is_file()]
    problems += [f"{data_dir / n}: missing (required)" for n in REQUIRED_FILES if n not in names]
    names += [n for n in ("utt2num_samples", "utt2dur") if (data_dir / n).is_file()]
    spk = sorted((p.name for p in data_dir.glob("text_spk*") if re.fullmatch(r"text_spk[0-9]+", p.name)),
                 key=lambda n: int(n[len("text_spk"):]))
    if spk and spk != [f"text_spk{k}" for k in range(1, len(spk) + 1)]:
        problems.append(f"{data_dir}: reference files {', '.join(spk)} are not numbered 1..{len(spk)} "
                        "without gaps")
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
            problems.append(f"{data_dir / name}:{extra[0].line}: key {extra[0].key!r} has no {prev} "
                            f"({len(extra)} such); references must fill text_spk1, text_spk2, ... in order")
    for row in tables.get("utt2num_samples", []):
        if not (re.fullmatch(r"[0-9]+", row.value) and int(row.value) > 0):
            problems.append(f"{data_dir / 'utt2num_samples'}:{row.line}: key {row.key!r}: "
                            f"{row.value!r} is not a positive integer")
    for row in tables.get("utt2dur", []):
        if not _positive_float(row.value):
            problems.append(f"{data_dir / 'utt2dur'}:{row.line}: key {row.key!r}: "
                            f"{row.value!r} is not a positive number")
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
        out.append(f"{data_dir / name}:{extra[0].line}: key {extra[0].key!r} is not in wav.scp "
                   f"({len(extra)} such); every file must list the same utterances (fix or re-create the dir)")
    lacking = sorted(keys - {row.key for row in rows})
    if lacking:
        out.append(f"{data_dir / name}: lacks {len(lacking)} utterance(s) of wav.scp (first: {lacking[0]!r})")
    return out


def _check_speakers(data_dir: Path, utt2spk: List[Row], spk2utt: List[Row]) -> List[str]:
    out = []
    for prev, cur in zip(utt2spk, utt2spk[1:]):
        if cur.value < prev.value:
            out.append(f"{data_dir / 'utt2spk'}:{cur.line}: key {cur.key!r}: speaker {cur.value!r} sorts before "
                       f"{prev.value!r}; utterance ids must sort in the same order as their speakers "
                       "(e.g. prefix them with the speaker id, or use utt2spk identity)")
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
        return [f"{where(row)}: audio file not found: {row.value}"
                for row in rows if not os.path.isfile(row.value)]
    infos = _probe_many(sorted({row.value for row in rows}), audio == "decode", num_workers)
    num_samples = {row.key: int(row.value) for row in tables.get("utt2num_samples", [])}
    out = []
    for row in rows:
        info = infos[row.value]
        if isinstance(info, AudioError):
            out.append(f"{where(row)}: {info}")
        elif row.key in num_samples and num_samples[row.key] != info.num_samples:
            out.append(f"{where(row)}: utt2num_samples says {num_samples[row.key]} but the file has "
                       f"{info.num_samples} samples; re-create the data dir")
    return out
