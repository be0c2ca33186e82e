#!/usr/bin/env python3
"""Split a key list (or any ``key rest-of-line`` file, e.g. wav.scp) into N parts for N jobs.

    split_keys.py KEYS N OUT_DIR      -> OUT_DIR/keys.1.scp .. OUT_DIR/keys.N.scp

Parts are contiguous and their sizes differ by at most one; lines are kept whole. N above the number of
keys is an error (ask for fewer jobs); so is a line without a key, named by file and line. The jobs'
outputs are merged by the tools that write them (aac_inference --merge, aggregate_stats_dirs).
"""

import sys
from pathlib import Path
from typing import List


def split(keys_file: Path, n: int, out_dir: Path) -> List[Path]:
    lines = keys_file.read_text(encoding="utf-8").splitlines()
    for lineno, line in enumerate(lines, 1):
        if not line.split():
            raise ValueError(f"{keys_file}:{lineno}: empty line (every line must start with a key)")
    if not 1 <= n <= len(lines):
        raise ValueError(f"cannot split the {len(lines)} keys of {keys_file} into {n} parts (use 1..{len(lines)})")
    out_dir.mkdir(parents=True, exist_ok=True)
    out, start = [], 0
    for i in range(n):
        size = len(lines) // n + (1 if i < len(lines) % n else 0)
        path = out_dir / f"keys.{i + 1}.scp"
        path.write_text("".join(line + "\n" for line in lines[start : start + size]), encoding="utf-8")
        start += size
        out.append(path)
    return out


def main(argv: List[str]) -> int:
    if len(argv) != 3 or not argv[1].isdigit():
        print(__doc__, file=sys.stderr)
        return 2
    try:
        split(Path(argv[0]), int(argv[1]), Path(argv[2]))
    except (ValueError, OSError) as e:
        print(f"split_keys.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
