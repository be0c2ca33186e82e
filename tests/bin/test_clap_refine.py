"""clap-refine: candidates.jsonl + data dir -> text + scores.jsonl; settings from YAML and flags; clear errors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import yaml

from espnet_slam_aac.bin import clap_refine as tool
from espnet_slam_aac.clap.model import load_clap, rescore
from espnet_slam_aac.data.audio import load_audio

TEMPLATE_CONF = Path(__file__).resolve().parents[2] / "egs2" / "TEMPLATE" / "aac1" / "conf" / "refine.yaml"
CAPTIONS = ["a low tone beeps twice", "fast clicks then a rising sweep", "a loud burst of noise"]


@pytest.fixture
def decoded(tmp_path):
    """A data dir of three clips (keys out of order in candidates.jsonl) and their candidates."""
    rng = np.random.default_rng(5)
    data = tmp_path / "data"
    data.mkdir()
    lines, cands = [], []
    for i, key in enumerate(["clip_c", "clip_a", "clip_b"]):
        path = tmp_path / f"{key}.wav"
        soundfile.write(path, 0.1 * rng.standard_normal((16000 * (2 + i), 2)), 16000, subtype="PCM_16")
        lines.append(f"{key} {path}\n")
        cands.append(
            {
                "key": key,
                "candidates": [
                    {"text": t, "beam_size": b, "logprob": -float(b), "length": 4} for b, t in zip((2, 3, 4), CAPTIONS)
                ],
            }
        )
    (data / "wav.scp").write_text("".join(sorted(lines)), encoding="utf-8")
    candidates = tmp_path / "candidates.jsonl"
    candidates.write_text("".join(json.dumps(c) + "\n" for c in cands), encoding="utf-8")
    return candidates, data


def _run(candidates, data, out, *flags):
    tool.main(["--candidates", str(candidates), "--data_dir", str(data), "--out_dir", str(out), *flags])


def test_writes_the_most_similar_candidate_per_clip_sorted_by_key(decoded, tiny_claps, tmp_path):
    candidates, data = decoded
    _run(candidates, data, tmp_path / "out", "--config", str(TEMPLATE_CONF), "--clap", str(tiny_claps["ase"]))
    text = (tmp_path / "out" / "text").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in (tmp_path / "out" / "scores.jsonl").read_text().splitlines()]
    assert [line.split()[0] for line in text] == ["clip_a", "clip_b", "clip_c"]
    assert [r["key"] for r in records] == ["clip_a", "clip_b", "clip_c"]
    clap = load_clap(str(tiny_claps["ase"]))
    wav = dict(line.split(maxsplit=1) for line in (data / "wav.scp").read_text().splitlines())
    for line, rec in zip(text, records):
        audio = clap.audio_embeddings([load_audio(wav[rec["key"]])])
        best, scores = rescore(rec["candidates"], audio[0], clap.text_embeddings(CAPTIONS))
        assert rec["best"] == best and line == f"{rec['key']} {CAPTIONS[best]}" and rec["text"] == CAPTIONS[best]
        assert [c["similarity"] for c in rec["candidates"]] == pytest.approx([s.similarity for s in scores], abs=1e-6)
        assert all(c["combined"] == c["similarity"] for c in rec["candidates"])
        assert [c["beam_size"] for c in rec["candidates"]] == [2, 3, 4] and rec["lm_weight"] == 0.0
    used = yaml.safe_load((tmp_path / "out" / "refine.yaml").read_text())
    assert used["clap"] == str(tiny_claps["ase"]) and used["max_seconds"] == 10.0


def test_lm_weight_flag_overrides_the_yaml_and_can_change_the_choice(decoded, tiny_claps, tmp_path):
    candidates, data = decoded
    conf = tmp_path / "refine.yaml"
    conf.write_text(yaml.safe_dump({"clap": str(tiny_claps["laion"]), "lm_weight": 0.0}), encoding="utf-8")
    _run(candidates, data, tmp_path / "out", "--config", str(conf), "--lm_weight", "100")
    records = [json.loads(line) for line in (tmp_path / "out" / "scores.jsonl").read_text().splitlines()]
    # logprob -2 / 4 tokens for beam 2 beats -3/4 and -4/4 once the LM term dominates
    assert all(r["best"] == 0 and r["lm_weight"] == 100.0 for r in records)
    assert records[0]["candidates"][1]["lm_score"] == -0.75


def test_relative_clap_path_is_taken_beside_the_yaml_as_in_a_packed_model(decoded, tiny_claps, tmp_path):
    import shutil

    candidates, data = decoded
    packed = tmp_path / "packed"
    shutil.copytree(tiny_claps["ase"], packed / "sources" / "clap")
    (packed / "refine.yaml").write_text(yaml.safe_dump({"clap": "sources/clap"}), encoding="utf-8")
    _run(candidates, data, tmp_path / "out", "--config", str(packed / "refine.yaml"))  # run from another folder
    used = yaml.safe_load((tmp_path / "out" / "refine.yaml").read_text())
    assert used["clap"] == str(packed / "sources" / "clap")


def test_unknown_yaml_key_and_missing_clap_exit_with_a_message(decoded, tmp_path, capsys):
    candidates, data = decoded
    conf = tmp_path / "refine.yaml"
    conf.write_text("clap: x\nbeam: 4\n", encoding="utf-8")
    with pytest.raises(SystemExit) as e:
        _run(candidates, data, tmp_path / "out", "--config", str(conf))
    assert e.value.code == 1 and "unknown key(s) ['beam']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _run(candidates, data, tmp_path / "out")
    assert "no CLAP given" in capsys.readouterr().err


def test_candidate_key_missing_from_wav_scp_is_reported(decoded, tiny_claps, tmp_path, capsys):
    candidates, data = decoded
    with open(candidates, "a", encoding="utf-8") as f:
        f.write(json.dumps({"key": "clip_z", "candidates": [{"text": "x"}]}) + "\n")
    with pytest.raises(SystemExit):
        _run(candidates, data, tmp_path / "out", "--clap", str(tiny_claps["ase"]))
    assert "not in wav.scp, e.g. ['clip_z']" in capsys.readouterr().err


def test_bad_candidates_line_is_reported_with_file_and_line(decoded, tiny_claps, tmp_path, capsys):
    candidates, data = decoded
    with open(candidates, "a", encoding="utf-8") as f:
        f.write('{"key": "clip_d", "candidates": []}\n')
    with pytest.raises(SystemExit):
        _run(candidates, data, tmp_path / "out", "--clap", str(tiny_claps["ase"]))
    assert "candidates.jsonl:4: key 'clip_d': 'candidates' must be a non-empty list" in capsys.readouterr().err


def test_unreadable_audio_names_the_key(decoded, tiny_claps, tmp_path, capsys):
    candidates, data = decoded
    scp = data / "wav.scp"
    scp.write_text(scp.read_text().replace(str(tmp_path / "clip_b.wav"), str(tmp_path / "gone.wav")))
    with pytest.raises(SystemExit):
        _run(candidates, data, tmp_path / "out", "--clap", str(tiny_claps["ase"]))
    assert "gone.wav" in capsys.readouterr().err


def test_cli_sub_command_runs_the_tool(decoded, tiny_claps, tmp_path):
    candidates, data = decoded
    cmd = [
        sys.executable,
        "-m",
        "espnet_slam_aac.cli",
        "clap-refine",
        "--candidates",
        str(candidates),
        "--data_dir",
        str(data),
        "--out_dir",
        str(tmp_path / "out"),
        "--clap",
        str(tiny_claps["hf"]),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "3 clips refined" in result.stderr and result.stdout == ""
    assert len((tmp_path / "out" / "text").read_text().splitlines()) == 3


def test_template_refine_yaml_holds_every_setting_with_its_default():
    from espnet_slam_aac.clap.refine import RefineConfig

    conf = yaml.safe_load(TEMPLATE_CONF.read_text())
    assert conf == vars(RefineConfig())


def test_refine_settings_of_the_wrong_type_are_config_errors():
    from espnet_slam_aac.clap.refine import RefineConfig
    from espnet_slam_aac.errors import ConfigError

    assert RefineConfig(lm_weight=1, max_seconds="5").max_seconds == 5.0
    with pytest.raises(ConfigError, match="lm_weight: expected a number, got 'high'"):
        RefineConfig(lm_weight="high")
    with pytest.raises(ConfigError, match="whole_clip: expected true or false"):
        RefineConfig(whole_clip="yes")
