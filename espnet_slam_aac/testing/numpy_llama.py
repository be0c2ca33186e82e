"""Tiny Llamas and prefixes drawn with numpy, the same under any transformers version.

The beam-search fixture of transformers 4.35.2 (``tests/fixtures/make_beam_4352_fixture.py``) is made under
4.35.2 and checked under 5.x: both sides rebuild the same models and inputs from these specs. Weights are drawn
with ``np.random.default_rng(seed)`` in float64 and cast to float32 once; parameter names are the same in both
versions, so ``load_state_dict(strict=True)`` loads them bit-exact (``weights_sha256`` pins that). Only numpy is
imported here, so the 4.35.2 script can import this module from a scratch environment.
"""

import hashlib
import math
from typing import Dict, Tuple

import numpy as np

BOS_ID, EOS_ID, PAD_ID = 1, 2, 2  # Llama's ids; SLAM-AAC passes pad = eos to generate

MODELS = {
    # peaked next-token distributions, EOS sometimes likely: hypotheses end at many different lengths
    "peaky": dict(seed=11, vocab_size=48, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_scale=6.0, eos_scale=1.6, bos_scale=1.0),
    # flatter and EOS rarer: long hypotheses, many run to max_new_tokens
    "long": dict(seed=23, vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=4, head_scale=3.0, eos_scale=0.9, bos_scale=1.0),
    # BOS often likely: the repetition penalty over the seeded BOS (4.35.2) changes the search
    "bosy": dict(seed=37, vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_scale=5.0, eos_scale=1.4, bos_scale=1.8),
}  # fmt: skip

INPUTS = {
    "padded3": dict(seed=101, lengths=[7, 12, 4], scale=1.0),  # three clips, two of them left-padded
    "even2": dict(seed=202, lengths=[9, 9], scale=1.0),  # two clips, no padding
}


def llama_config_kwargs(m: Dict) -> Dict:
    """Keyword arguments of ``transformers.LlamaConfig`` for model spec ``m`` (same meaning in 4.35.2 and 5.x)."""
    return dict(
        vocab_size=m["vocab_size"],
        hidden_size=m["hidden_size"],
        intermediate_size=m["intermediate_size"],
        num_hidden_layers=m["num_hidden_layers"],
        num_attention_heads=m["num_attention_heads"],
        num_key_value_heads=m["num_key_value_heads"],
        max_position_embeddings=512,
        rms_norm_eps=1e-6,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
        tie_word_embeddings=False,
    )


def build_weights(m: Dict) -> Dict[str, np.ndarray]:
    """The full ``LlamaForCausalLM`` state dict of model spec ``m``, as float32 arrays, drawn in a fixed order."""
    rng = np.random.default_rng(m["seed"])
    h, inter, vocab = m["hidden_size"], m["intermediate_size"], m["vocab_size"]
    heads, kv_heads = m["num_attention_heads"], m["num_key_value_heads"]
    head_dim = h // heads

    def normal(shape, std):
        return rng.standard_normal(shape) * std  # float64

    w = {"model.embed_tokens.weight": normal((vocab, h), 1.0)}
    for layer in range(m["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        w[p + "self_attn.q_proj.weight"] = normal((heads * head_dim, h), 1.0 / math.sqrt(h))
        w[p + "self_attn.k_proj.weight"] = normal((kv_heads * head_dim, h), 1.0 / math.sqrt(h))
        w[p + "self_attn.v_proj.weight"] = normal((kv_heads * head_dim, h), 1.0 / math.sqrt(h))
        w[p + "self_attn.o_proj.weight"] = normal((h, heads * head_dim), 1.0 / math.sqrt(heads * head_dim))
        w[p + "mlp.gate_proj.weight"] = normal((inter, h), 1.0 / math.sqrt(h))
        w[p + "mlp.up_proj.weight"] = normal((inter, h), 1.0 / math.sqrt(h))
        w[p + "mlp.down_proj.weight"] = normal((h, inter), 1.0 / math.sqrt(inter))
        w[p + "input_layernorm.weight"] = 1.0 + normal((h,), 0.1)
        w[p + "post_attention_layernorm.weight"] = 1.0 + normal((h,), 0.1)
    w["model.norm.weight"] = 1.0 + normal((h,), 0.1)
    head = normal((vocab, h), m["head_scale"] / math.sqrt(h))
    head[EOS_ID] *= m["eos_scale"]
    head[BOS_ID] *= m["bos_scale"]
    w["lm_head.weight"] = head
    return {k: np.ascontiguousarray(v.astype(np.float32)) for k, v in w.items()}


def build_inputs(spec: Dict, hidden_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Left-padded prefix embeddings ``(B, W, H)`` float32 (zeros where padded) and their mask ``(B, W)`` int64."""
    rng = np.random.default_rng(spec["seed"])
    lengths = spec["lengths"]
    width = max(lengths)
    embeds = rng.standard_normal((len(lengths), width, hidden_size)) * spec["scale"]
    mask = np.zeros((len(lengths), width), dtype=np.int64)
    for i, n in enumerate(lengths):
        mask[i, width - n :] = 1
        embeds[i, : width - n] = 0.0
    return np.ascontiguousarray(embeds.astype(np.float32)), mask


def weights_sha256(weights: Dict[str, np.ndarray]) -> str:
    """sha256 over (name, shape, little-endian float32 bytes) of every tensor, in name order."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        arr = np.ascontiguousarray(weights[name], dtype="<f4")
        digest.update(name.encode() + b"\0" + repr(tuple(arr.shape)).encode() + b"\0" + arr.tobytes())
    return digest.hexdigest()


def load_llama(m: Dict):
    """A ``LlamaForCausalLM`` (eval mode) holding ``build_weights(m)``, under whichever transformers is installed."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(**llama_config_kwargs(m))).eval()
    weights = build_weights(m)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    return model
