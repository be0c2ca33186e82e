import numpy as np
import pytest
import soundfile
import torch

from espnet_slam_aac.errors import ConfigError
from espnet_slam_aac.model.decoder import IGNORE_ID
from espnet_slam_aac.tasks.aac import AACTask

SPECAUG = dict(
    apply_time_warp=False,
    freq_mask_width_range=[0, 8],
    num_freq_mask=2,
    time_mask_width_range=[0, 64],
    num_time_mask=2,
)


def build(tiny_eat, tiny_llm, frozen_dtype="float32", specaug=True, lora=None):
    args = AACTask.get_parser().parse_args([])
    args.frozen_dtype = frozen_dtype
    args.frontend_conf = {"target_length": None}  # whole clips: audio lengths differ within a batch
    args.specaug, args.specaug_conf = ("specaug", SPECAUG) if specaug else (None, {})
    args.encoder_conf = {"checkpoint": str(tiny_eat)}
    args.projector_conf = {"hidden_size": 48}
    args.decoder_conf = {"model_name_or_path": str(tiny_llm), **({} if lora is None else {"lora": lora})}
    torch.manual_seed(0)
    return AACTask.build_model(args)


@pytest.fixture(scope="module")
def model(tiny_eat, tiny_llm):
    return build(tiny_eat, tiny_llm)


@pytest.fixture(scope="module")
def batch(audio_files):
    wave, _ = soundfile.read(audio_files["10s_16k"], dtype="float32")
    speech = torch.from_numpy(np.stack([wave[:16000], wave[16000:32000]]))
    return speech, torch.tensor([16000, 12000])


def test_training_input_is_audio_then_bos_prompt_caption_eos_right_padded(model, batch):
    model.eval()
    audio, n_audio = model.encode(*batch)
    assert n_audio.tolist() == [11, 8]  # 1 s -> 112 frames -> 57 tokens; 0.75 s -> 80 frames -> 41 tokens
    text = torch.tensor([[40, 41, 42], [43, -1, -1]])
    embeds, mask, labels = model.training_inputs(audio, n_audio, text, torch.tensor([3, 1]))
    prompt = model.decoder.prompt_ids
    P, eos = len(prompt), model.decoder.eos_id
    assert prompt[0].item() == model.decoder.tokenizer.bos_token_id
    assert mask.sum(1).tolist() == [11 + P + 4, 8 + P + 2]
    assert mask[1].tolist() == [1] * (8 + P + 2) + [0] * 5
    for b, A in enumerate([11, 8]):
        torch.testing.assert_close(embeds[b, :A], audio[b, :A])
        torch.testing.assert_close(embeds[b, A : A + P], model.decoder.embed(prompt))
    torch.testing.assert_close(embeds[1, 8 + P : 8 + P + 2], model.decoder.embed(torch.tensor([43, eos])))
    assert labels[0].tolist() == [IGNORE_ID] * (11 + P) + [40, 41, 42, eos]
    assert labels[1].tolist() == [IGNORE_ID] * (8 + P) + [43, eos] + [IGNORE_ID] * 5


def test_prefix_embeds_are_the_training_prefix_left_padded(model, batch):
    model.eval()
    embeds, mask = model.prefix_embeds(*batch)
    audio, n_audio = model.encode(*batch)
    train_embeds, _, _ = model.training_inputs(audio, n_audio, torch.tensor([[40], [41]]), torch.tensor([1, 1]))
    P = len(model.decoder.prompt_ids)
    assert mask.tolist() == [[1] * (11 + P), [0] * 3 + [1] * (8 + P)]
    torch.testing.assert_close(embeds[0], train_embeds[0, : 11 + P])
    torch.testing.assert_close(embeds[1, 3:], train_embeds[1, : 8 + P])


def test_loss_covers_caption_and_eos_and_weight_counts_them(model, batch):
    speech, lengths = batch
    model.train()
    loss, stats, weight = model(speech, lengths, torch.tensor([[40, 41, 42], [43, -1, -1]]), torch.tensor([3, 1]))
    assert weight.item() == (3 + 1) + (1 + 1)
    assert loss.requires_grad and set(stats) == {"loss", "acc"}
    assert 0 < loss.item() < 2 * np.log(len(model.decoder.tokenizer))


def test_specaugment_runs_in_training_only(model, batch):
    speech, lengths = batch
    model.eval()
    assert torch.equal(model.encode(speech, lengths)[0], model.encode(speech, lengths)[0])
    model.train()
    torch.manual_seed(1)
    assert not torch.equal(model.encode(speech, lengths)[0], model.encode(speech, lengths)[0])


def test_state_dict_holds_exactly_the_projector_and_lora(model):
    keys = set(model.state_dict())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert keys == trainable
    assert {k.split(".")[0] for k in keys} == {"projector", "decoder"}
    lora = {k for k in keys if k.startswith("decoder.")}
    assert lora and all(".lora_A.default." in k or ".lora_B.default." in k for k in lora)
    assert {k for k in keys if k.startswith("projector.")} == {
        f"projector.linear{i}.{w}" for i in (1, 2) for w in ("weight", "bias")
    }


def test_load_state_dict_accepts_missing_frozen_weights_only(model, tiny_eat, tiny_llm):
    other = build(tiny_eat, tiny_llm)
    state = {k: v + 1 for k, v in model.state_dict().items()}
    assert other.load_state_dict(state).missing_keys == []
    assert all(torch.equal(other.state_dict()[k], v) for k, v in state.items())
    del state["projector.linear1.bias"]
    with pytest.raises(RuntimeError, match="projector.linear1.bias"):
        other.load_state_dict(state)
    with pytest.raises(RuntimeError, match="unexpected keys.*encoder.bogus"):
        other.load_state_dict({**model.state_dict(), "encoder.bogus": torch.zeros(1)})


def test_whole_model_cast_keeps_frozen_weights_in_their_dtype(tiny_eat, tiny_llm, batch):
    model = build(tiny_eat, tiny_llm, frozen_dtype="bfloat16").to(dtype=torch.float32)  # as ESPnet's main_worker
    frozen = {p.dtype for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {torch.bfloat16}
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    speech, lengths = batch
    loss, _, _ = model(speech, lengths, torch.tensor([[40, 41], [42, 43]]), torch.tensor([2, 2]))
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters() if p.requires_grad)


def test_frozen_dtype_is_one_knob_for_eat_and_llm(tiny_eat, tiny_llm):
    args = AACTask.get_parser().parse_args([])
    args.encoder_conf = {"checkpoint": str(tiny_eat)}
    args.decoder_conf = {"model_name_or_path": str(tiny_llm), "dtype": "bfloat16"}
    with pytest.raises(ConfigError, match="--frozen_dtype"):
        AACTask.build_model(args)
