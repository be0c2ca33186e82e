#!/usr/bin/env python3
"""Split key lists into job parts and merge the jobs' keyed outputs (``key rest-of-line`` or jsonl with "key").

    split_merge.py split KEYS N OUT_DIR           KEYS -> OUT_DIR/keys.1.scp .. keys.N.scp (contiguous,
                                               sizes differ by at most one; N above the key count is
                                               an error: ask for fewer jobs)
    split_merge.py merge [--expect KEYS] OUT IN...    concatenate keyed files, sorted by key
    split_merge.py merge_dirs [--expect KEYS] OUT_DIR IN_DIR...
                                               merge every file of the first IN_DIR (found by relative
                                               path, recursively) across all IN_DIRs: job outputs ->
                                               one output dir

Keys are sorted as ``LC_ALL=C sort`` does. A key seen twice, a line without a key, a job output that
lacks a key of --expect or has one not in it, are errors naming the file and line: merged results are
never silently incomplete. Files ending in ``.jsonl`` are keyed by their "key" field; ``.done``
markers and ``*.log`` files are not merged.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple


class DataDirError(Exception):
    pass


def line_key(path: Path, lineno: int, line: str) -> str:
    if path.suffix == ".jsonl":
        try:
            key = json.loads(line)["key"]
        except (ValueError, KeyError, TypeError) as e:
            raise DataDirError(f"{path}:{lineno}: not a json object with a 'key' ({e})") from e
        return str(key)
    key = line.split(maxsplit=1)[0] if line.strip() else ""
    if not key:
        raise DataDirError(f"{path}:{lineno}: empty line (every line must start with a key)")
    return key


def read_keyed(path: Path) -> List[Tuple[str, str]]:
    """(key, line without newline) for each line of ``path``."""
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            out.append((line_key(path, lineno, line), line))
    return out


def read_keys(path: Path) -> List[str]:
    return [key for key, _ in read_keyed(path)]


def write_lines(path: Path, lines: Iterable[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")
    tmp.replace(path)


def split(keys_file: Path, n: int, out_dir: Path) -> List[Path]:
    keys = read_keyed(keys_file)
    if n < 1 or n > len(keys):
        raise DataDirError(f"cannot split {len(keys)} keys of {keys_file} into {n} parts (use 1..{len(keys)})")
    out = []
    start = 0
    for i in range(n):
        size = len(keys) // n + (1 if i < len(keys) % n else 0)
        path = out_dir / f"keys.{i + 1}.scp"
        write_lines(path, (line for _, line in keys[start : start + size]))
        start += size
        out.append(path)
    return out


def merge(out: Path, inputs: List[Path], expect: Optional[Path] = None) -> None:
    seen: Dict[str, Path] = {}
    lines = []
    for path in inputs:
        for key, line in read_keyed(path):
            if key in seen:
                raise DataDirError(f"key {key} is in both {seen[key]} and {path}")
            seen[key] = path
            lines.append((key, line))
    if expect is not None:
        wanted = set(read_keys(expect))
        missing = sorted(wanted - set(seen))
        extra = sorted(set(seen) - wanted)
        if missing or extra:
            raise DataDirError(
                f"merging into {out}: {len(missing)} keys of {expect} missing (first: {missing[:3]}), "
                f"{len(extra)} unexpected (first: {extra[:3]}); rerun the failed jobs"
            )
    lines.sort(key=lambda kv: kv[0].encode("utf-8"))
    write_lines(out, (line for _, line in lines))


def is_output(name: str) -> bool:
    """Not a marker (``.done``), log or temporary file."""
    return not name.startswith(".") and not name.endswith((".log", ".tmp"))


def merge_dirs(out_dir: Path, in_dirs: List[Path], expect: Optional[Path] = None) -> List[Path]:
    names = sorted(p.relative_to(in_dirs[0]) for p in in_dirs[0].rglob("*") if p.is_file() and is_output(p.name))
    if not names:
        raise DataDirError(f"{in_dirs[0]} holds no output files to merge")
    for name in names:
        inputs = [d / name for d in in_dirs]
        absent = [str(p) for p in inputs if not p.is_file()]
        if absent:
            raise DataDirError(f"{name} is missing from {', '.join(absent[:3])}: rerun those jobs")
        merge(out_dir / name, inputs, expect)
    return [out_dir / name for name in names]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="split_merge.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("split")
    p.add_argument("keys", type=Path)
    p.add_argument("n", type=int)
    p.add_argument("out_dir", type=Path)
    for name in ("merge", "merge_dirs"):
        p = sub.add_parser(name)
        p.add_argument("--expect", type=Path, default=None, help="the keys every merged file must hold")
        p.add_argument("out", type=Path)
        p.add_argument("inputs", type=Path, nargs="+")
    args = parser.parse_args(argv)
    try:
        if args.command == "split":
            split(args.keys, args.n, args.out_dir)
        elif args.command == "merge":
            merge(args.out, args.inputs, args.expect)
        else:
            merge_dirs(args.out, args.inputs, args.expect)
    except (DataDirError, OSError) as e:
        print(f"split_merge.py {args.command}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
