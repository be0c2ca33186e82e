"""CLAP API and selection: embeddings, batching invariance, format agreement, argmax/tie rule, LM weight."""

import numpy as np
import pytest
import torch

from espnet_slam_aac.clap.frontend import ASE_MEL, clip_windows
from espnet_slam_aac.clap.model import CandidateScore, load_clap, rescore
from espnet_slam_aac.errors import AudioError, ConfigError


@pytest.fixture(scope="module")
def claps(tiny_claps):
    return {fmt: load_clap(str(spec)) for fmt, spec in tiny_claps.items()}


def _clips(seed=0):
    rng = np.random.default_rng(seed)
    return [
        ((0.1 * rng.standard_normal(16000 * 4)).astype(np.float32), 16000),
        ((0.1 * rng.standard_normal((44100 * 12, 2))).astype(np.float32), 44100),  # longer than 10 s, stereo
        ((0.1 * rng.standard_normal(32000 * 10)).astype(np.float32), 32000),
        ((0.1 * rng.standard_normal(32000 * 2)).astype(np.float32), 32000),
    ]


TEXTS = ["a low tone beeps twice", "fast clicks then a rising sweep", "a dog barks", "a low tone beeps twice", ""]


@pytest.mark.parametrize("fmt", ["ase", "laion", "hf"])
def test_embeddings_are_l2_normalised_with_one_row_per_input(claps, fmt):
    audio = claps[fmt].audio_embeddings(_clips())
    text = claps[fmt].text_embeddings(TEXTS)
    assert audio.shape == (4, 32) and text.shape == (5, 32)
    torch.testing.assert_close(audio.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(5))
    assert torch.equal(text[0], text[3])  # identical captions get identical embeddings


@pytest.mark.parametrize("fmt", ["ase", "laion"])
def test_a_batch_of_clips_of_different_lengths_embeds_as_each_clip_alone(claps, fmt):
    clips = _clips()
    together = claps[fmt].audio_embeddings(clips)
    alone = torch.cat([claps[fmt].audio_embeddings([clip]) for clip in clips])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


def test_batch_size_does_not_change_audio_embeddings(tiny_claps):
    clips = _clips(1) * 2
    big = load_clap(str(tiny_claps["ase"]), batch_size=8).audio_embeddings(clips)
    small = load_clap(str(tiny_claps["ase"]), batch_size=1).audio_embeddings(clips)
    torch.testing.assert_close(big, small, atol=1e-5, rtol=0)


@pytest.mark.parametrize("fmt", ["ase", "laion"])
def test_a_batch_of_captions_of_different_lengths_embeds_as_each_caption_alone(claps, fmt):
    together = claps[fmt].text_embeddings(TEXTS)
    alone = torch.cat([claps[fmt].text_embeddings([t]) for t in TEXTS])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


def test_laion_pt_and_transformers_folder_with_the_same_weights_give_identical_embeddings(claps):
    clips = _clips()
    laion, hf = claps["laion"], claps["hf"]
    torch.testing.assert_close(laion.audio_embeddings(clips), hf.audio_embeddings(clips), atol=0, rtol=0)
    torch.testing.assert_close(laion.text_embeddings(TEXTS), hf.text_embeddings(TEXTS), atol=0, rtol=0)


def test_ase_and_laion_audio_towers_agree_on_the_same_log_mel(claps):
    # the tiny ASE shares the LAION model's HTS-AT and audio projection; only their front ends differ
    mel = torch.stack(clip_windows(_clips()[2][0], 32000, ASE_MEL))
    with torch.inference_mode():
        ase = claps["ase"].tower.embed_audio(mel)
        laion = claps["laion"].tower.embed_audio(mel)
    torch.testing.assert_close(ase, laion, atol=1e-6, rtol=0)


def test_ase_audio_embedding_is_the_time_mean_of_htsat_fine_grained_embedding(claps):
    """SLAM-LLM's ASE.encode_audio: mean over time of fine_grained_embedding (itself a mean over frequency
    bins of the final feature map), projected and normalised."""
    tower = claps["ase"].tower
    mel = torch.stack(clip_windows(_clips()[0][0], 16000, ASE_MEL))
    with torch.inference_mode():
        out = tower.audio_model(input_features=mel.unsqueeze(1))
        fine_grained = out.last_hidden_state.mean(dim=2).transpose(1, 2)  # (B, T', C)
        expected = torch.nn.functional.normalize(tower.audio_projection(fine_grained.mean(dim=1)), dim=-1)
        torch.testing.assert_close(tower.embed_audio(mel), expected, atol=1e-6, rtol=0)


def test_ase_text_embedding_uses_the_first_token_without_pooler(claps):
    clap = claps["ase"]
    tok = clap.tokenizer(["a dog barks"], return_tensors="pt")
    with torch.inference_mode():
        hidden = clap.tower.text_model(**tok).last_hidden_state[:, 0]
        expected = torch.nn.functional.normalize(clap.tower.text_projection(hidden), dim=-1)
    torch.testing.assert_close(clap.text_embeddings(["a dog barks"]), expected)
    assert not hasattr(clap.tower.text_model, "pooler") or clap.tower.text_model.pooler is None


def test_ase_text_is_cut_to_30_tokens_and_laion_text_to_77(claps):
    long_caption = " ".join(["a low tone beeps twice"] * 40)
    assert claps["ase"].max_text_tokens == 30 and claps["laion"].max_text_tokens == 77
    tokenizer = claps["ase"].tokenizer
    cut = tokenizer.decode(tokenizer(long_caption, truncation=True, max_length=30)["input_ids"][1:-1])
    torch.testing.assert_close(claps["ase"].text_embeddings([long_caption]), claps["ase"].text_embeddings([cut]))


def test_whole_clip_averages_window_embeddings(claps, tiny_claps):
    rng = np.random.default_rng(3)
    wave = (0.1 * rng.standard_normal(32000 * 20)).astype(np.float32)
    clap = claps["ase"]
    clap_whole = load_clap(str(tiny_claps["ase"]), whole_clip=True)
    halves = clap.audio_embeddings([(wave[: 32000 * 10], 32000), (wave[32000 * 10 :], 32000)])
    expected = torch.nn.functional.normalize(halves.mean(dim=0, keepdim=True), dim=-1)
    torch.testing.assert_close(clap_whole.audio_embeddings([(wave, 32000)]), expected, atol=1e-6, rtol=0)


def test_short_clip_error_names_its_position_in_the_batch(claps):
    with pytest.raises(AudioError, match="clip 1 of the batch"):
        claps["ase"].audio_embeddings([_clips()[0], (np.zeros(100, np.float32), 16000)])


def test_max_seconds_beyond_what_htsat_holds_is_a_config_error(tiny_claps):
    with pytest.raises(ConfigError, match="max_seconds=12"):
        load_clap(str(tiny_claps["ase"]), max_seconds=12)
    with pytest.raises(ConfigError, match="max_seconds=11"):
        load_clap(str(tiny_claps["hf"]), max_seconds=11)


def test_tokenizer_that_does_not_fit_the_text_encoder_is_refused(tiny_claps, tmp_path):
    from espnet_slam_aac.testing.tiny_clap import train_tokenizer

    train_tokenizer(tmp_path, vocab_size=300)
    with pytest.raises(ConfigError, match="300 tokens"):
        load_clap(str(tiny_claps["ase"]), tokenizer=str(tmp_path))


# ------------------------------------------------------------------------------------------- selection
def _unit(*values):
    return torch.nn.functional.normalize(torch.tensor(values, dtype=torch.float), dim=-1)


def test_rescore_picks_the_caption_most_similar_to_the_audio():
    audio = _unit(1.0, 0.0)
    texts = torch.stack([_unit(0.0, 1.0), _unit(1.0, 0.2), _unit(1.0, 1.0)])
    best, scores = rescore([{"text": "x"}, {"text": "y"}, {"text": "z"}], audio, texts)
    assert best == 1
    assert [round(s.similarity, 4) for s in scores] == [0.0, 0.9806, 0.7071]
    assert all(s.combined == s.similarity and s.lm_score is None for s in scores)


def test_rescore_ties_go_to_the_first_candidate_like_a_stable_descending_sort():
    audio = _unit(1.0, 0.0)
    texts = torch.stack([_unit(0.0, 1.0), _unit(1.0, 1.0), _unit(1.0, 1.0), _unit(1.0, 1.0)])
    cands = [{"text": t, "beam_size": b} for t, b in zip("abcb", (2, 3, 4, 5))]
    best, scores = rescore(cands, audio, texts)
    assert best == 1
    combined = torch.tensor([s.combined for s in scores])
    assert best == int(torch.sort(combined, descending=True, stable=True).indices[0])


def test_lm_weight_mixes_in_the_mean_token_logprob_and_changes_the_choice():
    audio = _unit(1.0, 0.0)
    texts = torch.stack([_unit(1.0, 0.3), _unit(1.0, 0.5)])  # candidate 0 is closer to the audio
    cands = [{"text": "a", "logprob": -12.0, "length": 4}, {"text": "b", "logprob": -2.0, "length": 4}]
    best0, scores0 = rescore(cands, audio, texts, lm_weight=0.0)
    best1, scores1 = rescore(cands, audio, texts, lm_weight=0.1)
    assert best0 == 0 and best1 == 1
    assert scores1[0].lm_score == -3.0 and scores1[1].lm_score == -0.5
    assert scores1[1].combined == pytest.approx(scores1[1].similarity - 0.05)
    assert rescore(cands, audio, texts, lm_weight=0.001)[0] == 0  # a small weight keeps the CLAP choice


def test_lm_weight_without_logprobs_is_an_error_and_zero_weight_ignores_them():
    audio, texts = _unit(1.0, 0.0), torch.stack([_unit(1.0, 0.0)])
    assert rescore([{"text": "a"}], audio, texts)[0] == 0
    with pytest.raises(ValueError, match="needs a logprob"):
        rescore([{"text": "a"}], audio, texts, lm_weight=0.5)
    scores = rescore([{"text": "a", "logprob": float("-inf"), "length": 3}], audio, texts)[1]
    assert isinstance(scores[0], CandidateScore) and scores[0].combined == pytest.approx(1.0)


def test_unknown_or_bad_options_fail_when_loading(tiny_claps):
    with pytest.raises(ConfigError, match=r"CLAP options: unknown key\(s\) \['batchsize'\]"):
        load_clap(str(tiny_claps["ase"]), batchsize=4)
    with pytest.raises(ConfigError, match="channel must be first|mean"):
        load_clap(str(tiny_claps["ase"]), channel="left")


def test_rescore_takes_objects_with_attributes_as_well_as_dicts():
    from types import SimpleNamespace

    audio = _unit(1.0, 0.0)
    texts = torch.stack([_unit(1.0, 0.3), _unit(1.0, 0.5)])
    hyps = [SimpleNamespace(logprob=-12.0, length=4, beam_size=2), SimpleNamespace(logprob=-2.0, length=4, beam_size=3)]
    as_dicts = [{"text": "a", "logprob": -12.0, "length": 4}, {"text": "b", "logprob": -2.0, "length": 4}]
    assert rescore(hyps, audio, texts, lm_weight=0.1) == rescore(as_dicts, audio, texts, lm_weight=0.1)
