"""How every ``bin/`` tool runs: one logging format on stderr, ``--quiet``, and our errors as ``error: ...`` lines.

    def main(argv=None):
        args = get_parser().parse_args(argv)
        runner.run(body, args)        # body(args) -> None or an exit status

A ``SlamAACError`` (a user's mistake: the message says what and where) and an ``OSError`` (a path that cannot
be read or written: read-only folder, full disk) end the tool with one ``error: ...`` line on stderr and exit
status 1, never a traceback. stdout is left to the data the tool prints; logs and progress go to stderr.
``--quiet`` keeps warnings and errors only and silences the libraries' noise: transformers' and the Hub's
progress bars, tqdm bars, Python warnings raised outside this package (FutureWarning and the like).
"""

import argparse
import contextlib
import logging
import os
import sys
import warnings
from typing import Callable, Iterator, Optional

from espnet_slam_aac.errors import SlamAACError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# read by tqdm (>= 4.66), huggingface_hub and transformers when they are imported
QUIET_ENV = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error"}


def add_arguments(parser: argparse.ArgumentParser, log_level: str = "INFO") -> None:
    """``--quiet`` and ``--log_level``, the flags every tool shares."""
    parser.add_argument(
        "--quiet", action="store_true", help="warnings and errors only; no progress bars or library warnings"
    )
    parser.add_argument("--log_level", default=log_level, help=f"logging level on stderr [{log_level}]")


def describe_os_error(err: OSError) -> str:
    """One line: the path and the OS's reason (``err.filename`` is set by ``open`` and by our writers)."""
    reason = err.strerror or str(err)
    if err.filename is not None:
        return f"{err.filename}: {reason}"
    return f"{type(err).__name__}: {reason}"


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Progress bars off and warnings from outside this package ignored, restored on exit."""
    saved = {name: os.environ.get(name) for name in QUIET_ENV}
    os.environ.update(QUIET_ENV)
    transformers_logging = sys.modules.get("transformers.utils.logging")
    hub_utils = sys.modules.get("huggingface_hub.utils")
    if transformers_logging is not None:  # already imported: the environment is no longer read
        verbosity, bars = transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled()
        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()
    if hub_utils is not None:
        hub_bars = not hub_utils.are_progress_bars_disabled()
        hub_utils.disable_progress_bars()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore")
            warnings.filterwarnings("default", module=r"espnet_slam_aac(\.|$)")
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if transformers_logging is not None:
            transformers_logging.set_verbosity(verbosity)
            if bars:
                transformers_logging.enable_progress_bar()
        if hub_utils is not None and hub_bars:
            hub_utils.enable_progress_bars()


def configure_logging(level: str) -> None:
    """``LOG_FORMAT`` on stderr at ``level`` (a handler already there, e.g. pytest's, is kept)."""
    try:
        logging.getLogger().setLevel(level.upper())
    except ValueError:
        raise SlamAACError(f"--log_level {level!r}: use DEBUG, INFO, WARNING or ERROR") from None
    logging.basicConfig(format=LOG_FORMAT, stream=sys.stderr)


def fail(message: str) -> None:
    """Print ``error: message`` on stderr and exit with status 1."""
    sys.stdout.flush()
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def run(body: Callable[[argparse.Namespace], Optional[int]], args: argparse.Namespace) -> None:
    """Run ``body(args)`` as a tool: logging set up (unless ``args`` has no ``log_level``: a tool that sets up its
    own, as ESPnet's trainer does), ``--quiet`` honoured, errors turned into ``error:`` lines. A non-zero status
    returned by ``body`` becomes the exit status."""
    quiet = getattr(args, "quiet", False)
    level = "WARNING" if quiet else getattr(args, "log_level", None)
    try:
        if level is not None:
            configure_logging(level)
        with quiet_libraries() if quiet else contextlib.nullcontext():
            status = body(args)
    except SlamAACError as err:
        fail(str(err))
    except BrokenPipeError:  # the reader of stdout went away (`| head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except OSError as err:
        fail(describe_os_error(err))
    if status:
        sys.exit(status)
