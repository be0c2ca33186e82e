"""The key rule (data/records.py): Kaldi tokens that are also safe file names, enforced where keys enter
(prepare-data, data dirs) and where a key becomes a file name."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from espnet_slam_aac.data.records import MAX_KEY_LENGTH, key_file_name, key_problem
from espnet_slam_aac.errors import DataError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "key",
    ["Y7fmOlUlwoNg_1", "clotho_dev_00001_1", "a.b", "a..b", "-x", "x.", "a\\b", "~x", "k" * MAX_KEY_LENGTH],
)
def test_ordinary_keys_pass(key):
    assert key_problem(key) is None
    assert key_file_name(key, ".flac") == f"{key}.flac"


@pytest.mark.parametrize(
    "key, message",
    [
        ("a/b", r"contains '/' \(keys are file names: no '/', no leading '\.', at most 200 characters\)"),
        ("../escape", "contains '/'"),
        ("/abs", "contains '/'"),
        (".", r"starts with '\.'"),
        ("..", r"starts with '\.'"),
        (".hidden", r"starts with '\.' .*rename it"),
        ("k" * (MAX_KEY_LENGTH + 1), "has 201 characters .*shorten it"),
        ("", "key is empty"),
        ("a b", "contains whitespace"),
    ],
)
def test_keys_that_are_not_safe_file_names_are_refused_with_the_rule(key, message):
    assert key_problem(key) is not None
    with pytest.raises(DataError, match=message):
        key_file_name(key, ".flac")


def test_prepare_data_refuses_a_key_with_a_slash_naming_line_and_rule(tmp_path, audio_files):
    manifest = tmp_path / "m.jsonl"
    rows = [{"key": "ok_1", "source": str(audio_files["10s_16k"]), "target": "fine"}]
    rows.append({"key": "../../evil", "source": str(audio_files["3s_44k_stereo"]), "target": "bad"})
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = subprocess.run(
        [sys.executable, "-m", "espnet_slam_aac.bin.prepare_data", str(manifest), str(tmp_path / "data")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert out.returncode == 1, out.stderr
    assert "m.jsonl:2: key '../../evil' contains '/'" in out.stderr and "no leading '.'" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "data").exists()
