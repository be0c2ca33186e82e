"""The ESPnet encoder ``eat``: EAT (``model/eat.py``) built from a checkpoint (``model/eat_checkpoint.py``)."""

from contextlib import nullcontext
from typing import Optional, Tuple

import torch
from espnet2.asr.encoder.abs_encoder import AbsEncoder

from espnet_slam_aac.errors import ConfigError
from espnet_slam_aac.model.eat import EATConfig, EATModel
from espnet_slam_aac.model.eat_checkpoint import load_eat_model, load_eat_state_dict


class EATEncoder(AbsEncoder):
    """ESPnet encoder ``eat``: EAT's fbank (from the ``eat_fbank`` front end) -> all tokens, CLS first.

    Args:
        input_size: fbank bins from the front end (128).
        checkpoint: fairseq ``.pt`` (pre-training or fine-tuned), Hugging Face folder (config.json +
            model.safetensors), or Hub id such as ``worstchan/EAT-base_epoch30_finetune_AS2M``. The size comes
            from the checkpoint. ``None`` builds random weights of ``size`` (tests, toy recipes).
        freeze: no gradients, and eval mode even when the parent model calls ``.train()`` (SLAM-AAC trains with
            EAT frozen).
        size, embed_dim, depth, num_heads, max_length: architecture when building without a checkpoint
            (``size`` preset ``"base"`` or ``"large"``, then overrides); with a checkpoint they must be unset
            or agree with it.
    """

    def __init__(
        self,
        input_size: int = 128,
        checkpoint: Optional[str] = None,
        freeze: bool = True,
        size: Optional[str] = None,
        embed_dim: Optional[int] = None,
        depth: Optional[int] = None,
        num_heads: Optional[int] = None,
        max_length: Optional[int] = None,
    ):
        super().__init__()
        overrides = dict(embed_dim=embed_dim, depth=depth, num_heads=num_heads, max_length=max_length)
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if checkpoint is not None:
            self.eat = load_eat_model(checkpoint)
            config = self.eat.config
            if size is not None:
                preset = EATConfig.preset(size)
                sized = dict(embed_dim=preset.embed_dim, depth=preset.depth, num_heads=preset.num_heads)
                overrides = {**sized, **overrides}
            diff = {k: v for k, v in overrides.items() if getattr(config, k) != v}
            if diff:
                raise ConfigError(f"encoder_conf asks for {diff} but checkpoint {checkpoint} holds {config}")
        else:
            self.eat = EATModel(EATConfig.preset(size or "base", **overrides))
        if input_size != self.eat.config.mel_bins:
            raise ConfigError(f"EAT takes {self.eat.config.mel_bins} fbank bins, the front end gives {input_size}")
        self.checkpoint = checkpoint
        self.freeze = freeze
        if freeze:
            self.eat.requires_grad_(False)
            self.eat.eval()

    def output_size(self) -> int:
        return self.eat.config.embed_dim

    def train(self, mode: bool = True) -> "EATEncoder":
        return super().train(mode and not self.freeze)

    def reload_pretrained_parameters(self) -> None:
        """Called by ESPnet's ``initialize`` after a global ``--init``: put the checkpoint's weights back."""
        if self.checkpoint is not None:
            self.eat.load_state_dict(load_eat_state_dict(self.checkpoint)[1])

    def forward(
        self, xs_pad: torch.Tensor, ilens: torch.Tensor, prev_states: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor, None]:
        with torch.no_grad() if self.freeze else nullcontext():
            tokens = self.eat(xs_pad, ilens)
        return tokens, self.eat.config.num_tokens(ilens), None
