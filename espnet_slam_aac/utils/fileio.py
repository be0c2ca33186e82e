"""Files written so that a reader never sees half of one, and never over an input.

Every single file a tool writes goes through ``atomic_output`` (or ``write_atomically`` / ``write_kaldi_text``
on top of it): the data goes to a hidden sibling ``.NAME.<pid>.tmp``, is flushed to disk, and is renamed over
NAME only when complete. A failure (read-only folder, full disk, an error in the producer) removes the sibling
and leaves NAME as it was: no partial, ``.tmp`` or 0-byte file under the output's name. The ``OSError`` then
names NAME, not the sibling. ``refuse_overwrite`` is the check every tool makes before it writes.
"""

import contextlib
import os
from pathlib import Path
from typing import IO, Iterable, Iterator, Tuple, Union

from espnet_slam_aac.errors import ConfigError

PathLike = Union[str, os.PathLike]


@contextlib.contextmanager
def atomic_output(path: PathLike, binary: bool = False) -> Iterator[IO]:
    """A file handle whose content becomes ``path`` when the block ends without an exception."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = dict(mode="wb") if binary else dict(mode="w", encoding="utf-8", newline="\n")
        with open(tmp, **mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        _remove(tmp)
        if err.filename is not None and os.fspath(err.filename) != os.fspath(tmp):
            raise  # another file's error (an input the producer reads): it names its own file
        raise OSError(err.errno, f"cannot write: {err.strerror or err}", str(path)) from err
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: Path) -> None:
    """Remove a file if it is there (on a read-only file system even a missing one cannot be unlinked)."""
    try:
        path.unlink()
    except OSError:
        pass


def write_atomically(path: PathLike, lines: Iterable[str]) -> None:
    """Write ``lines`` (each gets a newline) to ``path`` through ``atomic_output``."""
    with atomic_output(path) as f:
        for line in lines:
            f.write(line + "\n")


def kaldi_line(key: str, text: str) -> str:
    """``key text`` with the text's white space collapsed (a Kaldi ``text`` line); just ``key`` when empty."""
    text = " ".join(text.split())
    return f"{key} {text}" if text else key


def write_kaldi_text(path: PathLike, rows: Iterable[Tuple[str, str]]) -> None:
    """A Kaldi ``text``-style file of ``(key, text)`` rows, in the given order, written atomically."""
    write_atomically(path, (kaldi_line(key, text) for key, text in rows))


def _same(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def refuse_overwrite(
    outputs: Iterable[PathLike], inputs: Iterable[PathLike], replaced_dirs: Iterable[PathLike] = ()
) -> None:
    """ConfigError when an output file is one of the inputs, or an input lies in a folder the tool replaces
    whole (``replaced_dirs``): the run would destroy what it reads. Checked before anything is written."""
    inputs = [Path(p) for p in inputs if p is not None]
    for out in (Path(p) for p in outputs if p is not None):
        for source in inputs:
            if _same(out, source):
                raise ConfigError(f"{out}: this output is also an input ({source}); choose another output path")
    for folder in (Path(p) for p in replaced_dirs if p is not None):
        root = os.path.realpath(folder)
        for source in inputs:
            real = os.path.realpath(source)
            if real == root or real.startswith(root.rstrip(os.sep) + os.sep):
                raise ConfigError(
                    f"{folder}: this output folder is replaced as a whole, but the input {source} is in it; "
                    "choose another output folder"
                )
