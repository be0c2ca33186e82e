"""Files written so that a reader never sees half of one: atomic writes, and Kaldi's ``key value`` lines."""

import os
from pathlib import Path
from typing import Iterable, Tuple


def write_atomically(path: Path, lines: Iterable[str]) -> None:
    """Write ``lines`` (newline-terminated) to a hidden sibling, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            for line in lines:
                f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def kaldi_line(key: str, text: str) -> str:
    """``key text`` with the text's white space collapsed (a Kaldi ``text`` line); just ``key`` when empty."""
    text = " ".join(text.split())
    return f"{key} {text}" if text else key


def write_kaldi_text(path: Path, rows: Iterable[Tuple[str, str]]) -> None:
    """A Kaldi ``text``-style file of ``(key, text)`` rows, in the given order, written atomically."""
    write_atomically(path, (kaldi_line(key, text) for key, text in rows))
