"""bin/caption.py: users caption their own files, folders and wav.scp lists; bad files are reported, not fatal."""

import json
import shutil
from pathlib import Path

import pytest

from espnet_slam_aac import cli
from espnet_slam_aac.bin import caption
from espnet_slam_aac.data.audio import load_audio
from espnet_slam_aac.inference.speech2caption import Speech2Caption
from espnet_slam_aac.testing.tiny_model import write_tiny_model

FAST = ["--max_new_tokens", "5", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def packed(tmp_path_factory, tiny_eat, tiny_llm) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("packed"), tiny_eat, tiny_llm)


def run(argv, capsys):
    code = 0
    try:
        caption.main(argv)
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def test_files_folders_and_wav_scp_are_captioned_in_order_as_tsv(tmp_path, packed, audio_files, capsys):
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(audio_files["3s_44k_stereo"], folder / "sub" / "b.wav")
    shutil.copy(audio_files["10s_32k"], folder / "a.wav")
    (folder / "notes.txt").write_text("not audio")
    scp = tmp_path / "wav.scp"
    scp.write_text(f"k1 {audio_files['30s_16k']}\n")
    code, out, err = run(["--model", str(packed), str(audio_files["10s_16k"]), str(folder), str(scp), *FAST], capsys)
    assert code == 0, err
    rows = [line.split("\t") for line in out.splitlines()]
    assert [r[0] for r in rows] == [
        str(audio_files["10s_16k"]),
        str(folder / "a.wav"),
        str(folder / "sub" / "b.wav"),
        "k1",
    ]
    expected = Speech2Caption.from_pretrained(packed, max_new_tokens=5)(*load_audio(folder / "a.wav")).caption
    assert rows[1][1] == " ".join(expected.split())


def test_a_bad_file_is_reported_with_its_reason_and_the_others_go_on(tmp_path, packed, audio_files, capsys):
    (tmp_path / "broken.wav").write_bytes(b"not audio at all")
    (tmp_path / "empty").mkdir()
    paths = [
        str(audio_files["10s_16k"]),
        str(tmp_path / "broken.wav"),
        str(tmp_path / "missing.wav"),
        str(tmp_path / "empty"),
        str(audio_files["3s_44k_stereo"]),
    ]
    code, out, err = run(["--model", str(packed), "--batch_size", "2", *paths, *FAST], capsys)
    assert code == 1
    assert [line.split("\t")[0] for line in out.splitlines()] == [paths[0], paths[4]]
    assert "cannot read audio file" in err and "broken.wav" in err
    assert "not found" in err and "missing.wav" in err
    assert "no audio files" in err
    assert "3 of 5 input(s) failed" in err


def test_out_and_candidates_files_are_written_whole(tmp_path, packed, audio_files, capsys):
    out = tmp_path / "captions.tsv"
    cands = tmp_path / "cands.jsonl"
    code, stdout, _ = run(
        [
            "--model",
            str(packed),
            "--out",
            str(out),
            "--candidates",
            str(cands),
            "--beams",
            "2,3",
            str(audio_files["10s_16k"]),
            *FAST,
        ],
        capsys,
    )
    assert code == 0 and stdout == ""
    assert len(out.read_text().splitlines()) == 1
    record = json.loads(cands.read_text())
    assert [c["beam_size"] for c in record["candidates"]] == [2, 3]
    assert not list(tmp_path.glob(".*.tmp"))


def test_refine_decodes_beams_2_to_8_and_lets_the_clap_choose(tmp_path, packed, tiny_claps, audio_files, capsys):
    cands = tmp_path / "cands.jsonl"
    code, out, err = run(
        [
            "--model",
            str(packed),
            "--refine",
            str(tiny_claps["hf"]),
            "--candidates",
            str(cands),
            str(audio_files["10s_16k"]),
            *FAST,
        ],
        capsys,
    )
    assert code == 0, err
    record = json.loads(cands.read_text())
    assert [c["beam_size"] for c in record["candidates"]] == [2, 3, 4, 5, 6, 7, 8]
    assert len(record["similarities"]) == 7
    assert out.split("\t")[1].strip() == " ".join(record["candidates"][record["best"]]["text"].split())


def test_without_refine_only_the_caption_beam_is_decoded(tmp_path, packed, tiny_claps, audio_files, capsys):
    import shutil

    folder = tmp_path / "pack"
    shutil.copytree(packed, folder)
    shutil.copytree(tiny_claps["hf"], folder / "sources" / "clap")
    (folder / "decode.yaml").write_text("beam_sizes: 2..8\nmax_new_tokens: 4\n")
    (folder / "refine.yaml").write_text("clap: sources/clap\n")
    for extra, beams in (([], [4]), (["--refine"], [2, 3, 4, 5, 6, 7, 8]), (["--beams", "2,3"], [2, 3])):
        cands = tmp_path / "c.jsonl"
        code, _, err = run(
            ["--model", str(folder), "--candidates", str(cands), str(audio_files["10s_16k"]), "--quiet", *extra], capsys
        )
        assert code == 0, err
        assert [c["beam_size"] for c in json.loads(cands.read_text())["candidates"]] == beams


def test_the_cli_sub_commands_reach_the_tools(packed, audio_files, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["caption", "--help"])
    assert exit_.value.code == 0
    assert "Caption your own audio files" in capsys.readouterr().out
    cli.main(["caption", "--model", str(packed), str(audio_files["10s_16k"]), *FAST])
    assert capsys.readouterr().out.count("\t") == 1
    with pytest.raises(SystemExit):
        cli.main(["decode", "--help"])
    assert "candidates.jsonl" in capsys.readouterr().out


def test_a_model_that_cannot_load_is_one_clear_error(tmp_path, audio_files, capsys):
    code, out, err = run(["--model", str(tmp_path / "nope"), str(audio_files["10s_16k"]), *FAST], capsys)
    assert code == 1 and out == ""
    assert "neither a folder" in err
