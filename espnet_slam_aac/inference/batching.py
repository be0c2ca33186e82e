"""Clips to decode: a wav.scp (optionally cut to a key file), read in batches by threads while the model works."""

import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from espnet_slam_aac.data.audio import load_audio
from espnet_slam_aac.data.datadir import read_wav_scp
from espnet_slam_aac.errors import AudioError, DataError

logger = logging.getLogger(__name__)


def read_keys(path: Path) -> List[str]:
    keys = [line.split(maxsplit=1)[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not keys:
        raise DataError(f"{path}: no keys")
    return keys


def data_dir_files(wav_scp: Path) -> List[Path]:
    """The files of the data dir a wav.scp belongs to (one with utt2spk), which a decode must not replace."""
    folder = Path(wav_scp).parent
    return [p for p in folder.iterdir() if p.is_file()] if (folder / "utt2spk").is_file() else []


def select_entries(wav_scp: Path, key_file: Optional[Path]) -> List[Tuple[str, str]]:
    entries = read_wav_scp(wav_scp)
    if key_file is None:
        return entries
    wanted = read_keys(key_file)
    table = dict(entries)
    unknown = [k for k in wanted if k not in table]
    if unknown:
        raise DataError(f"{key_file}: {len(unknown)} key(s) not in {wav_scp}, e.g. {unknown[:3]}")
    return [(k, table[k]) for k in dict.fromkeys(wanted)]


def _load(entry: Tuple[str, str]):
    """(wave, rate) of one (key, path), or the AudioError naming both."""
    key, path = entry
    try:
        return load_audio(path)
    except AudioError as err:
        return err if key == path else AudioError(f"key {key!r}: {err}")


def iter_batches(entries: Sequence[Tuple[str, str]], batch_size: int, num_workers: int = 2):
    """Yield ``(batch of (key, path), their (wave, rate) or AudioError)``; the next batch is read meanwhile."""
    batches = [entries[i : i + batch_size] for i in range(0, len(entries), batch_size)]
    with ThreadPoolExecutor(max(1, num_workers)) as pool:
        pending = [pool.submit(_load, e) for e in batches[0]] if batches else []
        for i, batch in enumerate(batches):
            loaded = [f.result() for f in pending]
            pending = [pool.submit(_load, e) for e in batches[i + 1]] if i + 1 < len(batches) else []
            yield batch, loaded


def decode_entries(s2c, entries: Sequence[Tuple[str, str]], num_workers: int = 2) -> List[Tuple[str, List[dict]]]:
    """Candidates of each (key, audio path), ``s2c.batch_size`` clips at a time; an unreadable clip is an error."""
    records, start = [], time.time()
    for batch, loaded in iter_batches(entries, s2c.batch_size, num_workers):
        for clip in loaded:
            if isinstance(clip, AudioError):
                raise clip
        for (key, _), result in zip(batch, s2c.caption(loaded)):
            records.append((key, [dataclasses.asdict(c) for c in result.candidates]))
        rate = len(records) / (time.time() - start)
        logger.info("decoded %d / %d clips (%.2f clips/s)", len(records), len(entries), rate)
    return records
