"""How many clips to decode at once when the user names no batch size: as many as the device's free memory holds.

A clip's decoding memory is its prefix KV (one copy per clip, :mod:`~espnet_slam_aac.inference.shared_prefix`),
the generated KV of its rows (``sum(beam_sizes)`` rows in the combined schedule, the largest beam size in the
sequential one) at ``max_new_tokens``, the logits of its rows (float32, a few copies in the search) and one layer's
activations. On a GPU the batch is the free memory (``torch.cuda.mem_get_info``, after the model is loaded) over
that, with a margin; on CPU, where a larger batch buys no speed and memory is rarely the limit, it is
:data:`CPU_BATCH`.
"""

from typing import Optional

import torch

CPU_BATCH = 8
MAX_BATCH = 64
PREFIX_TOKENS = 128  # SLAM-AAC: 102 audio embeddings (10 s) + the prompt, rounded up


def clip_bytes(config, options, dtype: torch.dtype, prefix_tokens: int = PREFIX_TOKENS) -> int:
    """Decoding memory of one clip (bytes) for an LM ``config`` and ``DecodingOptions``."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    per_token = 2 * config.num_hidden_layers * kv_heads * head_dim * itemsize
    rows = sum(options.beam_sizes) if options.schedule == "combined" else max(options.beam_sizes)
    kv = per_token * (prefix_tokens + rows * options.max_new_tokens)
    logits = 4 * rows * config.vocab_size * 4
    activations = rows * (4 * config.hidden_size + 3 * config.intermediate_size) * itemsize
    return kv + logits + activations


def auto_batch_size(
    config, options, dtype: torch.dtype, device: torch.device, free_bytes: Optional[int] = None, margin: float = 0.8
) -> int:
    """Clips per batch that fit ``margin`` of the free memory of ``device`` (:data:`CPU_BATCH` on CPU)."""
    if device.type != "cuda" and free_bytes is None:
        return CPU_BATCH
    if free_bytes is None:
        free_bytes, _ = torch.cuda.mem_get_info(device)
    return max(1, min(MAX_BATCH, int(free_bytes * margin) // clip_bytes(config, options, dtype)))
