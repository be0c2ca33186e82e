"""bin/aac_inference.py: n-best decoding of a wav.scp into ESPnet's layout, split jobs and their merge."""

import json
from pathlib import Path

import pytest

from espnet_slam_aac.bin import aac_inference
from espnet_slam_aac.data.audio import load_audio
from espnet_slam_aac.inference.decoding import DecodingOptions
from espnet_slam_aac.inference.speech2caption import Speech2Caption
from espnet_slam_aac.testing.tiny_model import write_tiny_model

OPTIONS = ["--beam_sizes", "2..4", "--max_new_tokens", "6", "--batch_size", "3"]


@pytest.fixture(scope="module")
def packed(tmp_path_factory, tiny_eat, tiny_llm) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("packed"), tiny_eat, tiny_llm)


@pytest.fixture(scope="module")
def wav_scp(tmp_path_factory, audio_files) -> Path:
    path = tmp_path_factory.mktemp("data") / "wav.scp"
    names = ["10s_16k", "3s_44k_stereo", "10s_32k", "30s_16k"]
    path.write_text("".join(f"clip_{n} {audio_files[n]}\n" for n in sorted(names)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def decoded(tmp_path_factory, packed, wav_scp) -> Path:
    out = tmp_path_factory.mktemp("decode") / "test"
    aac_inference.main(["--model", str(packed), "--wav_scp", str(wav_scp), "--output_dir", str(out), *OPTIONS])
    return out


def read(path: Path):
    return path.read_text(encoding="utf-8").splitlines()


def test_outputs_follow_espnets_layout_and_agree_with_each_other(decoded, wav_scp):
    keys = [line.split()[0] for line in read(wav_scp)]
    records = [json.loads(line) for line in read(decoded / "candidates.jsonl")]
    assert [r["key"] for r in records] == sorted(keys)
    for r in records:
        assert [c["beam_size"] for c in r["candidates"]] == [2, 3, 4]
        assert all(set(c) == {"text", "beam_size", "logprob", "length"} for c in r["candidates"])
    for beam in (2, 3, 4):
        expected = [f"{r['key']} {' '.join(r['candidates'][beam - 2]['text'].split())}".rstrip() for r in records]
        assert read(decoded / f"beam{beam}" / "text") == expected
    assert read(decoded / "text") == read(decoded / "beam4" / "text")
    assert DecodingOptions.from_yaml(decoded / "decode.yaml") == DecodingOptions(beam_sizes=(2, 3, 4), max_new_tokens=6)
    assert not [p for p in decoded.rglob("*") if p.name.endswith(".tmp")]


def test_the_tool_is_a_thin_shell_over_speech2caption(decoded, packed, wav_scp):
    s2c = Speech2Caption.from_pretrained(packed, beam_sizes="2..4", max_new_tokens=6)
    entries = sorted(line.split() for line in read(wav_scp))
    results = s2c.caption([load_audio(path) for _, path in entries])
    records = [json.loads(line) for line in read(decoded / "candidates.jsonl")]
    assert [[c["text"] for c in r["candidates"]] for r in records] == [[c.text for c in r.candidates] for r in results]


def test_split_jobs_merge_into_the_whole_decode(tmp_path, decoded, packed, wav_scp):
    """As aac.sh stage 8 runs it: --train_config/--model_file, a decode YAML, key_file jobs, then --merge."""
    (tmp_path / "decode.yaml").write_text("beam_sizes: 2..4\nmax_new_tokens: 6\n")
    keys = read(wav_scp)
    outputs = []
    for i, part in enumerate((keys[:3], keys[3:]), 1):
        (tmp_path / f"keys.{i}.scp").write_text("".join(line + "\n" for line in part))
        outputs.append(str(tmp_path / f"output.{i}"))
        aac_inference.main(
            [
                "--train_config",
                str(packed / "config.yaml"),
                "--model_file",
                str(packed / "model.safetensors"),
                "--decode_config",
                str(tmp_path / "decode.yaml"),
                "--wav_scp",
                str(wav_scp),
                "--key_file",
                str(tmp_path / f"keys.{i}.scp"),
                "--output_dir",
                outputs[-1],
                "--batch_size",
                "3",
            ]
        )
        assert len(read(Path(outputs[-1]) / "text")) == len(part)
    merged = tmp_path / "merged"
    aac_inference.main(["--merge", *reversed(outputs), "--output_dir", str(merged), "--key_file", str(wav_scp)])
    names = sorted(str(p.relative_to(decoded)) for p in decoded.rglob("*") if p.is_file())
    assert names == ["beam2/text", "beam3/text", "beam4/text", "candidates.jsonl", "decode.yaml", "text"]
    for name in names:
        assert read(merged / name) == read(decoded / name), name


def test_merge_refuses_overlapping_incomplete_or_mismatched_jobs(tmp_path, decoded, wav_scp, capsys):
    def merge(*jobs, key_file=None):
        argv = ["--merge", *map(str, jobs), "--output_dir", str(tmp_path / "m")]
        with pytest.raises(SystemExit) as exit_:
            aac_inference.main(argv + (["--key_file", str(key_file)] if key_file else []))
        assert exit_.value.code == 1
        return capsys.readouterr().err

    assert "was decoded by" in merge(decoded, decoded)
    options = DecodingOptions.from_yaml(decoded / "decode.yaml")
    first = json.loads(read(decoded / "candidates.jsonl")[0])
    aac_inference.write_outputs(tmp_path / "partial", [(first["key"], first["candidates"])], options)
    assert "3 key(s) missing" in merge(tmp_path / "partial", key_file=wav_scp)
    aac_inference.write_outputs(tmp_path / "other", [], options.replace(max_new_tokens=7))
    assert "other options" in merge(decoded, tmp_path / "other")
    assert "not a finished decoding job" in merge(tmp_path / "nothing")
    assert not (tmp_path / "m").exists()


def test_an_unreadable_clip_stops_the_decode_naming_its_key(tmp_path, packed, audio_files, capsys):
    (tmp_path / "broken.wav").write_bytes(b"RIFF....WAVEfmt nonsense")
    scp = tmp_path / "wav.scp"
    scp.write_text(f"a {audio_files['10s_16k']}\nb {tmp_path / 'broken.wav'}\n")
    with pytest.raises(SystemExit) as exit_:
        aac_inference.main(["--model", str(packed), "--wav_scp", str(scp), "--output_dir", str(tmp_path / "o")])
    assert exit_.value.code == 1
    assert "key 'b'" in capsys.readouterr().err
    assert not (tmp_path / "o" / "text").exists()


def test_bad_command_lines_say_what_to_pass(tmp_path, packed, wav_scp, capsys):
    for argv, message in [
        (["--output_dir", str(tmp_path)], "pass --wav_scp"),
        (["--wav_scp", str(wav_scp), "--output_dir", str(tmp_path)], "no model"),
        (
            [
                "--wav_scp",
                str(wav_scp),
                "--key_file",
                str(wav_scp),
                "--output_dir",
                str(tmp_path),
                "--model",
                str(packed),
                "--beams",
                "2..8",
                "--nbest",
                "3",
            ],
            "nbest",
        ),
    ]:
        with pytest.raises(SystemExit):
            aac_inference.main(argv)
        assert message in capsys.readouterr().err
    (tmp_path / "keys").write_text("nope\n")
    with pytest.raises(SystemExit):
        aac_inference.main(
            [
                "--wav_scp",
                str(wav_scp),
                "--key_file",
                str(tmp_path / "keys"),
                "--output_dir",
                str(tmp_path),
                "--model",
                str(packed),
            ]
        )
    assert "not in" in capsys.readouterr().err
