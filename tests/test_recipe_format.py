"""Stage 3's formatter (egs2/TEMPLATE/aac1/utils/format_data.py), run as a real subprocess."""

import json
import subprocess
import sys
from pathlib import Path

import soundfile

from espnet_slam_aac.data import prepare_data_dir, read_data_dir, validate_data_dir
from espnet_slam_aac.frontend import resampled_length

FORMAT = Path(__file__).resolve().parents[1] / "egs2" / "TEMPLATE" / "aac1" / "utils" / "format_data.py"


def run_format(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(FORMAT), *map(str, args)], capture_output=True, text=True)


def manifest(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps({"key": k, "source": str(s), "target": t}) + "\n" for k, s, t in rows))
    return path


def test_format_resamples_only_clips_not_at_16k_and_keeps_references(tmp_path, audio_files):
    rows = [("a_1", audio_files["10s_16k"], "one"), ("a_2", audio_files["10s_16k"], "two"),
            ("b_1", audio_files["3s_44k_stereo"], "three"), ("b_2", audio_files["3s_44k_stereo"], "four"),
            ("c_1", audio_files["10s_32k"], "five")]
    train = prepare_data_dir(manifest(tmp_path / "train.jsonl", rows), tmp_path / "data/train").out_dir
    evaluation = prepare_data_dir(manifest(tmp_path / "eval.jsonl", rows), tmp_path / "data/eval",
                                  references=True).out_dir

    done = run_format(train, tmp_path / "dump/train")
    assert done.returncode == 0, done.stderr
    assert "5 utterances, 2 clips resampled" in done.stdout
    validate_data_dir(tmp_path / "dump/train")
    utts = {u.key: u for u in read_data_dir(tmp_path / "dump/train")}
    assert utts["a_1"].source == str(audio_files["10s_16k"])  # already 16 kHz: the original file
    assert utts["b_1"].source == utts["b_2"].source == str((tmp_path / "dump/train/audio/b_1.flac").resolve())
    info = soundfile.info(utts["b_1"].source)
    assert (info.samplerate, info.channels) == (16000, 2)
    assert utts["b_1"].num_samples == info.frames == resampled_length(3 * 44100, 44100)
    assert [u.texts for u in utts.values()] == [("one",), ("two",), ("three",), ("four",), ("five",)]

    # Evaluation sets keep every reference; several inputs are combined into one dump dir.
    assert run_format(evaluation, tmp_path / "dump/eval").returncode == 0
    assert read_data_dir(tmp_path / "dump/eval")[0].texts == ("one", "two")
    assert (tmp_path / "dump/eval/text_spk2").is_file()

    # A rerun reuses the resampled files; combining already formatted dirs resamples nothing.
    again = run_format(train, tmp_path / "dump/train")
    assert again.returncode == 0 and "2 clips resampled" in again.stdout
    assert (tmp_path / "dump/train/audio/b_1.flac").is_file()
    other = prepare_data_dir(manifest(tmp_path / "o.jsonl", [("z_1", audio_files["10s_16k"], "six")]),
                             tmp_path / "data/other").out_dir
    combined = run_format(tmp_path / "dump/train", other, tmp_path / "dump/all")
    assert combined.returncode == 0 and "6 utterances, 0 clips resampled" in combined.stdout
    validate_data_dir(tmp_path / "dump/all")


def test_format_refuses_overlapping_keys(tmp_path, audio_files):
    rows = [("a_1", audio_files["10s_16k"], "one")]
    one = prepare_data_dir(manifest(tmp_path / "1.jsonl", rows), tmp_path / "data/one").out_dir
    two = prepare_data_dir(manifest(tmp_path / "2.jsonl", rows), tmp_path / "data/two").out_dir
    done = run_format(one, two, tmp_path / "dump/both")
    assert done.returncode == 1 and "duplicate utterance key 'a_1'" in done.stderr
