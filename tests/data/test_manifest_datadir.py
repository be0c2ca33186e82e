import json
import logging
import os
import random
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile

from espnet_slam_aac.data import datadir
from espnet_slam_aac.data.audio import probe_audio
from espnet_slam_aac.data.check import validate_data_dir
from espnet_slam_aac.data.datadir import read_data_dir, write_data_dir
from espnet_slam_aac.data.manifest import prepare_data_dir, read_manifest
from espnet_slam_aac.data.records import Utterance
from espnet_slam_aac.errors import AudioError, DataError

FILES = ["spk2utt", "text", "utt2dur", "utt2num_samples", "utt2spk", "wav.scp"]


def write_wav(path: Path, samples: int, rate: int = 16000, subtype: str = "PCM_16", silent: bool = False) -> Path:
    wave = np.zeros(samples) if silent else 0.1 * np.sin(np.arange(samples) / 7.0)
    soundfile.write(path, wave, rate, subtype=subtype)
    return path


def write_jsonl(path: Path, rows) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


def rows_of(path: Path):
    return [line.split(" ", 1) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def clip(tmp_path) -> Path:
    return write_wav(tmp_path / "clip.wav", 16000)


# ------------------------------------------------------------------------------------- good input
def test_train_set_has_one_sorted_utterance_per_line_and_identity_speakers(synth_manifest, tmp_path):
    report = prepare_data_dir(synth_manifest, tmp_path / "train")
    out = tmp_path / "train"
    assert sorted(p.name for p in out.iterdir()) == FILES
    assert report.num_utterances == report.num_lines == 60 and report.dropped == []
    keys = [k for k, _ in rows_of(out / "wav.scp")]
    assert keys == sorted(keys, key=str.encode) and len(keys) == 60
    assert all(k == spk for k, spk in rows_of(out / "utt2spk"))
    assert rows_of(out / "spk2utt") == rows_of(out / "utt2spk")
    assert {n for _, n in rows_of(out / "utt2num_samples")} == {"64000"}
    assert {d for _, d in rows_of(out / "utt2dur")} == {"4.0"}
    assert all(os.path.isabs(p) and os.path.isfile(p) for _, p in rows_of(out / "wav.scp"))
    manifest = [json.loads(line) for line in synth_manifest.read_text().splitlines()]
    assert dict(rows_of(out / "text")) == {row["key"]: row["target"] for row in manifest}
    assert validate_data_dir(out).num_utterances == 60


def test_output_is_byte_identical_whatever_the_line_order(synth_manifest, tmp_path):
    lines = synth_manifest.read_text().splitlines()
    random.Random(0).shuffle(lines)
    shuffled = tmp_path / "shuffled.jsonl"
    shuffled.write_text("\n".join(lines) + "\n")
    prepare_data_dir(synth_manifest, tmp_path / "a")
    prepare_data_dir(shuffled, tmp_path / "b", audio_root=synth_manifest.parent)
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_eval_set_has_one_utterance_per_clip_keyed_by_its_first_line(synth_manifest, tmp_path):
    prepare_data_dir(synth_manifest, tmp_path / "eval", references=True, expect_refs=5)
    out = tmp_path / "eval"
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES + [f"text_spk{k}" for k in range(1, 6)])
    manifest = [json.loads(line) for line in synth_manifest.read_text().splitlines()]
    keys = [k for k, _ in rows_of(out / "wav.scp")]
    assert keys == [f"clip{i:04d}_1" for i in range(12)]
    for k in range(1, 6):
        refs = dict(rows_of(out / f"text_spk{k}"))
        assert refs == {row["key"][:-2] + "_1": row["target"] for row in manifest if row["key"].endswith(f"_{k}")}
    assert rows_of(out / "text") == rows_of(out / "text_spk1")
    assert validate_data_dir(out).num_reference_files == 5


def test_eval_clips_with_fewer_references_appear_only_in_the_first_text_spk_files(tmp_path, clip, caplog):
    other = write_wav(tmp_path / "other.wav", 8000)
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"key": "b_1", "source": str(other), "target": "one"},
            {"key": "a_1", "source": str(clip), "target": "first"},
            {"key": "a_2", "source": str(clip), "target": "second"},
            {"key": "a_3", "source": "clip.wav", "target": "third"},  # same clip, relative path
        ],
    )
    with caplog.at_level(logging.WARNING):
        prepare_data_dir(manifest, tmp_path / "eval", references=True)
    assert "3 refs: 1 clips, 1 refs: 1 clips" in caplog.text
    out = tmp_path / "eval"
    assert rows_of(out / "text_spk1") == [["a_1", "first"], ["b_1", "one"]]
    assert rows_of(out / "text_spk3") == [["a_1", "third"]]
    assert [u.texts for u in read_data_dir(out)] == [("first", "second", "third"), ("one",)]
    with pytest.raises(
        DataError,
        match=r"m\.jsonl:1: key 'b_1': clip .*other\.wav has 1 reference\(s\) "
        r"\(lines 1\), expected 3",
    ):
        prepare_data_dir(manifest, tmp_path / "eval2", references=True, expect_refs=3)


def test_relative_sources_resolve_against_the_manifest_folder_or_audio_root(tmp_path):
    (tmp_path / "audio").mkdir()
    write_wav(tmp_path / "audio" / "x.wav", 16000)
    manifest = write_jsonl(tmp_path / "m.jsonl", [{"key": "x", "source": "audio/x.wav", "target": "a"}])
    prepare_data_dir(manifest, tmp_path / "d1")
    assert rows_of(tmp_path / "d1" / "wav.scp") == [["x", str(tmp_path / "audio" / "x.wav")]]
    elsewhere = tmp_path / "lists"
    elsewhere.mkdir()
    moved = write_jsonl(elsewhere / "m.jsonl", [{"key": "x", "source": "x.wav", "target": "a"}])
    prepare_data_dir(moved, tmp_path / "d2", audio_root=tmp_path / "audio")
    assert rows_of(tmp_path / "d2" / "wav.scp") == [["x", str(tmp_path / "audio" / "x.wav")]]


def test_extra_fields_stay_on_the_records_and_a_bom_and_blank_lines_are_ignored(tmp_path, clip):
    path = tmp_path / "m.jsonl"
    path.write_bytes(
        b"\xef\xbb\xbf"
        + json.dumps({"key": "k", "source": str(clip), "target": "t", "prompt": "AAC", "source_len": 3}).encode()
        + b"\n\n  \n"
    )
    manifest = read_manifest(path)
    assert [(ln.key, ln.line, dict(ln.extra)) for ln in manifest.lines] == [
        ("k", 1, {"prompt": "AAC", "source_len": 3})
    ]
    prepare_data_dir(path, tmp_path / "d")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == FILES


def test_caption_whitespace_is_collapsed_and_the_count_is_logged(tmp_path, clip, caplog):
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"key": "a", "source": str(clip), "target": "  a dog\tbarks\nloudly  "},
            {"key": "b", "source": str(clip), "target": "already clean"},
        ],
    )
    with caplog.at_level(logging.WARNING):
        report = prepare_data_dir(manifest, tmp_path / "d")
    assert report.num_normalized == 1 and "in 1 caption(s)" in caplog.text
    assert (tmp_path / "d" / "text").read_text() == "a a dog barks loudly\nb already clean\n"


def test_read_data_dir_round_trips_and_the_writer_takes_added_utterances(synth_manifest, tmp_path):
    prepare_data_dir(synth_manifest, tmp_path / "train")
    utts = read_data_dir(tmp_path / "train")
    assert len(utts) == 60 and utts[0] == Utterance(
        "clip0000_1", str(synth_manifest.parent.resolve() / "wav" / "clip0000.wav"), (utts[0].text,), 64000, 4.0
    )
    write_data_dir(utts, tmp_path / "copy")
    for name in FILES:
        assert (tmp_path / "copy" / name).read_bytes() == (tmp_path / "train" / name).read_bytes()
    paraphrases = [replace(u, key=f"{u.key}_p1", texts=(f"{u.text} again",)) for u in utts[:3]]
    write_data_dir(utts + paraphrases, tmp_path / "aug")
    again = read_data_dir(tmp_path / "aug")
    assert len(again) == 63 and again[1].key == "clip0000_1_p1" and again[1].source == utts[0].source
    write_data_dir(utts, tmp_path / "prov", extra_files={"provenance.jsonl": '{"a": 1}\n'})
    assert (tmp_path / "prov" / "provenance.jsonl").read_text() == '{"a": 1}\n'
    with pytest.raises(DataError, match="extra file name 'text' is taken"):
        write_data_dir(utts, tmp_path / "prov", extra_files={"text": ""})
    prepare_data_dir(synth_manifest, tmp_path / "eval", references=True)
    evals = read_data_dir(tmp_path / "eval")
    assert len(evals) == 12 and all(len(u.texts) == 5 for u in evals)


def test_writer_refuses_several_texts_without_references_and_duplicate_keys(tmp_path, clip):
    u = Utterance("a", str(clip), ("one", "two"), 16000, 1.0)
    with pytest.raises(DataError, match="utterance 'a' has 2 texts; write it with references=True"):
        write_data_dir([u], tmp_path / "d")
    with pytest.raises(DataError, match="duplicate utterance key 'a'"):
        write_data_dir([u, u], tmp_path / "d", references=True)
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(key="a b"), "contains whitespace"),
        (dict(key="caf\u00e9"), r"U\+00E9"),
        (dict(texts=()), "non-empty tuple"),
        (dict(texts=("two  spaces",)), "repeated/outer spaces"),
        (dict(texts=("bell\x07",)), "control character U\\+0007"),
        (dict(num_samples=0), "positive int"),
    ],
)
def test_records_are_validated_when_built(kwargs, message, clip):
    fields = dict(key="a", source=str(clip), texts=("t",), num_samples=16000, duration=1.0)
    with pytest.raises(DataError, match=message):
        Utterance(**{**fields, **kwargs})


# -------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "line, message",
    [
        ('{"key": "a", "source": "clip.wav", "target": "x"', r"m\.jsonl:2: malformed JSON \(Expecting ',' delimiter"),
        ('["a", "clip.wav", "x"]', r"m\.jsonl:2: expected a JSON object, got list"),
        ('{"key": "a b", "source": "clip.wav", "target": "x"}', r"m\.jsonl:2: key 'a b' contains whitespace"),
        ('{"key": "a\\u00e9", "source": "clip.wav", "target": "x"}', r"m\.jsonl:2: key 'a\u00e9' contains U\+00E9"),
        ('{"key": 17, "source": "clip.wav", "target": "x"}', r"m\.jsonl:2: key must be a string, got int 17"),
        ('{"key": "a", "target": "x"}', r"m\.jsonl:2: key 'a': missing required field\(s\) source"),
        ('{"key": "a", "source": "clip.wav", "target": null}', r"m\.jsonl:2: target must be a string"),
        ('{"key": "a", "source": "clip.wav ", "target": "x"}', r"m\.jsonl:2: source 'clip.wav ' has leading/trailing"),
        (
            '{"key": "first", "source": "clip.wav", "target": "x"}',
            r"m\.jsonl:2: key 'first': duplicate key \(first used on line 1\)",
        ),
    ],
)
def test_manifest_problems_stop_with_file_line_and_key(tmp_path, clip, line, message):
    manifest = write_jsonl(tmp_path / "m.jsonl", [{"key": "first", "source": "clip.wav", "target": "x"}, line])
    with pytest.raises(DataError, match=message):
        prepare_data_dir(manifest, tmp_path / "d", drop_invalid=True)  # never droppable
    assert not (tmp_path / "d").exists()


def test_non_utf8_manifest_names_the_line_and_byte(tmp_path, clip):
    path = tmp_path / "m.jsonl"
    path.write_bytes(
        b'{"key": "a", "source": "clip.wav", "target": "x"}\n{"key": "b", "source": "clip.wav", "target": "caf\xe9"}\n'
    )
    with pytest.raises(DataError, match=r"m\.jsonl:2: not valid UTF-8 \(byte 0xe9 at column 50\)"):
        read_manifest(path)


def test_missing_manifest_is_named(tmp_path):
    with pytest.raises(DataError, match="manifest not found: .*nope.jsonl"):
        prepare_data_dir(tmp_path / "nope.jsonl", tmp_path / "d")


def bad_audio(tmp_path: Path, kind: str) -> str:
    path = tmp_path / f"{kind}.wav"
    if kind == "missing":
        return str(path)
    if kind == "random_bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4000))
    elif kind == "truncated_header":
        path.write_bytes(write_wav(tmp_path / "full.wav", 16000).read_bytes()[:30])
    elif kind == "zero_length":
        write_wav(path, 0)
    elif kind == "under_one_frame":
        write_wav(path, 399)  # 24.9 ms at 16 kHz
    elif kind == "directory":
        path.mkdir()
    return str(path)


@pytest.mark.parametrize(
    "kind, reason",
    [
        ("missing", "audio file not found"),
        ("random_bytes", "unreadable audio file .*Format not recognised"),
        ("truncated_header", "unreadable audio file"),
        ("zero_length", r"empty audio \(0 samples\)"),
        ("under_one_frame", r"audio shorter than one 25 ms frame \(399 samples at 16000 Hz\)"),
        ("directory", "audio path is not a file"),
    ],
)
def test_bad_audio_stops_or_is_dropped_with_a_reason(tmp_path, clip, kind, reason):
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"key": "good", "source": str(clip), "target": "fine"},
            {"key": "bad_1", "source": bad_audio(tmp_path, kind), "target": "x"},
            {"key": "bad_2", "source": f"{kind}.wav", "target": "y"},
        ],
    )
    with pytest.raises(
        DataError,
        match=rf"m\.jsonl: 2 line\(s\) with unusable audio or captions:\n"
        rf"  .*m\.jsonl:2: key 'bad_1': {reason}.*\n  .*m\.jsonl:3: key 'bad_2'",
    ):
        prepare_data_dir(manifest, tmp_path / "d")
    assert not (tmp_path / "d").exists()
    report = prepare_data_dir(manifest, tmp_path / "d", drop_invalid=True)
    assert report.num_utterances == 1 and [d.key for d in report.dropped] == ["bad_1", "bad_2"]
    dropped = (tmp_path / "d" / "dropped.tsv").read_text().splitlines()
    assert dropped[0] == "line\tkey\tsource\treason" and dropped[1].startswith("2\tbad_1\t")
    assert len(dropped) == 3 and all(len(row.split("\t")) == 4 for row in dropped)
    assert rows_of(tmp_path / "d" / "text") == [["good", "fine"]]
    validate_data_dir(tmp_path / "d")


@pytest.mark.parametrize(
    "caption, reason",
    [("", "empty caption"), (" \t\n ", "empty caption"), ("a\x00b", "caption contains control character U\\+0000")],
)
def test_bad_captions_stop_or_are_dropped(tmp_path, clip, caption, reason):
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"key": "good", "source": str(clip), "target": "fine"},
            {"key": "bad", "source": str(clip), "target": caption},
        ],
    )
    with pytest.raises(DataError, match=rf"m\.jsonl:2: key 'bad': {reason}"):
        prepare_data_dir(manifest, tmp_path / "d")
    report = prepare_data_dir(manifest, tmp_path / "d", drop_invalid=True)
    assert [(d.line, d.key, d.reason) for d in report.dropped] == [(2, "bad", report.dropped[0].reason)]
    assert rows_of(tmp_path / "d" / "text") == [["good", "fine"]]


# the exact rule: at least 400 samples once resampled to 16 kHz (1100 samples at 44.1 kHz give ceil(399.1) = 400)
@pytest.mark.parametrize("rate, shortest", [(16000, 400), (44100, 1100), (8000, 200)])
def test_one_25ms_frame_at_the_files_rate_is_the_shortest_clip(tmp_path, rate, shortest):
    assert probe_audio(write_wav(tmp_path / "ok.wav", shortest, rate)).num_samples == shortest
    with pytest.raises(AudioError, match="shorter than one 25 ms frame"):
        probe_audio(write_wav(tmp_path / "short.wav", shortest - 1, rate))


def test_corrupt_data_behind_a_valid_header_and_silence_need_check_audio(tmp_path, clip):
    flac = write_wav(tmp_path / "ok.flac", 48000, subtype="PCM_16")
    raw = flac.read_bytes()
    (tmp_path / "cut.flac").write_bytes(raw[: len(raw) // 2])
    write_wav(tmp_path / "silent.wav", 16000, silent=True)
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"key": "cut", "source": "cut.flac", "target": "x"},
            {"key": "good", "source": str(clip), "target": "fine"},
            {"key": "silent", "source": "silent.wav", "target": "y"},
        ],
    )
    assert prepare_data_dir(manifest, tmp_path / "headers").num_utterances == 3
    with pytest.raises(
        DataError,
        match=r"m\.jsonl:1: key 'cut': corrupt audio data in .*cut\.flac.*\n"
        r"  .*m\.jsonl:3: key 'silent': digital silence",
    ):
        prepare_data_dir(manifest, tmp_path / "decoded", decode_audio=True)
    with pytest.raises(DataError, match=r"wav\.scp:1: key 'cut': corrupt audio data"):
        validate_data_dir(tmp_path / "headers", audio="decode")


def test_a_folder_given_as_manifest_says_so(tmp_path, clip):
    write_jsonl(tmp_path / "train.jsonl", [{"key": "a", "source": str(clip), "target": "x"}])
    with pytest.raises(DataError, match=rf"{tmp_path} is a folder, not a manifest: .*\(it holds train\.jsonl\)"):
        prepare_data_dir(tmp_path, tmp_path / "d")


def write_truncated_wav(path: Path) -> Path:
    """A WAV cut in half whose header still promises all 16000 samples (libsndfile reports the 8000 present)."""
    raw = write_wav(path.with_name("whole.wav"), 16000).read_bytes()
    path.write_bytes(raw[: 44 + 16000])
    return path


def test_truncated_wav_header_promising_more_frames_needs_check_audio(tmp_path, clip):
    cut = write_truncated_wav(tmp_path / "cut.wav")
    assert probe_audio(cut).num_samples == 8000  # libsndfile takes it as a shorter clip
    with pytest.raises(AudioError, match=r"truncated WAV .*cut\.wav: its header promises 16000 samples, .* 8000"):
        probe_audio(cut, decode=True)


def write_float_wav(path: Path, bad: float) -> Path:
    wave = 0.1 * np.sin(np.arange(16000) / 7.0)
    wave[[10, 20, 30]] = bad
    soundfile.write(path, wave, 16000, subtype="FLOAT")
    return path


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_found_by_check_audio_and_never_called_silence(tmp_path, bad):
    path = write_float_wav(tmp_path / "bad.wav", bad)
    with pytest.raises(AudioError, match=r"^3 NaN or infinite samples in .*bad\.wav"):
        probe_audio(path, decode=True)
    wave = np.full(16000, np.nan)
    soundfile.write(tmp_path / "all_nan.wav", wave, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="16000 NaN or infinite samples"):  # not "digital silence"
        probe_audio(tmp_path / "all_nan.wav", decode=True)


def test_prepare_and_validate_data_with_check_audio_name_nan_and_truncated_files_by_key(tmp_path, clip):
    """Through the CLI, where the faults were found."""
    write_float_wav(tmp_path / "nan.wav", np.nan)
    write_truncated_wav(tmp_path / "cut.wav")
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"key": "cut", "source": "cut.wav", "target": "x"},
            {"key": "good", "source": str(clip), "target": "fine"},
            {"key": "nan", "source": "nan.wav", "target": "y"},
        ],
    )

    def cli(*args):
        cmd = [sys.executable, "-m", "espnet_slam_aac.cli", *map(str, args)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300)

    done = cli("prepare-data", manifest, tmp_path / "d", "--check_audio")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert re.search(r"m\.jsonl:1: key 'cut': truncated WAV .*cut\.wav: its header promises 16000", done.stderr)
    assert re.search(r"m\.jsonl:3: key 'nan': 3 NaN or infinite samples in .*nan\.wav", done.stderr)
    assert not (tmp_path / "d").exists()
    assert cli("prepare-data", manifest, tmp_path / "d").returncode == 0  # headers only: not looked at
    done = cli("validate-data", tmp_path / "d", "--audio", "decode")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "key 'nan': 3 NaN or infinite samples" in done.stdout + done.stderr
    assert "key 'cut': truncated WAV" in done.stdout + done.stderr


# ---------------------------------------------------------------------------------- atomic output
def test_a_failed_run_leaves_the_previous_data_dir_untouched_and_no_temp_files(tmp_path, clip, monkeypatch):
    good = write_jsonl(tmp_path / "good.jsonl", [{"key": "a", "source": str(clip), "target": "old"}])
    prepare_data_dir(good, tmp_path / "d")
    before = {p.name: p.read_bytes() for p in (tmp_path / "d").iterdir()}
    newer = write_jsonl(
        tmp_path / "new.jsonl",
        [{"key": "a", "source": str(clip), "target": "new"}, {"key": "b", "source": str(clip), "target": "new"}],
    )
    calls = []

    def failing_fsync(fd):  # the disk fills up while the third file is written
        calls.append(fd)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(datadir.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space left"):
        prepare_data_dir(newer, tmp_path / "d")
    assert {p.name: p.read_bytes() for p in (tmp_path / "d").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.wav", "d", "good.jsonl", "new.jsonl"]
    monkeypatch.undo()
    prepare_data_dir(newer, tmp_path / "d")
    assert rows_of(tmp_path / "d" / "text") == [["a", "new"], ["b", "new"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.wav", "d", "good.jsonl", "new.jsonl"]


def test_the_previous_data_dir_is_put_back_if_the_final_rename_fails(tmp_path, clip, monkeypatch):
    manifest = write_jsonl(tmp_path / "m.jsonl", [{"key": "a", "source": str(clip), "target": "x"}])
    prepare_data_dir(manifest, tmp_path / "d")
    before = {p.name: p.read_bytes() for p in (tmp_path / "d").iterdir()}
    real_rename, calls = os.rename, []

    def rename(src, dst):
        calls.append(src)
        if len(calls) == 2:  # old moved aside, new one cannot move in
            raise OSError(5, "Input/output error")
        real_rename(src, dst)

    monkeypatch.setattr(datadir.os, "rename", rename)
    with pytest.raises(OSError, match="Input/output error"):
        prepare_data_dir(manifest, tmp_path / "d")
    assert {p.name: p.read_bytes() for p in (tmp_path / "d").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.wav", "d", "m.jsonl"]


def test_an_existing_folder_that_is_not_a_data_dir_is_never_replaced(tmp_path, clip):
    manifest = write_jsonl(tmp_path / "m.jsonl", [{"key": "a", "source": str(clip), "target": "x"}])
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="refusing to replace .*precious: it exists and is not a data dir"):
        prepare_data_dir(manifest, tmp_path / "precious")
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    prepare_data_dir(manifest, tmp_path / "empty")
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == FILES


# ------------------------------------------------------------------------------------------ checker
def _edit(path: Path, fn) -> None:
    path.write_text(fn(path.read_text()))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: (d / "utt2spk").unlink(), r"utt2spk: missing \(required\)"),
        (
            lambda d: _edit(d / "text", lambda s: "\n".join(reversed(s.splitlines())) + "\n"),
            r"text:2: not sorted \('b_1' after 'c_1'\); sort it in byte order \(LC_ALL=C sort\)",
        ),
        (
            lambda d: _edit(d / "text", lambda s: s.replace("b_1 second clip", "b_1")),
            r"text:2: key 'b_1': no value after the key \(empty text\)",
        ),
        (
            lambda d: _edit(d / "text", lambda s: s.replace("c_1 third clip\n", "")),
            r"text: lacks 1 utterance\(s\) of wav.scp \(first: 'c_1'\)",
        ),
        (lambda d: _edit(d / "utt2spk", lambda s: s + "d_1 d_1\n"), r"utt2spk:4: key 'd_1' is not in wav.scp"),
        (
            lambda d: _edit(d / "utt2num_samples", lambda s: s.replace("a_1 16000", "a_1 16001")),
            r"wav.scp:1: key 'a_1': utt2num_samples says 16001 but the file has 16000 samples",
        ),
        (
            lambda d: _edit(d / "utt2num_samples", lambda s: s.replace("a_1 16000", "a_1 -3")),
            r"utt2num_samples:1: key 'a_1': '-3' is not a positive integer",
        ),
        (lambda d: (d / "text_spk2").rename(d / "text_spk3"), r"text_spk1, text_spk3 are not numbered 1..2"),
        (lambda d: _edit(d / "spk2utt", lambda s: s.replace("b_1 b_1", "b_1 a_1")), r"spk2utt: does not match utt2spk"),
        (
            lambda d: _edit(d / "utt2spk", lambda s: s.replace("b_1 b_1", "b_1 zz")),
            r"utt2spk:3: key 'c_1': speaker 'c_1' sorts before 'zz'",
        ),
        (lambda d: _edit(d / "text", lambda s: s + "c_1 again\n"), r"text:4: duplicate key 'c_1' \(also on line 3\)"),
        (lambda d: (d / "text").write_bytes(b"a_1 caf\xe9\nb_1 x\nc_1 y\n"), r"text:1: not valid UTF-8 \(byte 0xe9"),
        (
            lambda d: _edit(d / "text", lambda s: s.replace("a_1 ", "a\u00e91 ")),
            r"text:1: key 'a\u00e91' contains U\+00E9",
        ),
        (lambda d: (d.parent / "c.wav").unlink(), r"wav.scp:3: key 'c_1': audio file not found: .*c.wav"),
    ],
)
def test_checker_names_file_line_and_key_of_each_problem(tmp_path, edit, message):
    rows = []
    for name, caption in [("a", "first clip"), ("b", "second clip"), ("c", "third clip")]:
        write_wav(tmp_path / f"{name}.wav", 16000)
        rows += [
            {"key": f"{name}_1", "source": f"{name}.wav", "target": caption},
            {"key": f"{name}_2", "source": f"{name}.wav", "target": caption + " again"},
        ]
    prepare_data_dir(write_jsonl(tmp_path / "m.jsonl", rows), tmp_path / "d", references=True)
    assert validate_data_dir(tmp_path / "d").num_utterances == 3
    edit(tmp_path / "d")
    with pytest.raises(DataError, match=message):
        validate_data_dir(tmp_path / "d")


def test_checker_audio_levels(tmp_path, clip):
    manifest = write_jsonl(tmp_path / "m.jsonl", [{"key": "a", "source": str(clip), "target": "x"}])
    prepare_data_dir(manifest, tmp_path / "d")
    clip.write_bytes(b"not audio")
    validate_data_dir(tmp_path / "d", audio="exists")
    with pytest.raises(DataError, match="unreadable audio file"):
        validate_data_dir(tmp_path / "d")
    clip.unlink()
    validate_data_dir(tmp_path / "d", audio="none")
    with pytest.raises(DataError, match="audio file not found"):
        validate_data_dir(tmp_path / "d", audio="exists")
    with pytest.raises(DataError, match="not a folder"):
        validate_data_dir(tmp_path / "nothing")


def test_read_wav_scp_names_the_line_and_refuses_missing_files(tmp_path):
    from espnet_slam_aac.data.datadir import read_wav_scp

    with pytest.raises(DataError, match="no such file"):
        read_wav_scp(tmp_path / "wav.scp")
    (tmp_path / "wav.scp").write_text("a /x/a.wav\nb /x/b.wav\na /x/c.wav\n")
    with pytest.raises(DataError, match=r"wav.scp:3: key 'a' repeats line 1"):
        read_wav_scp(tmp_path / "wav.scp")
