"""EAT (Efficient Audio Transformer, Chen et al., IJCAI 2024) in plain PyTorch.

EAT is data2vec 2.0's ViT on a (time x mel) fbank image:

    fbank (B, T, 128) -> 16x16 patches, time-major (B, N = T/16 * 8, D) -> + fixed 2-D sin-cos positions
    -> [CLS] + patches -> pre_norm -> depth x post-norm block -> all 1 + N tokens (no final norm)

where a post-norm block is ``x = norm1(x + attn(x)); x = norm2(x + mlp(x))``. Weights come from EAT's fairseq
or Hugging Face checkpoints through ``espnet_slam_aac.model.eat_checkpoint``; no fairseq needed.
"""

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from espnet_slam_aac.errors import ConfigError


@dataclass(frozen=True)
class EATConfig:
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6
    qkv_bias: bool = True
    max_length: int = 768  # time patches in the position table: 768 (122.9 s); 64 in pre-April-2024 files
    patch_size: int = 16
    mel_bins: int = 128

    def __post_init__(self):
        if self.embed_dim % self.num_heads or self.embed_dim % 4:
            raise ConfigError(f"embed_dim {self.embed_dim} must be divisible by 4 and by num_heads {self.num_heads}")
        if self.mel_bins % self.patch_size:
            raise ConfigError(f"mel_bins {self.mel_bins} must be a multiple of patch_size {self.patch_size}")
        if min(self.depth, self.max_length) < 1:
            raise ConfigError(f"depth and max_length must be positive, got {self.depth}, {self.max_length}")

    @classmethod
    def preset(cls, size: str, **overrides) -> "EATConfig":
        """``"base"`` (768-d, 12 blocks, 12 heads, 85 M) or ``"large"`` (1024-d, 24 blocks, 16 heads, 303 M)."""
        presets = {"base": {}, "large": dict(embed_dim=1024, depth=24, num_heads=16)}
        if size not in presets:
            raise ConfigError(f"EAT size must be one of {sorted(presets)}, got {size!r}")
        return cls(**{**presets[size], **overrides})

    @property
    def freq_patches(self) -> int:
        return self.mel_bins // self.patch_size

    @property
    def mlp_dim(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    def num_tokens(self, frames):
        """Tokens out for ``frames`` fbank frames (int or tensor): CLS + (frames / 16) * 8; 513 for 1024."""
        return 1 + (frames // self.patch_size) * self.freq_patches


def sincos_positions(config: EATConfig) -> torch.Tensor:
    """The fixed 2-D sin-cos table ``(1, max_length * 8, D)``, row ``t * 8 + f``.

    The first D/2 channels encode the frequency patch f, the second D/2 the time patch t; each half is
    ``[sin(p * w_k), cos(p * w_k)]`` with ``w_k = 10000 ** (-k / (D / 4))``, computed in float64 (as MAE's numpy
    helper does) and stored in float32.
    """

    def axis(dim: int, pos: torch.Tensor) -> torch.Tensor:
        omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
        angle = pos[:, None] * omega[None, :]
        return torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)

    f_count, half = config.freq_patches, config.embed_dim // 2
    t = torch.arange(config.max_length, dtype=torch.float64).repeat_interleave(f_count)
    f = torch.arange(f_count, dtype=torch.float64).repeat(config.max_length)
    return torch.cat([axis(half, f), axis(half, t)], dim=1).float().unsqueeze(0)


class EATAttention(nn.Module):
    def __init__(self, config: EATConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.qkv = nn.Linear(config.embed_dim, 3 * config.embed_dim, bias=config.qkv_bias)
        self.proj = nn.Linear(config.embed_dim, config.embed_dim)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        B, N, D = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(x.transpose(1, 2).reshape(B, N, D))


class EATMlp(nn.Module):
    def __init__(self, config: EATConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.embed_dim, config.mlp_dim)
        self.act = nn.GELU()  # exact (erf)
        self.fc2 = nn.Linear(config.mlp_dim, config.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class EATBlock(nn.Module):
    """Post-norm transformer block (data2vec's ``AltBlock`` with ``layer_norm_first=False``)."""

    def __init__(self, config: EATConfig):
        super().__init__()
        self.attn = EATAttention(config)
        self.norm1 = nn.LayerNorm(config.embed_dim, eps=config.norm_eps)
        self.mlp = EATMlp(config)
        self.norm2 = nn.LayerNorm(config.embed_dim, eps=config.norm_eps)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.norm1(x + self.attn(x, mask))
        return self.norm2(x + self.mlp(x))


class EATModel(nn.Module):
    """The EAT encoder: normalized fbank ``(B, T, 128)``, T a multiple of 16 -> tokens ``(B, 1 + T/16*8, D)``."""

    def __init__(self, config: EATConfig):
        super().__init__()
        self.config = config
        D = config.embed_dim
        self.patch_embed = nn.Conv2d(1, D, kernel_size=config.patch_size, stride=config.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.register_buffer("positions", sincos_positions(config), persistent=False)
        self.pre_norm = nn.LayerNorm(D, eps=config.norm_eps)
        self.blocks = nn.ModuleList(EATBlock(config) for _ in range(config.depth))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Random weights (ViT-style) for building without a checkpoint."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def embed_patches(self, fbank: torch.Tensor) -> torch.Tensor:
        """(B, T, 128) -> (B, N, D), token t * 8 + f: the stride-16 convolution, computed as one matrix product
        over non-overlapping 16x16 patches (so it follows the matmul precision, full float32 by default, and not
        cuDNN's TF32 default)."""
        B, T, mel_bins = fbank.shape
        p = self.config.patch_size
        patches = fbank.reshape(B, T // p, p, mel_bins // p, p).permute(0, 1, 3, 2, 4).reshape(B, -1, p * p)
        weight = self.patch_embed.weight
        return F.linear(patches.to(weight.dtype), weight.reshape(weight.shape[0], -1), self.patch_embed.bias)

    def forward(self, fbank: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``lengths`` (frames per row) matter only when a row is shorter than the batch: the batch padding
        beyond it is then masked out of attention, so the row gets what it would get alone. Rows as long as
        the batch (every row with a fixed ``target_length``) attend to everything, padding included, as EAT does.
        """
        B, T, mel_bins = fbank.shape
        c = self.config
        if mel_bins != c.mel_bins or T % c.patch_size or T // c.patch_size > c.max_length:
            raise ConfigError(
                f"EAT takes fbank (B, T, {c.mel_bins}) with T a multiple of {c.patch_size} and at most "
                f"{c.max_length * c.patch_size} frames (its position table); got {tuple(fbank.shape)}"
            )
        x = self.embed_patches(fbank)
        x = x + self.positions[:, : x.shape[1]].to(x.dtype)
        x = torch.cat([self.cls_token.expand(B, -1, -1).to(x.dtype), x], dim=1)
        x = self.pre_norm(x)
        mask = None
        if lengths is not None and bool((lengths < T).any()):
            valid = torch.arange(x.shape[1], device=x.device)[None, :] < c.num_tokens(lengths.to(x.device))[:, None]
            mask = valid[:, None, None, :]  # (B, 1, 1, N): True = attend
        for block in self.blocks:
            x = block(x, mask)
        return x
