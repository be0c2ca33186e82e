import math

import numpy as np
import pytest
import torch
from espnet2.torch_utils.initialize import initialize

from espnet_slam_aac.data import audio
from espnet_slam_aac.errors import ConfigError
from espnet_slam_aac.model import frontend
from espnet_slam_aac.model.eat import EATConfig, EATModel, sincos_positions
from espnet_slam_aac.model.eat_checkpoint import save_hf_checkpoint
from espnet_slam_aac.model.encoder import EATEncoder

TINY = dict(embed_dim=32, depth=2, num_heads=2)


def random_model(config=None, seed=0):
    """A model with every weight random, LayerNorms included (so a swapped or skipped norm shows)."""
    torch.manual_seed(seed)
    model = EATModel(config or EATConfig(**TINY))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2 + (1.0 if p.dim() == 1 and p.shape[0] == model.config.embed_dim else 0))
    return model.eval()


def mae_sincos_numpy(embed_dim, rows, cols):
    """MAE's get_2d_sincos_pos_embed as EAT uses it (grid rows = time, cols = frequency), in numpy."""

    def one_axis(dim, pos):
        omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
        omega = 1.0 / 10000**omega
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid = np.meshgrid(np.arange(cols, dtype=np.float32), np.arange(rows, dtype=np.float32))  # w first
    grid = np.stack(grid, axis=0).reshape(2, 1, rows, cols)
    return np.concatenate([one_axis(embed_dim // 2, grid[0]), one_axis(embed_dim // 2, grid[1])], axis=1)


def test_sincos_table_follows_mae_formula_time_major_frequency_first():
    ours = sincos_positions(EATConfig())[0].numpy()
    reference = mae_sincos_numpy(768, 768, 8).astype(np.float32)
    assert ours.shape == (6144, 768)
    assert np.abs(ours - reference).max() <= 1e-6
    old = sincos_positions(EATConfig(max_length=64))[0].numpy()
    assert old.shape == (512, 768) and np.array_equal(old, ours[:512])
    # row t * 8 + f: the first half varies with f only, the second half with t only
    row = 8 * 5 + 3  # t = 5, f = 3
    assert np.array_equal(ours[row, :384], ours[3, :384]) and np.array_equal(ours[row, 384:], ours[40, 384:])


def reference_forward(state, config, fbank):
    """EAT's encoder written from its description (eat.md section 2) on Hugging Face keys."""
    D, H = config.embed_dim, config.num_heads
    x = torch.nn.functional.conv2d(
        fbank.unsqueeze(1), state["model.local_encoder.proj.weight"], state["model.local_encoder.proj.bias"], stride=16
    )
    x = x.flatten(2).transpose(1, 2)
    x = x + state["model.fixed_positional_encoder.positions"][:, : x.shape[1]]
    x = torch.cat([state["model.extra_tokens"].expand(x.shape[0], -1, -1), x], dim=1)

    def ln(x, name):
        return torch.nn.functional.layer_norm(x, (D,), state[f"{name}.weight"], state[f"{name}.bias"], eps=1e-6)

    def linear(x, name):
        return x @ state[f"{name}.weight"].T + state[f"{name}.bias"]

    x = ln(x, "model.pre_norm")
    B, N, _ = x.shape
    for i in range(config.depth):
        p = f"model.blocks.{i}"
        qkv = linear(x, f"{p}.attn.qkv").reshape(B, N, 3, H, D // H).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * (D // H) ** -0.5, qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)).float().softmax(dim=-1)
        a = linear((attn @ v).transpose(1, 2).reshape(B, N, D), f"{p}.attn.proj")
        x = ln(x + a, f"{p}.norm1")
        h = linear(x, f"{p}.mlp.fc1")
        h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
        x = ln(x + linear(h, f"{p}.mlp.fc2"), f"{p}.norm2")
    return x


def test_forward_matches_the_reference_computation(tmp_path):
    from safetensors.torch import load_file

    model = random_model()
    state = load_file(str(save_hf_checkpoint(model, tmp_path / "eat") / "model.safetensors"))
    fbank = torch.randn(2, 1024, 128)
    with torch.no_grad():
        ours, ref = model(fbank), reference_forward(state, model.config, fbank)
    assert ours.shape == (2, 513, 32)
    assert (ours - ref).abs().max().item() <= 1e-5


@pytest.mark.parametrize(
    "name,target_length,tokens", [("10s_16k", 1024, 513), ("30s_16k", 1024, 513), ("30s_16k", None, 1505)]
)
def test_token_counts_for_real_clips(audio_files, name, target_length, tokens):
    wave, rate = audio.load_audio(audio_files[name])
    fbank = frontend.eat_fbank(wave, rate, target_length=target_length)[None]
    encoder = EATEncoder(**TINY)
    out, lengths, states = encoder(fbank, torch.tensor([fbank.shape[1]]))
    assert out.shape == (1, tokens, 32) and lengths.tolist() == [tokens] and states is None
    assert encoder.output_size() == 32


def test_whole_clip_batch_masks_only_the_batch_padding(audio_files):
    wave, rate = audio.load_audio(audio_files["10s_16k"])
    waves = [wave[:, 0], wave[:48000, 0]]
    speech = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(w) for w in waves], batch_first=True)
    fbank, fbank_lengths = frontend.EATFbank(target_length=None)(speech, torch.tensor([160000, 48000]))
    encoder = EATEncoder(**TINY)
    tokens, lengths, _ = encoder(fbank, fbank_lengths)
    assert lengths.tolist() == [1 + 63 * 8, 1 + 19 * 8]
    for b in range(2):
        alone, _, _ = encoder(fbank[b : b + 1, : fbank_lengths[b]], fbank_lengths[b : b + 1])
        assert (tokens[b, : lengths[b]] - alone[0]).abs().max().item() <= 1e-5


def test_fixed_length_batch_equals_one_clip_at_a_time():
    encoder = EATEncoder(**TINY)
    fbank = torch.randn(3, 1024, 128)
    tokens, _, _ = encoder(fbank, torch.full((3,), 1024))
    for b in range(3):
        assert (tokens[b] - encoder(fbank[b : b + 1], torch.tensor([1024]))[0][0]).abs().max().item() <= 1e-5


def test_frozen_encoder_stays_in_eval_mode_without_gradients():
    parent = torch.nn.Module()
    parent.encoder = EATEncoder(**TINY)
    parent.train()
    assert parent.training and not parent.encoder.training and not parent.encoder.eat.blocks[0].training
    assert not any(p.requires_grad for p in parent.encoder.parameters())
    assert parent.encoder(torch.randn(1, 1024, 128), torch.tensor([1024]))[0].grad_fn is None

    trainable = EATEncoder(freeze=False, **TINY).train()
    assert trainable.eat.training
    trainable(torch.randn(1, 64, 128), torch.tensor([64]))[0].sum().backward()
    assert trainable.eat.blocks[0].attn.qkv.weight.grad is not None


def test_espnet_initialize_puts_the_checkpoint_weights_back(tmp_path):
    folder = save_hf_checkpoint(random_model(), tmp_path / "eat")
    model = torch.nn.Module()
    model.encoder = EATEncoder(checkpoint=str(folder))
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    initialize(model, "xavier_uniform")
    after = model.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_encoder_from_checkpoint_and_conflicting_size_arguments(tmp_path):
    model = random_model()
    folder = save_hf_checkpoint(model, tmp_path / "eat")
    encoder = EATEncoder(checkpoint=str(folder), embed_dim=32)
    fbank = torch.randn(1, 1024, 128)
    assert torch.equal(encoder(fbank, torch.tensor([1024]))[0], model(fbank))
    with pytest.raises(ConfigError, match="depth"):
        EATEncoder(checkpoint=str(folder), depth=12)
    with pytest.raises(ConfigError, match="embed_dim"):
        EATEncoder(checkpoint=str(folder), size="base")
    with pytest.raises(ConfigError, match="fbank bins"):
        EATEncoder(input_size=80, **TINY)
    with pytest.raises(ConfigError, match="size"):
        EATEncoder(size="huge")


def test_input_must_fit_patches_and_the_position_table():
    model = EATModel(EATConfig(max_length=4, **TINY))
    assert model(torch.randn(1, 64, 128)).shape == (1, 33, 32)
    for shape in [(1, 1000, 128), (1, 80, 128), (1, 64, 80)]:
        with pytest.raises(ConfigError, match="multiple of 16"):
            model(torch.randn(*shape))


def test_presets_have_the_published_sizes():
    with torch.device("meta"):
        base, large = EATModel(EATConfig.preset("base")), EATModel(EATConfig.preset("large"))
    assert sum(p.numel() for p in base.parameters()) == 85_254_144
    assert sum(p.numel() for p in large.parameters()) == 302_575_616
    assert EATConfig.preset("base").num_tokens(1024) == 513


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_encoder_on_cuda_matches_cpu():
    encoder = EATEncoder(embed_dim=256, depth=4, num_heads=4)
    encoder.eat.load_state_dict(random_model(encoder.eat.config).state_dict())
    fbank, lengths = torch.randn(3, 1024, 128), torch.tensor([1024, 512, 304])
    on_cpu = encoder(fbank, lengths)[0]
    conv_tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # TF32 convolutions (PyTorch's default) differ by ~1e-3
    try:
        on_cuda, token_lengths, _ = encoder.cuda()(fbank.cuda(), lengths.cuda())
    finally:
        torch.backends.cudnn.allow_tf32 = conv_tf32
    for b, n in enumerate(token_lengths.tolist()):
        assert (on_cuda[b, :n].cpu() - on_cpu[b, :n]).abs().max().item() <= 1e-4
