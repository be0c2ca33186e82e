"""Stage 3's formatter (egs2/TEMPLATE/aac1/utils/format_data.py), run as a real subprocess."""

import json
import resource
import subprocess
import sys
from pathlib import Path

import soundfile

from espnet_slam_aac.data.audio import resampled_length
from espnet_slam_aac.data.check import validate_data_dir
from espnet_slam_aac.data.datadir import read_data_dir
from espnet_slam_aac.data.manifest import prepare_data_dir

FORMAT = Path(__file__).resolve().parents[2] / "egs2" / "TEMPLATE" / "aac1" / "utils" / "format_data.py"


def run_format(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(FORMAT), *map(str, args)], capture_output=True, text=True)


def manifest(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps({"key": k, "source": str(s), "target": t}) + "\n" for k, s, t in rows))
    return path


def test_format_resamples_only_clips_not_at_16k_and_keeps_references(tmp_path, audio_files):
    rows = [
        ("a_1", audio_files["10s_16k"], "one"),
        ("a_2", audio_files["10s_16k"], "two"),
        ("b_1", audio_files["3s_44k_stereo"], "three"),
        ("b_2", audio_files["3s_44k_stereo"], "four"),
        ("c_1", audio_files["10s_32k"], "five"),
    ]
    train = prepare_data_dir(manifest(tmp_path / "train.jsonl", rows), tmp_path / "data/train").out_dir
    evaluation = prepare_data_dir(
        manifest(tmp_path / "eval.jsonl", rows), tmp_path / "data/eval", references=True
    ).out_dir

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
    other = prepare_data_dir(
        manifest(tmp_path / "o.jsonl", [("z_1", audio_files["10s_16k"], "six")]), tmp_path / "data/other"
    ).out_dir
    combined = run_format(tmp_path / "dump/train", other, tmp_path / "dump/all")
    assert combined.returncode == 0 and "6 utterances, 0 clips resampled" in combined.stdout
    validate_data_dir(tmp_path / "dump/all")


def test_format_refuses_overlapping_keys(tmp_path, audio_files):
    rows = [("a_1", audio_files["10s_16k"], "one")]
    one = prepare_data_dir(manifest(tmp_path / "1.jsonl", rows), tmp_path / "data/one").out_dir
    two = prepare_data_dir(manifest(tmp_path / "2.jsonl", rows), tmp_path / "data/two").out_dir
    done = run_format(one, two, tmp_path / "dump/both")
    assert done.returncode == 1 and "duplicate utterance key 'a_1'" in done.stderr


def test_format_refuses_a_data_dir_key_that_would_name_a_file_outside_the_dump_dir(tmp_path, audio_files):
    # A hand-written data dir (not made by prepare-data) whose key holds "../": the clip needs resampling, so
    # format_data.py would write <key>.flac. It stops at reading, names the file, line and rule, writes nothing.
    data = tmp_path / "data/bad"
    data.mkdir(parents=True)
    key, clip = "../../escaped", audio_files["3s_44k_stereo"]
    for name, value in [("wav.scp", clip), ("text", "a caption"), ("utt2num_samples", 132300), ("utt2dur", 3.0)]:
        (data / name).write_text(f"{key} {value}\n")
    done = run_format(data, tmp_path / "dump/raw/bad")
    assert done.returncode == 1
    assert "wav.scp:1: key '../../escaped' contains '/' (keys are file names" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "dump").exists() and not list(tmp_path.rglob("*.flac"))


def test_format_refuses_to_write_over_its_input(tmp_path, audio_files):
    rows = [("a_1", audio_files["3s_44k_stereo"], "one")]
    data = prepare_data_dir(manifest(tmp_path / "m.jsonl", rows), tmp_path / "data/a").out_dir
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    done = run_format(data, tmp_path / "data/../data/a")
    assert done.returncode == 1 and "data/a is also an input: write the formatted dir elsewhere" in done.stderr
    assert {p.name: p.read_bytes() for p in data.iterdir()} == before


def test_a_full_disk_stops_format_with_one_line_and_leaves_the_previous_output_whole(tmp_path, audio_files):
    rows = [("b_1", audio_files["3s_44k_stereo"], "one")]
    data = prepare_data_dir(manifest(tmp_path / "m.jsonl", rows), tmp_path / "data/x").out_dir
    out = tmp_path / "dump/x"
    assert run_format(data, out).returncode == 0
    previous = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    # a new clip to resample, on a "disk" that takes no file over 50 kB (RLIMIT_FSIZE: writes fail with EFBIG)
    rows.append(("c_1", audio_files["10s_32k"], "two"))
    data = prepare_data_dir(manifest(tmp_path / "m.jsonl", rows), tmp_path / "data/x").out_dir
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))  # noqa: E731
    full = subprocess.run(
        [sys.executable, str(FORMAT), str(data), str(out)], capture_output=True, text=True, preexec_fn=limit
    )
    assert full.returncode == 1
    assert full.stderr.strip().splitlines()[-1].endswith(".x.audio/c_1.flac: File too large")
    assert "Traceback" not in full.stderr
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == previous
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp") or (p.is_file() and p.stat().st_size == 0)]
    again = run_format(data, out)  # with room again, the previous file is reused and the new one written
    assert again.returncode == 0 and "2 utterances, 2 clips resampled" in again.stdout
    assert {u.key for u in read_data_dir(out)} == {"b_1", "c_1"} and (out / "audio/b_1.flac").read_bytes() == (
        previous[Path("audio/b_1.flac")]
    )


# ------------------------------------------------------------------ aac-datasets -> jsonl (with a stand-in)

MANIFEST = FORMAT.parent / "aac_datasets_manifest.py"

STUB = """
class _Subset:
    def __init__(self, root, subset, download=False, **kwargs):
        import json, os
        spec = json.load(open(os.path.join(root, "stub.json")))[subset]
        self.columns = {k: spec[k] for k in spec}
        self.kwargs = kwargs
    def __len__(self):
        return len(self.columns["fpath"])
    def at(self, idx, column):
        assert idx is None
        return self.columns[column]

class Clotho(_Subset):
    pass

class AudioCaps(_Subset):
    def __init__(self, root, subset, download=False, exclude_removed_audio=True, **kwargs):
        assert exclude_removed_audio is False, "the converter must see missing clips to report them"
        super().__init__(root, subset, download)
"""


def run_manifest(tmp_path, *args, stub=STUB):
    """Runs the converter with ``stub`` as the aac_datasets package."""
    (tmp_path / "stub" / "aac_datasets").mkdir(parents=True, exist_ok=True)
    (tmp_path / "stub" / "aac_datasets" / "__init__.py").write_text(stub)
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path / "stub")}
    return subprocess.run([sys.executable, str(MANIFEST), *map(str, args)], capture_output=True, text=True, env=env)


def test_audiocaps_manifest_leaves_out_and_reports_clips_that_could_not_be_fetched(tmp_path, audio_files):
    root = tmp_path / "downloads"
    root.mkdir()
    spec = {
        "test": {
            "fpath": [str(audio_files["10s_32k"]), str(root / "gone.flac"), str(audio_files["10s_16k"])],
            "captions": [["a dog barks", "a dog is barking"], ["lost"], ["rain", "rain falls"]],
            "youtube_id": ["abc", "-gone", "xyz"],
            "start_time": [30, 0, 10],
        }
    }
    (root / "stub.json").write_text(json.dumps(spec))
    out = tmp_path / "manifests" / "audiocaps_test.jsonl"
    done = run_manifest(tmp_path, "audiocaps", "test", out, "--root", root)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["key"] for r in rows] == [
        "audiocaps_test_00000_1",
        "audiocaps_test_00000_2",
        "audiocaps_test_00002_1",
        "audiocaps_test_00002_2",
    ]
    assert rows[0] == {"key": "audiocaps_test_00000_1", "source": str(audio_files["10s_32k"]), "target": "a dog barks"}
    assert "1 of 3 clips are not on disk" in done.stderr
    missing = (tmp_path / "manifests" / "audiocaps_test.missing.tsv").read_text().splitlines()
    assert missing == ["row\tyoutube_id\tstart_time", "1\t-gone\t0"]
    # the manifest becomes an evaluation data dir with every reference
    data = prepare_data_dir(out, tmp_path / "data/test", references=True).out_dir
    assert read_data_dir(data)[0].texts == ("a dog barks", "a dog is barking")


def test_clotho_manifest_treats_a_missing_file_as_a_broken_download(tmp_path, audio_files):
    root = tmp_path / "downloads"
    root.mkdir()
    spec = {"eval": {"fpath": [str(audio_files["10s_16k"]), str(root / "gone.wav")], "captions": [["a"], ["b"]]}}
    (root / "stub.json").write_text(json.dumps(spec))
    done = run_manifest(tmp_path, "clotho", "eval", tmp_path / "clotho_eval.jsonl", "--root", root)
    assert done.returncode != 0 and "gone.wav is missing; download Clotho again" in done.stderr


def test_manifest_without_aac_datasets_says_how_to_install_it(tmp_path):
    absent = "raise ImportError(\"No module named 'aac_datasets'\")\n"  # as if not installed
    done = run_manifest(tmp_path, "clotho", "dev", tmp_path / "x.jsonl", "--root", tmp_path, stub=absent)
    assert done.returncode != 0 and "pip install -e '.[recipe]'" in done.stderr
