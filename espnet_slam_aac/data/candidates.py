"""``candidates.jsonl``, the n-best file a decode writes (``inference/nbest_files.py``): its one reader, for
CLAP-Refine, scoring and tuning alike. One line per clip::

    {"key": "clip1", "candidates": [{"text": "...", "beam_size": 2, "logprob": -7.1, "length": 9}, ...]}
"""

import json
from pathlib import Path
from typing import List, Tuple

from espnet_slam_aac.errors import DataError


def read_candidates(path: Path) -> List[Tuple[str, List[dict]]]:
    """candidates.jsonl -> [(key, candidates)] in file order; DataError naming file, line and key."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such candidates file")
    out, seen = [], {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: not a JSON object ({e})") from e
            key = rec.get("key") if isinstance(rec, dict) else None
            if not isinstance(key, str) or not key:
                raise DataError(f"{where}: needs a string 'key'")
            cands = rec.get("candidates")
            if not isinstance(cands, list) or not cands:
                raise DataError(f"{where}: key {key!r}: 'candidates' must be a non-empty list")
            for i, c in enumerate(cands):
                if not isinstance(c, dict) or not isinstance(c.get("text"), str):
                    raise DataError(f"{where}: key {key!r}: candidate {i} needs a string 'text'")
            if key in seen:
                raise DataError(f"{where}: duplicate key {key!r} (also on line {seen[key]})")
            seen[key] = lineno
            out.append((key, cands))
    return out
