"""The LM's KV cache during decoding: the prefix prefilled once, forked into beam rows, stepped and reordered.

:class:`KVCache` owns it; its rows live in :class:`BeamKVLayer` buffers, allocated once at their final length, where
a beam reorder moves only the generated tokens (transformers' beam search copies and regrows the whole cache at
every step). Every row holds a copy of its clip's prefix: ``decode(prefix="copied")``, kept to compare with the
default, :mod:`~espnet_slam_aac.inference.shared_prefix` (one prefix per clip). :func:`prefill_prefix` serves both.
"""

import inspect
from typing import List, Optional, Tuple

import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer


class BeamKVLayer(DynamicLayer):
    """One layer's keys and values for beam rows, allocated at their final length and written in place.

    All rows of a clip share its prefix, and a beam reorder only moves rows within a clip, so a reorder copies the
    generated part alone (transformers' beam search copies and regrows the whole cache at every step).
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, capacity: int):
        super().__init__()
        rows, heads, self.prefix, dim = keys.shape
        self.keys = keys.new_empty(rows, heads, capacity, dim)
        self.values = values.new_empty(rows, values.shape[1], capacity, values.shape[-1])
        self.keys[:, :, : self.prefix] = keys
        self.values[:, :, : self.prefix] = values
        self.length = self.prefix
        self.device, self.is_initialized = keys.device, True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        end = self.length + key_states.shape[-2]
        self.keys[:, :, self.length : end] = key_states
        self.values[:, :, self.length : end] = value_states
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def get_seq_length(self) -> int:
        return self.length

    def get_mask_sizes(self, query_length: int) -> Tuple[int, int]:
        return self.length + query_length, 0

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        if beam_idx.shape[0] == self.keys.shape[0]:  # beams moved within their clips: the prefix stays
            generated = slice(self.prefix, self.length)
            self.keys[:, :, generated] = self.keys[beam_idx, :, generated]
            self.values[:, :, generated] = self.values[beam_idx, :, generated]
        else:  # clips dropped
            self.keys, self.values = self.keys[beam_idx], self.values[beam_idx]


@torch.inference_mode()
def prefill_prefix(
    llm: torch.nn.Module, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, cache: Cache
) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
    """Run a left-padded prefix batch into ``cache``. Returns the logits of the first generated token (B, V), the
    padding mask (B, L) long (None when no clip is padded) and the position of each clip's first generated token."""
    mask = attention_mask.long()
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    mask = None if bool((mask == 1).all()) else mask
    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm  # a peft model forwards the kwarg
    extra = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(base.forward).parameters else {}
    out = llm(
        inputs_embeds=inputs_embeds.contiguous(),
        attention_mask=mask,
        position_ids=positions,
        cache=cache,
        use_cache=True,
        **extra,
    )
    return out.logits[:, -1, :], mask, positions[:, -1] + 1


class KVCache:
    """Owns the LM's KV cache: the prefix prefilled once, forked into beam rows, stepped and reordered.

    Rows of the working cache map to clips through ``row_clip``; the padding mask and positions of a row are those
    of its clip, so forked rows of different clips and beam sizes decode side by side in one LM call.
    """

    def __init__(self, llm: torch.nn.Module):
        self.llm = llm
        self.prefix: List[Tuple[torch.Tensor, torch.Tensor]] = []
        self.prefix_mask: Optional[torch.Tensor] = None  # (B, L) long; None when no clip is padded
        self.prefix_next_pos: Optional[torch.Tensor] = None  # (B,) position of the first generated token
        self.cache = None
        self.row_clip: Optional[torch.Tensor] = None
        self.generated = 0

    @torch.inference_mode()
    def prefill(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Run the left-padded prefix once; return the logits of the first generated token, (B, V)."""
        cache = DynamicCache(config=self.llm.config)
        logits, self.prefix_mask, self.prefix_next_pos = prefill_prefix(self.llm, inputs_embeds, attention_mask, cache)
        self.prefix = [(layer.keys, layer.values) for layer in cache.layers]
        return logits

    def fork(self, row_clip: torch.Tensor, max_new_tokens: int) -> None:
        """Start a working cache whose row ``r`` is a copy of the prefix of clip ``row_clip[r]``."""
        idx = row_clip.to(self.prefix[0][0].device)
        capacity = self.prefix[0][0].shape[-2] + max_new_tokens
        self.cache = Cache(layers=[BeamKVLayer(k[idx], v[idx], capacity) for k, v in self.prefix])
        self.row_clip = row_clip
        self.generated = 0

    def release_prefix(self) -> None:
        self.prefix = []

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row; return the next-token logits, (R, V)."""
        rows = tokens.shape[0]
        mask = None
        if self.prefix_mask is not None:
            prefix = self.prefix_mask.index_select(0, self.row_clip)
            mask = torch.cat([prefix, prefix.new_ones(rows, self.generated + 1)], dim=1)
        positions = (self.prefix_next_pos.index_select(0, self.row_clip) + self.generated)[:, None]
        out = self.llm(
            input_ids=tokens[:, None], attention_mask=mask, position_ids=positions, cache=self.cache, use_cache=True
        )
        self.cache = out.cache
        self.generated += 1
        return out.logits[:, -1, :]

    def reorder(self, source_rows: torch.Tensor) -> None:
        """Row ``r`` of the cache becomes old row ``source_rows[r]``, a row of the same clip (beam reordering,
        dropping finished clips)."""
        self.cache.reorder_cache(source_rows)
        self.row_clip = self.row_clip.index_select(0, source_rows.to(self.row_clip.device))
