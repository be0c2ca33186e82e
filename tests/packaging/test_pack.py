"""pack / upload: a packed folder is self-contained, loads in a fresh process with the same captions, and
is what espnet_model_zoo expects; upload is tested offline (dry run and errors)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from espnet_slam_aac.errors import ConfigError
from espnet_slam_aac.packaging import pack as P
from espnet_slam_aac.testing.tiny_model import DECODE, make_experiment


@pytest.fixture
def experiment(tmp_path, tiny_eat, tiny_llm) -> Path:
    return make_experiment(tmp_path, tiny_eat, tiny_llm)


def do_pack(exp: Path, out: Path, **kwargs) -> P.PackReport:
    return P.pack(
        exp / "config.yaml",
        exp / "valid.loss.best.pth",
        out,
        decode_config=exp.parents[1] / "decode.yaml",
        results=exp / "RESULTS.md",
        images=exp / "images",
        resolve_revisions=False,
        **kwargs,
    )


CAPTION = """
import json, sys
from espnet_slam_aac import Speech2Caption, load_audio
s2c = Speech2Caption.from_pretrained(sys.argv[1], **json.loads(sys.argv[2]))
print(json.dumps([s2c(*load_audio(p)).caption for p in sys.argv[3:]]))
"""


def captions_in_fresh_process(model: str, files, **kwargs):
    out = subprocess.run(
        [sys.executable, "-c", CAPTION, model, json.dumps(kwargs), *map(str, files)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def test_pack_is_self_contained_and_captions_like_the_experiment_in_a_fresh_process(tmp_path, experiment, audio_files):
    from espnet_slam_aac.data.audio import load_audio
    from espnet_slam_aac.inference.speech2caption import Speech2Caption

    files = [audio_files["10s_16k"], audio_files["3s_44k_stereo"]]
    s2c = Speech2Caption(experiment / "config.yaml", experiment / "valid.loss.best.pth", **DECODE)
    expected = [s2c(*load_audio(f)).caption for f in files]

    report = do_pack(experiment, tmp_path / "packed", name="me/slam-aac-tiny", datasets=["synth"])
    packed = tmp_path / "packed"
    conf = yaml.safe_load((packed / "config.yaml").read_text())
    assert conf["encoder_conf"]["checkpoint"] == "sources/encoder"
    assert conf["decoder_conf"]["model_name_or_path"] == "sources/llm"
    assert {r.key for r in report.references} == {"encoder_conf.checkpoint", "decoder_conf.model_name_or_path"}
    for name in (
        "model.safetensors",
        "decode.yaml",
        "RESULTS.md",
        "images/loss.png",
        "README.md",
        "sources/encoder/config.json",
        "sources/llm/tokenizer.model",
    ):
        assert (packed / name).is_file(), name

    from safetensors.torch import load_file

    weights = load_file(str(packed / "model.safetensors"))
    original = torch.load(experiment / "valid.loss.best.pth", weights_only=True)
    assert weights.keys() == original.keys() and all(torch.equal(weights[k], original[k]) for k in weights)
    assert report.trainable_parameters == sum(v.numel() for v in original.values())

    card = (packed / "README.md").read_text()
    assert "espnet-slam-aac caption --model me/slam-aac-tiny" in card and "cider_d|1.234" in card
    assert "`train`" in card and "- synth" in card and "Licenses" in card

    shutil.rmtree(tmp_path / "models")  # the experiment's sources are gone: the pack must not need them
    moved = tmp_path / "elsewhere" / "packed"
    shutil.move(packed, moved)
    assert captions_in_fresh_process(str(moved), files, **DECODE) == expected


def test_meta_yaml_is_what_espnet_model_zoo_reads(tmp_path, experiment, audio_files):
    """Replays espnet_model_zoo's unpacking of a Hub snapshot (rewrite every yaml value naming a file of the
    snapshot to its absolute path), then builds Speech2Caption from the returned dict."""
    from espnet2.main_funcs.pack_funcs import find_path_and_change_it_recursive

    from espnet_slam_aac.data.audio import load_audio
    from espnet_slam_aac.inference.speech2caption import Speech2Caption

    do_pack(experiment, tmp_path / "snapshot")
    cache = tmp_path / "snapshot"
    meta = yaml.safe_load((cache / "meta.yaml").read_text())
    assert meta["files"] == {"model_file": "model.safetensors"}
    assert meta["yaml_files"] == {"train_config": "config.yaml", "decode_config": "decode.yaml"}
    for value in meta["yaml_files"].values():
        d = yaml.safe_load((cache / value).read_text())
        for name in cache.glob("**/*"):
            name = name.relative_to(cache)
            d = find_path_and_change_it_recursive(d, name, str(cache / name))
        (cache / value).write_text(yaml.safe_dump(d))
    kwargs = {k: str(cache / v) for k, v in list(meta["yaml_files"].items()) + list(meta["files"].items())}
    assert yaml.safe_load(Path(kwargs["train_config"]).read_text())["decoder_conf"]["model_name_or_path"] == str(
        cache / "sources/llm"
    )
    s2c = Speech2Caption(**kwargs)
    assert isinstance(s2c(*load_audio(audio_files["10s_16k"])).caption, str)


def test_pack_refuses_large_local_sources_keeps_hub_ids_and_rejects_unknown_sources(tmp_path, experiment):
    with pytest.raises(
        ConfigError,
        match=r"decoder_conf.model_name_or_path is a local path .* above the packing "
        r"limit .* Put it on the Hugging Face Hub",
    ):
        do_pack(experiment, tmp_path / "p1", max_source_bytes=400_000)  # EAT fits, the LLM not
    assert not (tmp_path / "p1").exists() and not list(tmp_path.glob(".p1.tmp-*"))

    conf = yaml.safe_load((experiment / "config.yaml").read_text())
    conf["decoder_conf"]["tokenizer_name_or_path"] = "some-org/some-tokenizer"
    (experiment / "config.yaml").write_text(yaml.safe_dump(conf))
    report = do_pack(experiment, tmp_path / "p2")
    ref = next(r for r in report.references if r.key == "decoder_conf.tokenizer_name_or_path")
    assert (ref.value, ref.origin, ref.revision) == ("some-org/some-tokenizer", "some-org/some-tokenizer", None)
    assert yaml.safe_load((tmp_path / "p2/config.yaml").read_text())["decoder_conf"]["tokenizer_name_or_path"] == (
        "some-org/some-tokenizer"
    )

    conf["encoder_conf"]["checkpoint"] = "/no/such/eat.pt"
    (experiment / "config.yaml").write_text(yaml.safe_dump(conf))
    with pytest.raises(ConfigError, match="encoder_conf.checkpoint = '/no/such/eat.pt' is neither"):
        do_pack(experiment, tmp_path / "p3")


def test_pack_copies_a_local_clap_of_the_refine_config(tmp_path, experiment, tiny_claps):
    (tmp_path / "refine.yaml").write_text(yaml.safe_dump({"clap": str(tiny_claps["ase"]), "lm_weight": 0.0}))
    do_pack(experiment, tmp_path / "packed", refine_config=tmp_path / "refine.yaml")
    refine = yaml.safe_load((tmp_path / "packed/refine.yaml").read_text())
    assert refine["clap"] == "sources/clap" and (tmp_path / "packed/sources/clap").is_dir()
    assert yaml.safe_load((tmp_path / "packed/meta.yaml").read_text())["yaml_files"]["refine_config"] == "refine.yaml"
    # --clap (the recipe's db.sh CLAP) overrides the YAML's, or makes a refine.yaml of its own
    do_pack(experiment, tmp_path / "packed2", clap=str(tiny_claps["ase"]))
    assert yaml.safe_load((tmp_path / "packed2/refine.yaml").read_text()) == {"clap": "sources/clap"}


def test_pack_will_not_replace_a_folder_that_is_not_a_pack(tmp_path, experiment):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="refusing to replace"):
        do_pack(experiment, tmp_path / "precious")
    do_pack(experiment, tmp_path / "packed")
    do_pack(experiment, tmp_path / "packed")  # an earlier pack is replaced


def run_bin(module: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"espnet_slam_aac.bin.{module}", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def test_pack_and_upload_commands_dry_run_and_offline_errors(tmp_path, experiment):
    done = run_bin(
        "pack",
        "--train_config",
        experiment / "config.yaml",
        "--model_file",
        experiment / "valid.loss.best.pth",
        "--out_dir",
        tmp_path / "packed",
        "--max_source_size",
        "1GB",
    )
    assert done.returncode == 0, done.stderr
    assert "sources/llm [copied" in done.stderr and "packed (" in done.stderr

    dry = run_bin("upload", tmp_path / "packed", "--hf_repo", "me/slam-aac-tiny", "--dry_run")
    assert dry.returncode == 0, dry.stderr
    assert "to https://huggingface.co/me/slam-aac-tiny" in dry.stdout and "model.safetensors" in dry.stdout
    assert "sources/llm/tokenizer.model" in dry.stdout

    offline = run_bin("upload", tmp_path / "packed", "--hf_repo", "me/slam-aac-tiny")
    assert offline.returncode == 1 and "hf auth login" in offline.stderr and "HF_HUB_OFFLINE" in offline.stderr
    bad_repo = run_bin("upload", tmp_path / "packed", "--hf_repo", "not a repo")
    assert bad_repo.returncode == 1 and "is not a Hugging Face repository id" in bad_repo.stderr
    not_packed = run_bin("upload", experiment, "--hf_repo", "me/x", "--dry_run")
    assert not_packed.returncode == 1 and "is not a packed model" in not_packed.stderr
