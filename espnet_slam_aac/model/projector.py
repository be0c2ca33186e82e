"""Projectors: encoder tokens -> LLM input embeddings.

``linear`` is SLAM-LLM's ``EncoderProjectorConcat``: stack ``k`` consecutive tokens (dropping the trailing
``T mod k``), then a 2-layer MLP. With EAT-base and Vicuna-7B (k = 5): 513 tokens -> 102 embeddings of 4096,
3840 -> 2048 -> 4096, 16,259,072 parameters. Its parameter names (``linear1``, ``linear2``) are upstream's.
"""

from abc import ABC, abstractmethod
from typing import Tuple

import torch
from torch import nn

from espnet_slam_aac.errors import ConfigError


class AbsProjector(nn.Module, ABC):
    """``forward(tokens (B, T, D_enc), lengths (B,)) -> (embeddings (B, T', D_llm), lengths (B,))``."""

    @abstractmethod
    def output_size(self) -> int:
        raise NotImplementedError

    @abstractmethod
    def forward(self, xs: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class LinearProjector(AbsProjector):
    """Projector ``linear``: stack ``downsample_rate`` tokens -> Linear -> ReLU -> Linear.

    Args:
        input_size: encoder token size (set by the task from the encoder).
        output_size: LLM hidden size (set by the task from the decoder).
        downsample_rate: tokens stacked into one embedding (5 in SLAM-AAC).
        hidden_size: width of the hidden layer (2048 in SLAM-AAC).

    Row ``b`` keeps ``lengths[b] // downsample_rate`` embeddings: the group that would straddle the end of its
    tokens is dropped, as upstream drops the trailing ``T mod k`` tokens of its fixed-length batch.
    """

    def __init__(self, input_size: int, output_size: int, downsample_rate: int = 5, hidden_size: int = 2048):
        super().__init__()
        if min(input_size, output_size, downsample_rate, hidden_size) < 1:
            raise ConfigError(
                "projector sizes must be positive: "
                f"input_size={input_size}, output_size={output_size}, "
                f"downsample_rate={downsample_rate}, hidden_size={hidden_size}"
            )
        self.downsample_rate = downsample_rate
        self.linear1 = nn.Linear(input_size * downsample_rate, hidden_size)
        self.relu = nn.ReLU()
        self.linear2 = nn.Linear(hidden_size, output_size)

    def output_size(self) -> int:
        return self.linear2.out_features

    def forward(self, xs: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        B, T, D = xs.shape
        k = self.downsample_rate
        if T < k:
            raise ValueError(f"the projector stacks {k} tokens but the encoder gave only {T}")
        xs = xs[:, : T - T % k].reshape(B, T // k, D * k).to(self.linear1.weight.dtype)
        return self.linear2(self.relu(self.linear1(xs))), torch.div(lengths, k, rounding_mode="floor")
