"""utils/runner.py: how every tool ends, and what --quiet silences."""

import argparse
import errno
import logging
import os
import warnings

import pytest

from espnet_slam_aac.errors import DataError
from espnet_slam_aac.utils import runner


def finish(body, **args):
    try:
        runner.run(body, argparse.Namespace(**args))
    except SystemExit as exit_:
        return exit_.code
    return 0


def test_our_errors_and_os_errors_are_one_line_and_exit_1(capsys):
    def bad_input(_):
        raise DataError("wav.scp:3: key 'x' repeats line 1")

    def full_disk(_):
        raise OSError(errno.ENOSPC, "cannot write: No space left on device", "out/text")

    assert finish(bad_input) == 1
    assert capsys.readouterr().err == "error: wav.scp:3: key 'x' repeats line 1\n"
    assert finish(full_disk) == 1
    assert capsys.readouterr().err == "error: out/text: cannot write: No space left on device\n"


def test_a_returned_status_is_the_exit_status_and_zero_returns():
    assert finish(lambda _: 3) == 3
    assert finish(lambda _: None) == 0


def test_an_unknown_log_level_is_an_error_line(capsys):
    assert finish(lambda _: None, log_level="LOUD") == 1
    assert "--log_level 'LOUD'" in capsys.readouterr().err


def test_quiet_logs_warnings_only_and_turns_progress_bars_off_for_the_run(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    seen = {}

    def body(_):
        seen.update(level=logging.getLogger().level, tqdm=os.environ.get("TQDM_DISABLE"))

    finish(body, quiet=True)
    assert seen == {"level": logging.WARNING, "tqdm": "1"}
    assert "TQDM_DISABLE" not in os.environ


@pytest.mark.parametrize("quiet", [True, False])
def test_quiet_filters_apply_inside_the_body(quiet):
    caught = []

    def body(_):
        with warnings.catch_warnings(record=True) as record:
            warnings.warn_explicit("library", FutureWarning, "x.py", 1, module="transformers.modeling_utils")
            warnings.warn_explicit("ours", UserWarning, "y.py", 2, module="espnet_slam_aac.bin.caption")
        caught.extend(str(w.message) for w in record)

    finish(body, quiet=quiet)
    assert caught == (["ours"] if quiet else ["library", "ours"])
