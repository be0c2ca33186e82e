"""inference/corpus.py, corpus_files.py, loader.py and bin/caption_corpus.py: a corpus listed lazily, captioned in
windows by loader workers, written per job so that a rerun resumes, merged in input order."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile

from espnet_slam_aac.bin import caption_corpus
from espnet_slam_aac.data.audio import load_audio
from espnet_slam_aac.errors import ConfigError, DataError
from espnet_slam_aac.inference import corpus, corpus_files
from espnet_slam_aac.inference.corpus import ClipRef, Problem, iter_captions, job_windows, list_inputs
from espnet_slam_aac.inference.speech2caption import Speech2Caption
from espnet_slam_aac.testing import synth

MODEL = Path(__file__).resolve().parents[1] / "fixtures" / "premove_packed" / "model"
DECODING = {"beam_sizes": "2", "max_new_tokens": 3}
FAST = ["--model", str(MODEL), "--beams", "2", "--max_new_tokens", "3", "--device", "cpu", "--quiet"]
BAD = {"unreadable.wav": "cannot read", "empty.wav": "empty", "short.wav": "too short", "nan.wav": "NaN"}


def write_clips(folder: Path, n: int, seed: int = 0) -> list:
    """``n`` synthesized clips of 0.5-1 s (16 and 44.1 kHz) in two subfolders, and the four kinds of bad file."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        rate = 44100 if i % 3 == 0 else 16000
        wave, _ = synth.synthesize_clip(rng, rate, float(rng.uniform(0.5, 1.0)))
        path = folder / f"part{i % 2}" / f"clip{i:03d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, wave, rate, subtype="PCM_16")
        paths.append(path)
    (folder / "unreadable.wav").write_bytes(b"this is not audio")
    soundfile.write(folder / "empty.wav", np.zeros(0, np.float32), 16000)
    soundfile.write(folder / "short.wav", np.full(100, 0.1, np.float32), 16000)
    soundfile.write(folder / "nan.wav", np.full(8000, np.nan, np.float32), 16000, subtype="FLOAT")
    (folder / "notes.txt").write_text("not audio, not listed")
    return paths


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    write_clips(folder, 12)
    return folder


@pytest.fixture(scope="module")
def s2c() -> Speech2Caption:
    return Speech2Caption.from_pretrained(MODEL, batch_size=4, **DECODING)


# ---------------------------------------------------------------- listing


def test_a_folder_is_walked_lazily_recursively_in_name_order(tmp_path, monkeypatch):
    for name in ("b.wav", "a/x.flac", "a/y.txt", "A.WAV", "z/deep/w.ogg", "z/v.mp3"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "z" / "loop").symlink_to(tmp_path / "z")  # a symlink loop is walked once
    scanned = []
    real_scandir = os.scandir

    def scandir(path):
        scanned.append(os.path.relpath(path, tmp_path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    entries = list_inputs(tmp_path)
    first = next(entries)
    assert first == ClipRef(0, "A.WAV", str(tmp_path / "A.WAV"))
    assert scanned == ["."]  # nothing below the top folder has been read for the first clip
    rest = list(entries)
    assert [e.key for e in rest] == ["a/x.flac", "b.wav", "z/deep/w.ogg", "z/v.mp3"]
    assert [e.index for e in rest] == [1, 2, 3, 4]
    assert scanned.count("z") == 1


def test_wav_scp_and_jsonl_lines_that_name_no_clip_are_problems_not_errors(tmp_path):
    scp = tmp_path / "wav.scp"
    scp.write_text("k1 /a/1.wav\nk2\n\nk3 sox x.wav - |\nk1 /a/other.wav\nk4 rel/4.wav\n")
    entries = list(list_inputs(scp))
    assert [type(e).__name__ for e in entries] == ["ClipRef", "Problem", "Problem", "Problem", "ClipRef"]
    assert entries[-1] == ClipRef(4, "k4", "rel/4.wav")
    assert "line 2: expected 'KEY PATH'" in entries[1].reason and "piped" in entries[2].reason
    assert "line 5: key repeats line 1" in entries[3].reason
    manifest = tmp_path / "sub" / "m.jsonl"
    manifest.parent.mkdir()
    lines = ['{"key": "a", "source": "x.wav"}', "{not json", '{"key": "b"}', '{"source": "/abs/y.wav"}']
    manifest.write_text("\n".join(lines + ['{"key": "a", "source": "z.wav"}']) + "\n")
    entries = list(list_inputs(manifest))
    assert entries[0] == ClipRef(0, "a", str(manifest.parent / "x.wav"))  # relative to the jsonl's folder
    assert entries[3] == ClipRef(3, "/abs/y.wav", "/abs/y.wav")  # no key: the source is the key
    assert [type(e) for e in entries[1:3]] == [Problem, Problem] and "not JSON" in entries[1].reason
    assert "key repeats line 1" in entries[4].reason
    with pytest.raises(DataError, match="no such folder or file"):
        next(list_inputs(tmp_path / "missing"))


def test_the_jobs_windows_cover_every_clip_once(tmp_path):
    entries = [ClipRef(i, f"k{i}", f"{i}.wav") if i % 7 else Problem(i, f"k{i}", "", "bad") for i in range(50)]
    jobs = [list(job_windows(entries, 8, job, 3)) for job in (1, 2, 3)]
    assert [len(w) for w in jobs[0]] == [6, 7, 1]  # windows 0, 3, 6: positions 0-7, 24-31, 48-49, less problems
    keys = [c.key for windows in jobs for w in windows for c in w]
    assert sorted(keys) == sorted(e.key for e in entries if isinstance(e, ClipRef))
    with pytest.raises(DataError, match="jobs are numbered 1 to 3"):
        list(job_windows(entries, 8, 4, 3))


# ---------------------------------------------------------------- results files


def test_a_results_file_resumes_after_a_torn_line_and_has_one_writer(tmp_path):
    path = tmp_path / "results" / "1-of-2.jsonl"
    writer = corpus_files.ResultWriter(path)
    writer.write([{"key": "a", "caption": "x"}, {"key": "b", "error": "bad"}])
    with pytest.raises(DataError, match="being written by another process"):
        corpus_files.ResultWriter(path)
    writer.close()
    with open(path, "ab") as f:  # a job killed in the middle of a line
        f.write(b'{"key": "c", "capt')
    (tmp_path / "results" / "1-of-1.jsonl").write_bytes(b'{"key": "d"}\n{"key": "e", "torn')  # other job files
    assert corpus_files.done_keys(tmp_path) == {"a", "b", "d"}
    writer = corpus_files.ResultWriter(path)  # truncates its own torn line, then appends after it
    writer.write([{"key": "c", "caption": "y"}])
    writer.close()
    assert [json.loads(line)["key"] for line in path.read_text().splitlines()] == ["a", "b", "c"]
    path.write_text('{"key": "a"}\nnot json\n{"key": "b"}\n')
    with pytest.raises(DataError, match=r"1-of-2.jsonl:2: not a caption record"):
        corpus_files.done_keys(tmp_path)


def test_merge_is_in_input_order_each_key_once_and_refuses_an_unfinished_run(tmp_path):
    entries = [ClipRef(0, "k0", "0.wav"), Problem(1, "k1", "", "bad line"), ClipRef(2, "k2", "2.wav")]
    entries.append(ClipRef(3, "k3", "3.wav"))
    results = tmp_path / "results"
    results.mkdir()
    record = {"key": "k2", "path": "2.wav", "caption": "two", "candidates": []}
    (results / "1-of-2.jsonl").write_text(
        json.dumps(record) + "\n" + json.dumps({"key": "gone", "caption": "-"}) + "\n"
    )
    (results / "2-of-2.jsonl").write_text(json.dumps({"key": "k3", "path": "3.wav", "error": "empty"}) + "\n")
    (results / "1-of-1.jsonl").write_text(json.dumps({"key": "k2", "caption": "again"}) + "\n")  # an older run's
    with pytest.raises(DataError, match=r"1 of 4 clips have no caption yet \(e.g. 'k0'\)"):
        corpus_files.merge(tmp_path, iter(entries))
    assert not (tmp_path / "captions.jsonl").exists() and not list(tmp_path.glob(".*tmp"))
    (results / "2-of-2.jsonl").write_text(
        json.dumps({"key": "k0", "path": "0.wav", "caption": "zero\tcat"})
        + "\n"
        + json.dumps({"key": "k3", "path": "3.wav", "error": "audio file 3.wav is empty"})
        + "\n"
    )
    summary = corpus_files.merge(tmp_path, iter(entries))
    assert [json.loads(x)["key"] for x in (tmp_path / "captions.jsonl").read_text().splitlines()] == ["k0", "k2"]
    # a key in two results files (runs with different --nj): the first file in name order is taken
    assert json.loads((tmp_path / "captions.jsonl").read_text().splitlines()[1])["caption"] == "again"
    assert (tmp_path / "captions.tsv").read_text() == "k0\tzero cat\nk2\tagain\n"
    assert (tmp_path / "failed.tsv").read_text().splitlines() == [
        "key\tpath\treason",
        "k1\t\tbad line",
        "k3\t3.wav\taudio file 3.wav is empty",
    ]
    assert summary["captioned"] == 2 and summary["failed"] == 2 and summary["results_not_in_input"] == 1
    assert summary["failed_by_kind"] == {"bad input": 1, "empty": 1}


def test_a_rerun_with_other_settings_is_refused(tmp_path):
    corpus_files.check_setup(tmp_path, {"model": "m", "decoding": {"beam_sizes": "2"}})
    corpus_files.check_setup(tmp_path, {"model": "m", "decoding": {"beam_sizes": "2"}})
    with pytest.raises(ConfigError, match=r"other settings \(decoding: .*'2'.*'4'"):
        corpus_files.check_setup(tmp_path, {"model": "m", "decoding": {"beam_sizes": "4"}})


def test_progress_line_says_clips_per_second_and_time_left():
    jobs = [{"captioned": 30, "failed": 2, "todo": 100}, {"captioned": 8, "failed": 0, "todo": None}]
    since = __import__("time").time() - 20
    assert corpus_files.progress_line(jobs, since, 2).startswith("40 clips (2 failed) in 20 s, 2.0")
    jobs[1]["todo"] = 60
    line = corpus_files.progress_line(jobs, since, 2)
    assert line.startswith("40 / 160 clips (2 failed) in 20 s, 2.0") and line.endswith("about 60 s left")


# ---------------------------------------------------------------- captioning


@pytest.mark.parametrize("num_workers", [0, 2])
def test_iter_captions_gives_each_clip_once_as_speech2caption_would(s2c, clips, num_workers):
    records = list(iter_captions(s2c, clips, num_workers=num_workers, window=6))
    by_key = {r["key"]: r for r in records}
    assert len(records) == len(by_key) == 16
    for name, words in BAD.items():
        assert words in by_key[name]["error"] and by_key[name]["path"] == str(clips / name)
    good = [r for r in records if "error" not in r]
    assert len(good) == 12
    for record in good[:4]:
        alone = s2c(*load_audio(record["path"]))  # file by file: a batch of one
        assert record["caption"] == alone.caption
        assert [c["text"] for c in record["candidates"]] == [c.text for c in alone.candidates]
        assert record["candidates"][0]["logprob"] == pytest.approx(alone.candidates[0].logprob, abs=1e-4)
        assert record["duration"] == pytest.approx(soundfile.info(record["path"]).duration, abs=1e-3)


def test_refined_records_carry_each_candidates_clap_similarity(clips, tiny_claps):
    refined = Speech2Caption.from_pretrained(MODEL, beam_sizes="2,3", max_new_tokens=3, refine=str(tiny_claps["hf"]))
    paths = sorted(str(p) for p in clips.rglob("clip00[0-3].wav"))
    records = {r["key"]: r for r in iter_captions(refined, paths, num_workers=1)}
    for path in paths:
        alone = refined(*load_audio(path))  # the CLAP hears the original audio, at its own rate
        record = records[path]
        assert [c["beam_size"] for c in record["candidates"]] == [2, 3]
        assert [c["similarity"] for c in record["candidates"]] == pytest.approx(alone.similarities, abs=1e-4)
        assert record["caption"] == record["candidates"][record["best"]]["text"]


def test_iter_captions_takes_paths_or_key_path_pairs(s2c, clips):
    paths = sorted(str(p) for p in clips.rglob("clip00[0-2].wav"))
    assert sorted(r["key"] for r in iter_captions(s2c, paths, num_workers=0)) == paths  # batches: by duration
    pairs = [("x", paths[0]), ("y", str(clips / "empty.wav"))]
    records = {r["key"]: r for r in iter_captions(s2c, pairs, num_workers=0)}
    assert records["x"]["caption"] and "empty" in records["y"]["error"]


def test_a_job_writes_its_windows_and_a_rerun_skips_what_is_written(s2c, clips, tmp_path):
    out = tmp_path / "out"
    counts = corpus.run_job(s2c, clips, out, job=1, nj=2, window=4, num_workers=0)
    job1 = (out / "results" / "1-of-2.jsonl").read_text()
    mine = {c.key for w in job_windows(list_inputs(clips), 4, 1, 2) for c in w}
    assert {json.loads(x)["key"] for x in job1.splitlines()} == mine
    assert counts["captioned"] + counts["failed"] == len(mine) and counts["todo"] == len(mine)
    assert json.loads((out / "progress" / "1-of-2.json").read_text())["captioned"] == counts["captioned"]
    again = corpus.run_job(s2c, clips, out, job=1, nj=2, window=4, num_workers=0)
    assert again["captioned"] + again["failed"] == 0 and again["done_before"] == len(mine)
    assert (out / "results" / "1-of-2.jsonl").read_text() == job1


def test_an_empty_caption_is_a_failure_not_a_caption():
    from espnet_slam_aac.inference.loader import Loaded
    from espnet_slam_aac.inference.speech2caption import Candidate, CaptionResult

    clip = Loaded(ClipRef(0, "k", "k.wav"), np.zeros(16000, np.float32), 1.0)
    record = corpus.result_record(clip, CaptionResult(" ", [Candidate(" ", 4, -1.0, 1)], 0))
    assert record == {"key": "k", "path": "k.wav", "error": "the caption is empty: a broken model or tokenizer?"}
    assert corpus_files.failure_kind(record["error"]) == "empty caption"
    record = corpus.result_record(clip, CaptionResult("a dog", [Candidate("a dog", 4, -1.0, 3)], 0, [0.5]))
    assert record["caption"] == "a dog" and record["candidates"][0]["similarity"] == 0.5


# ---------------------------------------------------------------- the tool in one process


def run_tool(argv, capsys):
    code = 0
    try:
        caption_corpus.main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def test_the_tool_captions_merges_resumes_and_says_what_failed(clips, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run_tool(["--audio", clips, "--out", out, "--num_workers", "1", *FAST], capsys)
    assert code == 1 and stdout == ""
    assert "captioned 12 of 16 inputs; 4 failed (empty 1, non-finite 1, too short 1, unreadable 1)" in err
    assert "clips/s" in err
    lines = (out / "captions.jsonl").read_text().splitlines()
    keys = [json.loads(x)["key"] for x in lines]
    assert keys == [e.key for e in list_inputs(clips) if e.key not in BAD]  # input order
    failed = (out / "failed.tsv").read_text().splitlines()[1:]
    assert sorted(row.split("\t")[0] for row in failed) == sorted(BAD)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["inputs"] == 16 and summary["captioned"] == 12 and summary["this_run"]["clips"] == 16
    written = (out / "results" / "1-of-1.jsonl").read_text()

    # a rerun captions nothing again and writes the same files; other settings are refused
    code, _, err = run_tool(["--audio", clips, "--out", out, *FAST], capsys)
    assert code == 1 and (out / "results" / "1-of-1.jsonl").read_text() == written
    assert (out / "captions.jsonl").read_text().splitlines() == lines
    code, _, err = run_tool(["--audio", clips, "--out", out, *FAST, "--max_new_tokens", "4"], capsys)
    assert code == 1 and "error:" in err and "other settings" in err and "max_new_tokens" in err


def test_the_tool_refuses_bad_options_and_an_output_over_its_input(clips, tmp_path, capsys):
    code, _, err = run_tool(["--out", tmp_path / "o", *FAST], capsys)
    assert code == 1 and "error: --audio is required" in err
    code, _, err = run_tool(["--audio", clips, "--out", tmp_path / "o", "--job", "3", "--nj", "2", *FAST], capsys)
    assert code == 1 and "error: --job 3: jobs are numbered 1 to --nj 2" in err
    manifest = tmp_path / "in" / "captions.jsonl"
    manifest.parent.mkdir()
    shutil.copy(clips / "part0" / "clip000.wav", tmp_path / "in" / "a.wav")
    manifest.write_text('{"key": "a", "source": "a.wav"}\n')
    code, _, err = run_tool(["--audio", manifest, "--out", manifest.parent, *FAST], capsys)
    assert code == 1 and "error:" in err and "also an input" in err
    code, _, err = run_tool(["--merge", "--out", tmp_path / "nothing"], capsys)
    assert code == 1 and "no setup.json" in err
