"""batch_size: with no batch size given, as many clips as the free memory holds (a fixed 8 on CPU)."""

import torch
from transformers import LlamaConfig

from espnet_slam_aac.inference.batch_size import CPU_BATCH, MAX_BATCH, auto_batch_size, clip_bytes
from espnet_slam_aac.inference.decoding import DecodingOptions, parse_beam_sizes

VICUNA = LlamaConfig(vocab_size=32000, hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                     intermediate_size=11008)  # fmt: skip
CUDA = torch.device("cuda")


def test_a_clip_costs_its_prefix_once_and_the_generated_tokens_of_each_row():
    candidates = DecodingOptions(beam_sizes=parse_beam_sizes("2..8"), max_new_tokens=200)
    per_token = 2 * 32 * 32 * 128 * 2  # K and V, 32 layers x 32 heads x 128, bf16
    kv = per_token * (128 + 35 * 200)
    assert kv < clip_bytes(VICUNA, candidates, torch.bfloat16) < 1.1 * kv
    sequential = candidates.replace(schedule="sequential")  # only the largest beam size's rows at a time
    assert clip_bytes(VICUNA, sequential, torch.bfloat16) < clip_bytes(VICUNA, candidates, torch.bfloat16) / 3
    assert clip_bytes(VICUNA, candidates, torch.float32) > clip_bytes(VICUNA, candidates, torch.bfloat16)


def test_batch_fills_the_free_gpu_memory_with_a_margin_and_stays_in_bounds():
    candidates = DecodingOptions(beam_sizes=parse_beam_sizes("2..8"), max_new_tokens=200)
    free = 64 * 2**30  # an H100 after Vicuna-7B's weights
    batch = auto_batch_size(VICUNA, candidates, torch.bfloat16, CUDA, free_bytes=free)
    assert batch * clip_bytes(VICUNA, candidates, torch.bfloat16) <= 0.8 * free
    assert (batch + 1) * clip_bytes(VICUNA, candidates, torch.bfloat16) > 0.8 * free
    assert (
        auto_batch_size(VICUNA, DecodingOptions(max_new_tokens=20), torch.bfloat16, CUDA, free_bytes=free) == MAX_BATCH
    )
    assert auto_batch_size(VICUNA, candidates, torch.bfloat16, CUDA, free_bytes=2**30) == 1
    assert auto_batch_size(VICUNA, candidates, torch.float32, torch.device("cpu")) == CPU_BATCH
