"""Jsonl manifests (the SLAM-AAC reference format) -> Kaldi-style data dirs.


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
"""

import codecs
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from espnet_slam_aac.data.audio import AudioInfo, probe_many
from espnet_slam_aac.data.datadir import check_replaceable, write_data_dir
from espnet_slam_aac.data.records import (
    DROPPED_FILE,
    MAX_LISTED,
    REQUIRED_FIELDS,
    Dropped,
    ManifestLine,
    PathLike,
    Utterance,
    caption_problem,
    key_problem,
    normalize_caption,
    source_problem,
)
from espnet_slam_aac.errors import AudioError, DataError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Manifest:
    lines: List[ManifestLine]
    dropped: List[Dropped]  # lines with invalid captions (only with drop_invalid_captions)
    num_normalized: int  # captions whose whitespace was normalized


@dataclass(frozen=True)
class PrepareReport:
    out_dir: Path
    num_lines: int
    num_utterances: int
    dropped: List[Dropped]
    num_normalized: int


def read_manifest(
    path: PathLike, *, audio_root: Optional[PathLike] = None, drop_invalid_captions: bool = False
) -> Manifest:
    """Read and validate a jsonl manifest (see the module doc). Structural problems always raise
    DataError naming file and line; invalid captions raise too unless ``drop_invalid_captions``."""
    path = Path(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.jsonl"))[:5]
        hint = f" (it holds {', '.join(inside)})" if inside else ""
        raise DataError(f"{path} is a folder, not a manifest: give the .jsonl file itself{hint}")
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
            raise DataError(
                f"{where}: missing required field(s) {', '.join(missing)}; "
                f"every line needs {', '.join(REQUIRED_FIELDS)}"
            )
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
        logger.warning(
            "%s: normalized whitespace (tabs, newlines, repeated or outer spaces) in %d caption(s)",
            path,
            num_normalized,
        )
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
    check_replaceable(Path(out_dir))  # fail before probing 50k files, not after
    parsed = read_manifest(manifest, audio_root=audio_root, drop_invalid_captions=True)
    dropped = list(parsed.dropped)
    sources = sorted({line.source for line in parsed.lines})
    infos = probe_many(sources, decode_audio, num_workers)
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
        raise DataError(
            "\n".join(
                [f"{manifest}: {len(dropped)} line(s) with unusable audio or captions:"]
                + listed
                + more
                + [f"Fix them, or pass --drop_invalid to leave them out (listed in {Path(out_dir) / DROPPED_FILE})."]
            )
        )
    if references:
        utterances = _group_by_clip(usable, expect_refs, manifest)
    else:
        utterances = [Utterance(ln.key, ln.source, (ln.target,), i.num_samples, i.duration) for ln, i in usable]
    if not utterances:
        raise DataError(f"{manifest}: no usable lines ({len(dropped)} dropped); nothing to write to {out_dir}")
    out = write_data_dir(utterances, out_dir, references=references, dropped=dropped)
    if dropped:
        logger.warning(
            "%s: dropped %d of %d line(s); see %s",
            manifest,
            len(dropped),
            len(parsed.lines) + len(parsed.dropped),
            out / DROPPED_FILE,
        )
    return PrepareReport(out, len(parsed.lines) + len(parsed.dropped), len(utterances), dropped, parsed.num_normalized)


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
        logger.warning(
            "%s: clips have different numbers of references (%s); text_spkK lists only the clips with at least K",
            manifest,
            ", ".join(f"{n} refs: {c} clips" for n, c in sorted(counts.items(), reverse=True)),
        )
    return [
        Utterance(
            group[0][0].key, source, tuple(ln.target for ln, _ in group), group[0][1].num_samples, group[0][1].duration
        )
        for source, group in clips.items()
    ]
