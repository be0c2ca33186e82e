import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from espnet_slam_aac import cli
from espnet_slam_aac.bin import prepare_data, validate_data_dir


def run(*args: str) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("espnet-slam-aac")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "espnet_slam_aac.cli"]
    return subprocess.run(command + list(args), capture_output=True, text=True, timeout=120)


def test_cli_prepares_and_validates_a_data_dir_in_a_subprocess(synth_manifest, tmp_path):
    out = tmp_path / "evaluation"
    done = run("prepare-data", str(synth_manifest), str(out), "--eval", "--expect_refs", "5")
    assert done.returncode == 0, done.stderr
    assert f"{out}: 12 clips from 60 manifest lines, 0 dropped" in done.stderr
    done = run("validate-data", str(out))
    assert done.returncode == 0 and f"{out}: OK (12 utterances, text_spk1..5)" in done.stdout


def test_cli_errors_name_file_line_and_key_without_a_traceback(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        '{"key": "a", "source": "a.wav", "target": "x"}\n{"key": "b c", "source": "a.wav", "target": "y"}\n'
    )
    command = [sys.executable, "-m", "espnet_slam_aac.bin.prepare_data", str(manifest), str(tmp_path / "d")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert (
        done.stderr == f"error: {manifest}:2: key 'b c' contains whitespace (Kaldi keys are single tokens); "
        "replace it, e.g. with '_'\n"
    )
    assert not (tmp_path / "d").exists()


def test_drop_invalid_prints_the_count_and_validate_reports_problems(tmp_path, capsys):
    soundfile.write(tmp_path / "a.wav", 0.1 * np.ones(800), 16000)
    rows = [{"key": "a", "source": "a.wav", "target": "x"}, {"key": "b", "source": "gone.wav", "target": "y"}]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SystemExit) as stop:
        prepare_data.main([str(manifest), str(tmp_path / "d")])
    assert stop.value.code == 1
    assert "m.jsonl:2: key 'b': audio file not found" in capsys.readouterr().err
    cli.main(["prepare-data", str(manifest), str(tmp_path / "d"), "--drop_invalid"])
    assert capsys.readouterr().err == (
        f"{tmp_path / 'd'}: 1 utterances from 2 manifest lines, 1 dropped "
        f"(listed in {tmp_path / 'd' / 'dropped.tsv'})\n"
    )
    (tmp_path / "a.wav").unlink()
    with pytest.raises(SystemExit):
        validate_data_dir.main([str(tmp_path / "d")])
    assert "wav.scp:1: key 'a': audio file not found" in capsys.readouterr().err
    validate_data_dir.main([str(tmp_path / "d"), "--audio", "none"])
    assert "OK (1 utterances)" in capsys.readouterr().out


def test_expect_refs_needs_eval(tmp_path):
    with pytest.raises(SystemExit):
        prepare_data.main(["m.jsonl", str(tmp_path / "d"), "--expect_refs", "5"])
