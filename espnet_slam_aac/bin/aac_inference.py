"""n-best decoding of a wav.scp: captions of every beam size, for scoring and CLAP-Refine.

Each clip of the wav.scp (restricted to --key_file, for a recipe's split jobs) is encoded and its prompt
prefilled once; every beam size of the decode config is then searched from that shared prefix. Writes to
OUTPUT_DIR, sorted by key (Kaldi style, "key caption" lines):

  text              the 1-best: top-1 of text_beam_size (beam 4 by default, the reference's plain decode)
  beam<N>/text      top-1 of beam size N, for each N of beam_sizes
  candidates.jsonl  one line per clip: {"key", "candidates": [{"text", "beam_size", "logprob", "length"}]},
                    beam sizes in config order, nbest per beam size best first; logprob is the sum of the
                    token log-probabilities, length the tokens it covers (EOS included)

  decode.yaml       the decoding options used

Files are written aside, then renamed; `text` comes last, so its presence says the job is complete. Split jobs
(--key_file) merge with `aac_inference --merge JOB_DIR... --output_dir OUT [--key_file ALL_KEYS]`, which checks
that the jobs used the same options, that no key repeats and (with --key_file) that every key is there.

The model: --model (a packed folder, an experiment dir or a Hugging Face Hub id), or --train_config with
--model_file. Decoding options come from --decode_config (conf/decode.yaml), then the flags below.
"""

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import yaml

from espnet_slam_aac.decoding import DecodingOptions
from espnet_slam_aac.errors import AudioError, ConfigError, DataError, SlamAACError

logger = logging.getLogger("aac_inference")

DECODING_HELP = {
    "beam_sizes": "beam sizes whose top hypotheses are the candidates: 4, 2..8 or 2,4,8",
    "nbest": "hypotheses kept per beam size",
    "text_beam_size": "beam size whose top-1 is the 1-best text",
    "max_new_tokens": "longest caption, in tokens",
    "min_new_tokens": "shortest caption, in tokens (EOS forbidden before)",
    "length_penalty": "finished score = sum log p / length ** length_penalty",
    "repetition_penalty": "transformers' repetition penalty over the generated tokens",
    "early_stopping": "true, false (transformers' heuristic) or never",
    "schedule": "combined (all beam sizes in one search) or sequential (less memory)",
}


def _early_stopping(value: str):
    table = {"true": True, "false": False, "never": "never"}
    if value.lower() not in table:
        raise argparse.ArgumentTypeError(f"expected true, false or never, got {value!r}")
    return table[value.lower()]


def add_model_arguments(parser: argparse.ArgumentParser, device: str, dtype: str) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", help="packed model folder, experiment dir, or Hugging Face Hub id")
    group.add_argument("--train_config", help="the model's config.yaml (instead of --model)")
    group.add_argument("--model_file", help="the model's weights (.safetensors or ESPnet .pth)")
    group.add_argument("--device", default=device, help=f"cpu, cuda, cuda:N or auto [{device}]")
    group.add_argument("--dtype", default=dtype, help=f"float32, bfloat16, float16 or auto (bf16 on GPU) [{dtype}]")
    group.add_argument("--batch_size", type=int, default=8, help="clips per forward pass [8]")
    group.add_argument("--decode_config", help="decode YAML (conf/decode.yaml); the flags below override it")
    group = parser.add_argument_group("decoding options (decode YAML keys; defaults in brackets)")
    defaults = DecodingOptions()
    types = {f.name: type(getattr(defaults, f.name)) for f in dataclasses.fields(DecodingOptions)}
    types.update(beam_sizes=str, text_beam_size=int, early_stopping=_early_stopping)
    for name, help_ in DECODING_HELP.items():
        default = getattr(defaults, name)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        shown = "4 if decoded, else the first" if name == "text_beam_size" else shown
        flags = [f"--{name}", "--beams"] if name == "beam_sizes" else [f"--{name}"]
        group.add_argument(*flags, dest=name, type=types[name], default=None, help=f"{help_} [{shown}]")


def build_speech2caption(args: argparse.Namespace, **extra):
    from espnet_slam_aac.inference import Speech2Caption

    decoding = {name: getattr(args, name) for name in DECODING_HELP}
    common = dict(device=args.device, dtype=args.dtype, batch_size=args.batch_size,
                  decode_config=args.decode_config, **decoding, **extra)  # fmt: skip
    if args.model and args.train_config:
        raise ConfigError("give either --model or --train_config (with --model_file), not both")
    if args.model:
        return Speech2Caption.from_pretrained(args.model, model_file=args.model_file, **common)
    if not args.train_config:
        raise ConfigError("no model: pass --model DIR_OR_HUB_ID, or --train_config and --model_file")
    return Speech2Caption(args.train_config, args.model_file, **common)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", required=True, help="where text, beam<N>/text and candidates.jsonl go")
    parser.add_argument("--wav_scp", help="the clips to decode ('key path' lines), e.g. data/test/wav.scp")
    parser.add_argument("--key_file", help="decode only these keys (first field of each line); with --merge: "
                        "the keys the merged output must hold, each once")  # fmt: skip
    parser.add_argument("--num_workers", type=int, default=2, help="threads reading audio [2]")
    parser.add_argument("--merge", nargs="+", metavar="JOB_DIR", help="merge these jobs' output dirs instead")
    add_model_arguments(parser, device="cpu", dtype="float32")
    parser.add_argument("--log_level", default="INFO", help="logging level [INFO]")
    return parser


# ---- outputs ------------------------------------------------------------------------------------------
def write_atomically(path: Path, lines: Iterable[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")
    os.replace(tmp, path)


def _text_line(key: str, caption: str) -> str:
    caption = " ".join(caption.split())
    return f"{key} {caption}" if caption else key


def write_outputs(out_dir: Path, records: Sequence[Tuple[str, List[dict]]], options: DecodingOptions) -> None:
    """``records``: (key, candidates as dicts) per clip. Writes every output file, sorted by key."""
    records = sorted(records, key=lambda r: r[0])

    def top1(candidates: List[dict], beam: int) -> str:
        return next(c["text"] for c in candidates if c["beam_size"] == beam)

    for beam in options.beam_sizes:
        write_atomically(out_dir / f"beam{beam}" / "text", (_text_line(k, top1(c, beam)) for k, c in records))
    lines = (json.dumps({"key": k, "candidates": c}, ensure_ascii=False) for k, c in records)
    write_atomically(out_dir / "candidates.jsonl", lines)
    options_yaml = yaml.safe_dump({**dataclasses.asdict(options), "beam_sizes": list(options.beam_sizes)})
    write_atomically(out_dir / "decode.yaml", options_yaml.splitlines())
    # the 1-best last: its presence says the directory is complete
    write_atomically(out_dir / "text", (_text_line(k, top1(c, options.text_beam_size)) for k, c in records))


def merge(job_dirs: Sequence[Path], out_dir: Path, key_file: Optional[Path] = None) -> int:
    """Merge split jobs' outputs into ``out_dir`` (all files rewritten from the candidates); returns the
    number of clips."""
    records: Dict[str, List[dict]] = {}
    where: Dict[str, Path] = {}
    options = None
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
    write_outputs(Path(out_dir), list(records.items()), options)
    return len(records)


# ---- inputs -------------------------------------------------------------------------------------------
def read_keys(path: Path) -> List[str]:
    keys = [line.split(maxsplit=1)[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not keys:
        raise DataError(f"{path}: no keys")
    return keys


def select_entries(wav_scp: Path, key_file: Optional[Path]) -> List[Tuple[str, str]]:
    from espnet_slam_aac.data import read_wav_scp

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
    from espnet_slam_aac.frontend import load_audio

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


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out_dir, key_file = Path(args.output_dir), Path(args.key_file) if args.key_file else None
    try:
        if args.merge:
            n = merge(args.merge, out_dir, key_file)
            print(f"{out_dir}: {n} clips merged from {len(args.merge)} jobs")
            return
        if not args.wav_scp:
            raise ConfigError("pass --wav_scp (the clips to decode), or --merge JOB_DIR... to merge jobs")
        entries = select_entries(Path(args.wav_scp), key_file)
        s2c = build_speech2caption(args)
        logger.info("decoding %d clips with %s", len(entries), s2c.options)
        records = decode_entries(s2c, entries, args.num_workers)
        write_outputs(out_dir, records, s2c.options)
    except SlamAACError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    print(f"{out_dir}: {len(records)} clips decoded (beam sizes {list(s2c.options.beam_sizes)})")


if __name__ == "__main__":
    main()
