"""CLAP-Refine over a decoded set: candidates.jsonl + data dir -> ``text`` (chosen captions) + ``scores.jsonl``.

Inputs: ``candidates.jsonl`` as the n-best decoder writes it, one line per clip::

    {"key": "clip1", "candidates": [{"text": "...", "beam_size": 2, "logprob": -7.1, "length": 9}, ...]}

and the data dir whose ``wav.scp`` maps those keys to audio files (read with ``frontend.load_audio``).
Outputs in ``out_dir``, sorted by key: ``text`` (``key caption``, the chosen candidate), ``scores.jsonl``
(per clip: ``key``, ``best`` (index into its candidates), ``text``, and every candidate with its
``similarity``, ``lm_score`` (logprob / length) and ``combined``), and ``refine.yaml`` (the settings used).
Captions are written to ``text`` with each run of whitespace as one space, as data dirs hold them.
Selection is ``clap.rescore``: cosine similarity, plus ``lm_weight`` x mean token log-probability if set;
ties go to the first candidate.
"""

import argparse
import dataclasses
import json
import logging
import typing
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import yaml
from espnet2.utils.types import str2bool

from espnet_slam_aac.clap.model import load_clap, rescore_clips
from espnet_slam_aac.data.audio import load_audio
from espnet_slam_aac.data.candidates import read_candidates
from espnet_slam_aac.data.datadir import read_wav_scp
from espnet_slam_aac.errors import ConfigError, DataError
from espnet_slam_aac.utils.config import check_keys, read_yaml, resolve_beside
from espnet_slam_aac.utils.fileio import refuse_overwrite, write_atomically, write_kaldi_text

logger = logging.getLogger(__name__)


# settings that name files: taken relative to the YAML's folder where they exist there
PATH_KEYS = ("clap", "clap_config", "tokenizer")


@dataclass
class RefineConfig:
    """CLAP-Refine settings: the keys of ``conf/refine.yaml`` and the flags of ``clap-refine``."""

    clap: Optional[str] = None  # ASE folder / best_model.pt, LAION .pt, ClapModel folder or hub id
    clap_config: Optional[str] = None  # the ASE's clap_config.yaml when not beside best_model.pt
    tokenizer: Optional[str] = None  # default: tokenizer files beside the checkpoint, else roberta-base
    lm_weight: float = 0.0  # 0: the reference rule (CLAP similarity alone)
    device: str = "cpu"
    batch_size: int = 16  # clips per audio-tower call (same-length clips only)
    text_batch_size: int = 256
    clips_per_step: int = 64  # clips read and embedded together
    num_workers: int = 4  # threads reading audio files
    max_seconds: float = 10.0  # audio used per clip (the reference: the first 10 s)
    whole_clip: bool = False  # average over consecutive max_seconds windows instead
    channel: str = "first"  # first (the reference: channel 0) | mean
    short_clip: str = "error"  # clips under 0.1 s: error | silence (the reference's substitute)
    max_text_tokens: Optional[int] = None  # default 30 (ASE) / 77 (LAION)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kind = next((t for t in (bool, int, float, str) if t is f.type or t in typing.get_args(f.type)), str)
            if value is None and (f.type is not kind):  # Optional
                continue
            if kind is bool and not isinstance(value, bool):
                raise ConfigError(f"refine setting {f.name}: expected true or false, got {value!r}")
            try:
                setattr(self, f.name, kind(value) if kind is not bool else value)
            except (TypeError, ValueError) as e:
                what = {int: "an integer", float: "a number"}.get(kind, "a string")
                raise ConfigError(f"refine setting {f.name}: expected {what}, got {value!r}") from e

    @classmethod
    def from_yaml(cls, path: Path, **overrides) -> "RefineConfig":
        values = {}
        if path:
            values = read_yaml(path, "refine config")
            values = {k: resolve_beside(Path(path).parent, v) if k in PATH_KEYS else v for k, v in values.items()}
        values.update({k: v for k, v in overrides.items() if v is not None})
        check_keys(values, [f.name for f in dataclasses.fields(cls)], str(path or "refine settings"))
        return cls(**values)

    def clap_options(self) -> dict:
        opts = dataclasses.asdict(self)
        for key in ("clap", "clap_config", "lm_weight", "clips_per_step", "num_workers"):
            opts.pop(key)
        opts["config"] = self.clap_config
        return opts


def add_refine_arguments(parser: argparse.ArgumentParser) -> None:
    """clap-refine's inputs, output and CLAP-Refine settings (``RefineConfig``, over a refine YAML), shared with
    refine-tune."""
    parser.add_argument("--candidates", required=True, help="candidates.jsonl of the decoded set")
    parser.add_argument("--data_dir", required=True, help="data dir whose wav.scp holds the clips' audio")
    parser.add_argument("--out_dir", required=True, help="where text, scores.jsonl and refine.yaml go")
    parser.add_argument("--config", help="refine YAML (e.g. conf/refine.yaml); flags override its keys")
    group = parser.add_argument_group("settings (refine YAML keys; defaults in brackets)")
    defaults = RefineConfig()
    helps = {
        "clap": "CLAP: ASE folder or best_model.pt, LAION .pt, ClapModel folder, or hub id",
        "clap_config": "the ASE's clap_config.yaml, when not beside best_model.pt",
        "tokenizer": "tokenizer folder or hub id [files beside the checkpoint, else roberta-base]",
        "lm_weight": "weight of the mean token log-probability added to the similarity",
        "device": "torch device",
        "batch_size": "clips per audio-encoder call",
        "text_batch_size": "captions per text-encoder call",
        "clips_per_step": "clips read and embedded together",
        "num_workers": "threads reading audio",
        "max_seconds": "seconds of audio used from the start of each clip",
        "whole_clip": "average embeddings over consecutive max_seconds windows covering the whole clip",
        "channel": "channel of multi-channel audio: first | mean",
        "short_clip": "clips under 0.1 s: error | silence (embed 10 s of silence, as the reference does)",
        "max_text_tokens": "caption tokens kept [30 for SLAM-AAC's CLAP, 77 for LAION]",
    }
    types = {
        "whole_clip": str2bool,
        "lm_weight": float,
        "max_seconds": float,
        "batch_size": int,
        "text_batch_size": int,
        "clips_per_step": int,
        "num_workers": int,
        "max_text_tokens": int,
    }
    for name, help_ in helps.items():
        default = getattr(defaults, name)
        shown = f" [{default}]" if default is not None else ""
        group.add_argument(f"--{name}", type=types.get(name, str), default=None, help=help_ + shown)


def refine(clap, clips: List[Tuple[str, List[dict]]], wav_scp: Dict[str, str], config: RefineConfig) -> List[dict]:
    """Score every clip's candidates; one record per clip (``scores.jsonl`` lines), sorted by key."""
    missing = [key for key, _ in clips if key not in wav_scp]
    if missing:
        raise DataError(f"{len(missing)} candidate key(s) are not in wav.scp, e.g. {missing[:5]}")
    clips = sorted(clips, key=lambda kc: kc[0])
    records = []
    with ThreadPoolExecutor(max(1, config.num_workers)) as pool:
        for start in range(0, len(clips), config.clips_per_step):
            step = clips[start : start + config.clips_per_step]
            audio = list(pool.map(load_audio, [wav_scp[key] for key, _ in step]))
            names = [f"key {key!r} ({wav_scp[key]})" for key, _ in step]
            picks = rescore_clips(clap, audio, [cands for _, cands in step], config.lm_weight, names)
            for (key, cands), (best, scores) in zip(step, picks):
                scored = [{**c, **dataclasses.asdict(s)} for c, s in zip(cands, scores)]
                records.append({"key": key, "best": best, "text": cands[best]["text"], "candidates": scored})
            logger.info("CLAP-Refine: %d / %d clips", len(records), len(clips))
    return records


def output_paths(out_dir: Path) -> List[Path]:
    """What ``write_outputs`` writes, ``text`` last."""
    return [Path(out_dir) / name for name in ("scores.jsonl", "refine.yaml", "text")]


def write_outputs(out_dir: Path, records: List[dict], config: RefineConfig) -> None:
    """Every file written whole (``utils.fileio``); ``text`` last, so that its presence says the run finished."""
    scores, settings, text = output_paths(out_dir)
    write_atomically(scores, (json.dumps({**r, "lm_weight": config.lm_weight}, ensure_ascii=False) for r in records))
    write_atomically(settings, yaml.safe_dump(dataclasses.asdict(config), sort_keys=False).splitlines())
    write_kaldi_text(text, ((r["key"], r["text"]) for r in records))


def run(
    config: RefineConfig, candidates: Path, data_dir: Path, out_dir: Path, inputs: Sequence[Optional[Path]] = ()
) -> List[dict]:
    """Load the CLAP named by ``config.clap``, refine every clip of ``candidates``, write ``out_dir``. No output
    may replace ``candidates``, the data dir's files or the other ``inputs`` (e.g. the refine YAML)."""
    if not config.clap:
        raise ConfigError("no CLAP given: set 'clap:' in the refine YAML or pass --clap")
    clips = read_candidates(candidates)
    wav_scp = dict(read_wav_scp(Path(data_dir) / "wav.scp"))
    data_files = [p for p in Path(data_dir).iterdir() if p.is_file()]
    refuse_overwrite(output_paths(out_dir), [candidates, *data_files, *wav_scp.values(), *inputs])
    clap = load_clap(config.clap, **config.clap_options())
    records = refine(clap, clips, wav_scp, config)
    write_outputs(out_dir, records, config)
    return records
