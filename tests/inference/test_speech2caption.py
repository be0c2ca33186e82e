"""inference.py: Speech2Caption loads packed / experiment / hub models and captions like the reference."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from espnet_slam_aac.data import resample as resampling
from espnet_slam_aac.data.audio import load_audio
from espnet_slam_aac.errors import CheckpointError, ConfigError
from espnet_slam_aac.inference.speech2caption import Speech2Caption
from espnet_slam_aac.testing.reference import reference_generate
from espnet_slam_aac.testing.tiny_model import write_tiny_model


@pytest.fixture(scope="module")
def packed(tmp_path_factory, tiny_eat, tiny_llm) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("packed"), tiny_eat, tiny_llm)


@pytest.fixture(scope="module")
def packed_whole_clip(tmp_path_factory, tiny_eat, tiny_llm) -> Path:
    """Whole-clip features (target_length null): clips of different lengths give left-padded prefixes."""
    return write_tiny_model(tmp_path_factory.mktemp("packed_whole"), tiny_eat, tiny_llm, target_length=None)


def reference_captions(s2c: Speech2Caption, clips, beam_sizes, max_new_tokens):
    """SLAM-AAC's way: for each beam size, for each clip, prefix_embeds + generate + batch_decode."""
    model, tok = s2c.model, s2c.tokenizer
    out = []
    for wave, rate in clips:
        speech = s2c.prepare(wave, rate)[None]
        embeds, mask = model.prefix_embeds(speech, torch.tensor([speech.shape[1]]))
        per_beam = []
        for beam in beam_sizes:
            ids = reference_generate(model, embeds, mask, beam, max_new_tokens)
            per_beam.append(tok.batch_decode(ids, skip_special_tokens=True)[0].replace("\n", " "))
        out.append(per_beam)
    return out


@pytest.mark.parametrize("which", ["packed", "packed_whole_clip"])
def test_candidates_equal_generate_per_clip_and_beam_size(request, which, audio_files):
    # (test_decoding pins the search against generate on a model whose beam sizes disagree; this is the plumbing)
    s2c = Speech2Caption.from_pretrained(request.getfixturevalue(which), beam_sizes="2..5", max_new_tokens=12)
    clips = [load_audio(audio_files[name]) for name in ("10s_16k", "3s_44k_stereo", "10s_32k", "30s_16k")]
    results = s2c.caption(clips)
    expected = reference_captions(s2c, clips, [2, 3, 4, 5], 12)
    assert [[c.text for c in r.candidates] for r in results] == expected
    assert len({c.text for r in results for c in r.candidates}) > 1  # the audio makes a difference
    for r in results:
        assert [c.beam_size for c in r.candidates] == [2, 3, 4, 5]
        assert r.best == 2 and r.caption == r.candidates[2].text  # the beam-4 1-best


def test_packed_folder_experiment_dir_and_explicit_files_load_the_same_model(packed, tmp_path, audio_files):
    import shutil

    from safetensors.torch import load_file

    exp = tmp_path / "exp"
    exp.mkdir()
    shutil.copy(packed / "config.yaml", exp / "config.yaml")
    torch.save(load_file(str(packed / "model.safetensors")), exp / "valid.loss.ave.pth")
    clip = load_audio(audio_files["10s_16k"])
    options = dict(beam_sizes="2,4", max_new_tokens=6)
    a = Speech2Caption.from_pretrained(packed, **options)(*clip)
    b = Speech2Caption.from_pretrained(exp, **options)(*clip)
    c = Speech2Caption(exp / "config.yaml", exp / "valid.loss.ave.pth", **options)(*clip)
    assert a == b == c
    untrained = Speech2Caption(exp / "config.yaml", None, **options)(*clip)  # the weights file matters
    assert [x.logprob for x in untrained.candidates] != [x.logprob for x in a.candidates]


def test_a_model_file_that_does_not_fit_is_an_error(packed, tmp_path):
    from safetensors.torch import load_file, save_file

    state = load_file(str(packed / "model.safetensors"))
    missing = dict(state)
    missing.pop(next(k for k in state if "projector" in k))
    save_file(missing, str(tmp_path / "missing.safetensors"))
    with pytest.raises(CheckpointError, match="does not fit the model.*missing keys"):
        Speech2Caption(packed / "config.yaml", tmp_path / "missing.safetensors")
    save_file({**state, "projector.extra": torch.zeros(1)}, str(tmp_path / "extra.safetensors"))
    with pytest.raises(CheckpointError, match="unexpected keys.*projector.extra"):
        Speech2Caption(packed / "config.yaml", tmp_path / "extra.safetensors")
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read model file"):
        Speech2Caption(packed / "config.yaml", tmp_path / "broken.safetensors")


def test_missing_model_folder_or_offline_hub_id_fail_with_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="neither a folder .* nor a Hugging Face Hub id"):
        Speech2Caption.from_pretrained(str(tmp_path / "no" / "such" / "dir"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="cannot fetch model 'nobody/no-such-slam-aac'.*pass a local folder"):
        Speech2Caption.from_pretrained("nobody/no-such-slam-aac")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.yaml"):
        Speech2Caption.from_pretrained(tmp_path / "empty")
    (tmp_path / "empty" / "config.yaml").write_text("frontend: eat_fbank\n")
    with pytest.raises(CheckpointError, match="no model file; looked for"):
        Speech2Caption.from_pretrained(tmp_path / "empty")


def test_relative_paths_in_a_packed_config_are_relative_to_its_folder(tmp_path, tiny_eat, tiny_llm, audio_files):
    import shutil

    folder = write_tiny_model(tmp_path / "pack", tiny_eat, tiny_llm)
    shutil.copytree(tiny_eat, folder / "eat")
    shutil.copytree(tiny_llm, folder / "llm")
    conf = yaml.safe_load((folder / "config.yaml").read_text())
    conf["encoder_conf"]["checkpoint"], conf["decoder_conf"]["model_name_or_path"] = "eat", "llm"
    (folder / "config.yaml").write_text(yaml.safe_dump(conf))
    s2c = Speech2Caption.from_pretrained(folder, max_new_tokens=4)
    assert s2c(*load_audio(audio_files["3s_44k_stereo"])).caption is not None


def test_a_packed_folder_brings_its_decode_and_refine_settings(tmp_path, packed, tiny_claps, audio_files):
    import shutil

    folder = tmp_path / "pack"
    shutil.copytree(packed, folder)
    shutil.copytree(tiny_claps["hf"], folder / "sources" / "clap")
    (folder / "decode.yaml").write_text("beam_sizes: [2, 3]\ntext_beam_size: 3\nmax_new_tokens: 4\n")
    (folder / "refine.yaml").write_text("clap: sources/clap\nlm_weight: 0.5\n")
    clip = load_audio(audio_files["10s_16k"])
    plain = Speech2Caption.from_pretrained(folder)
    assert (plain.options.beam_sizes, plain.options.max_new_tokens, plain.clap) == ((2, 3), 4, None)
    assert plain(*clip).best == 1
    refined = Speech2Caption.from_pretrained(folder, refine=True, max_new_tokens=5)
    assert refined.lm_weight == 0.5 and refined.options.max_new_tokens == 5
    assert len(refined(*clip).similarities) == 2
    with pytest.raises(ConfigError, match="no refine.yaml"):
        Speech2Caption.from_pretrained(packed, refine=True)
    with pytest.raises(ConfigError, match="needs a CLAP: no refine YAML given"):
        Speech2Caption(packed / "config.yaml", packed / "model.safetensors", refine=True)


def test_prepare_resamples_and_picks_the_channel_as_the_front_end_does(packed, audio_files):
    s2c = Speech2Caption.from_pretrained(packed)
    wave, rate = load_audio(audio_files["3s_44k_stereo"])
    prepared = s2c.prepare(wave, rate)
    expected = resampling.resample(torch.from_numpy(wave[:, 0]), rate, s2c.frontend.resampler)
    assert torch.equal(prepared, expected)
    # the front end fed the native-rate clip directly computes the same features
    direct = type(s2c.frontend)(fs=rate, resampler=s2c.frontend.resampler)
    a, _ = direct(torch.from_numpy(wave)[None], torch.tensor([wave.shape[0]]))
    b, _ = s2c.frontend(prepared[None], torch.tensor([prepared.shape[0]]))
    assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="expected a waveform"):
        s2c.prepare(np.zeros((2, 3, 4)), 16000)


def test_clap_refine_picks_the_candidate_most_similar_to_the_audio(packed, tiny_claps, audio_files):
    from espnet_slam_aac.clap.model import load_clap, rescore

    s2c = Speech2Caption.from_pretrained(packed, beam_sizes="2..8", max_new_tokens=10, refine=str(tiny_claps["hf"]))
    clips = [load_audio(audio_files[name]) for name in ("10s_16k", "3s_44k_stereo")]
    results = s2c.caption(clips)
    clap = load_clap(str(tiny_claps["hf"]))
    for result, clip in zip(results, clips):
        audio = clap.audio_embeddings([clip])[0]
        text = clap.text_embeddings([c.text for c in result.candidates])
        best, scores = rescore([dataclasses.asdict(c) for c in result.candidates], audio, text)
        assert result.best == best and result.caption == result.candidates[best].text
        assert result.similarities == pytest.approx([s.similarity for s in scores], abs=1e-5)


def test_bad_settings_are_errors(packed):
    with pytest.raises(ConfigError, match=r"unknown key\(s\)"):
        Speech2Caption.from_pretrained(packed, beam_size=4)
    with pytest.raises(ConfigError, match="batch_size"):
        Speech2Caption.from_pretrained(packed, batch_size=0)
    with pytest.raises(ConfigError, match="dtype must be one of"):
        Speech2Caption.from_pretrained(packed, dtype="float64")
