"""The files of a decode dir (``text``, ``beam<N>/text``, ``candidates.jsonl``, ``decode.yaml``), and the merge
of split jobs' dirs into one."""

import dataclasses
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import yaml

from espnet_slam_aac.errors import DataError
from espnet_slam_aac.inference.batching import read_keys
from espnet_slam_aac.inference.decoding import DecodingOptions
from espnet_slam_aac.utils.fileio import refuse_overwrite, write_atomically, write_kaldi_text


def output_paths(out_dir: Path, options: DecodingOptions) -> List[Path]:
    """Every file ``write_outputs`` writes, ``text`` last."""
    out_dir = Path(out_dir)
    beams = [out_dir / f"beam{beam}" / "text" for beam in options.beam_sizes]
    return [*beams, out_dir / "candidates.jsonl", out_dir / "decode.yaml", out_dir / "text"]


def _top1(candidates: List[dict], beam: int) -> str:
    return next(c["text"] for c in candidates if c["beam_size"] == beam)


def empty_captions(records: Sequence[Tuple[str, List[dict]]], options: DecodingOptions) -> List[str]:
    """Keys whose 1-best caption (``text``) is empty or white space, sorted."""
    return sorted(k for k, c in records if not _top1(c, options.text_beam_size).strip())


def write_outputs(out_dir: Path, records: Sequence[Tuple[str, List[dict]]], options: DecodingOptions) -> None:
    """``records``: (key, candidates as dicts) per clip. Writes every output file, sorted by key."""
    records = sorted(records, key=lambda r: r[0])
    for beam in options.beam_sizes:
        write_kaldi_text(out_dir / f"beam{beam}" / "text", ((k, _top1(c, beam)) for k, c in records))
    lines = (json.dumps({"key": k, "candidates": c}, ensure_ascii=False) for k, c in records)
    write_atomically(out_dir / "candidates.jsonl", lines)
    options_yaml = yaml.safe_dump({**dataclasses.asdict(options), "beam_sizes": list(options.beam_sizes)})
    write_atomically(out_dir / "decode.yaml", options_yaml.splitlines())
    # the 1-best last: its presence says the directory is complete
    write_kaldi_text(out_dir / "text", ((k, _top1(c, options.text_beam_size)) for k, c in records))


def merge(job_dirs: Sequence[Path], out_dir: Path, key_file: Optional[Path] = None) -> int:
    """Merge split jobs' outputs into ``out_dir`` (all files rewritten from the candidates); returns the
    number of clips."""
    records: Dict[str, List[dict]] = {}
    where: Dict[str, Path] = {}
    options = None
    inputs = [key_file] + [Path(job) / name for job in job_dirs for name in ("text", "candidates.jsonl", "decode.yaml")]
    for job in map(Path, job_dirs):
        if not (job / "text").is_file():
            raise DataError(f"{job}: not a finished decoding job (no text); rerun that job")
        job_options = DecodingOptions.from_yaml(job / "decode.yaml")
        if options is not None and job_options != options:
            raise DataError(f"{job}: decoded with other options than {job_dirs[0]} (see decode.yaml); rerun alike")
        options = job_options
        for lineno, line in enumerate((job / "candidates.jsonl").read_text(encoding="utf-8").splitlines(), 1):
            key = json.loads(line)["key"]
            if key in records:
                raise DataError(f"{job}/candidates.jsonl:{lineno}: key {key!r} was decoded by {where[key]} too")
            records[key], where[key] = json.loads(line)["candidates"], job
    if key_file is not None:
        expected = read_keys(Path(key_file))
        missing = [k for k in expected if k not in records]
        extra = sorted(set(records) - set(expected))
        if missing or extra:
            raise DataError(
                f"the jobs do not cover {key_file}: {len(missing)} key(s) missing (e.g. {missing[:3]}), "
                f"{len(extra)} not in it (e.g. {extra[:3]})"
            )
    refuse_overwrite(output_paths(out_dir, options), inputs)
    write_outputs(Path(out_dir), list(records.items()), options)
    return len(records)
