"""One prefix per clip in memory: beam rows read their clip's prefix KV once, and keep only their own tokens.

Every beam row of a clip starts from the same prefix (audio embeddings + prompt, ~117 tokens for SLAM-AAC). The
copied cache (:mod:`~espnet_slam_aac.inference.kv_cache`) gives each row its own copy, so the combined schedule's
560 rows of 16 clips hold 560 prefixes (51 GiB at Vicuna-7B's shape). Here the prefix KV stays as prefilled, one
per clip, and each row's cache holds only the tokens it generated, in buffers that grow by doubling up to
``max_new_tokens`` and are reordered in place.

Attention of a decode step is split in two and combined exactly: the scores of a row's query against its clip's
prefix keys (one batched matmul per clip over that clip's rows, so the prefix is read once per clip) and against
its own generated keys are concatenated and normalized by one softmax; the probabilities then weight the prefix
values (again per clip) and the row's own values, and the two products are summed. This is the softmax over the
concatenated keys, computed without materializing them (an equivalent of the log-sum-exp merge of two partial
softmaxes). It runs as a transformers attention function (``AttentionInterface``), switched on only for the
decode steps, so the model's own layers (projections, RoPE, LoRA) compute everything else.
"""

import contextlib
from typing import Iterator, List, Optional, Tuple

import torch
from transformers import AttentionInterface, DynamicCache
from transformers.cache_utils import Cache, DynamicLayer

from espnet_slam_aac.inference.kv_cache import prefill_prefix

ATTENTION = "slam_aac_shared_prefix"


class GeneratedKVLayer(DynamicLayer):
    """One layer's keys and values of the generated tokens of every row, written in place.

    Buffers grow by doubling (from ``CHUNK`` tokens) up to ``capacity``, so a decode whose captions end after 20
    tokens does not hold ``max_new_tokens`` = 200 of them for every row; a step never reallocates otherwise.
    """

    CHUNK = 32

    def __init__(self, rows: int, heads: int, dim: int, capacity: int, like: torch.Tensor):
        super().__init__()
        self.capacity = capacity
        size = min(capacity, self.CHUNK)
        self.keys = like.new_empty(rows, heads, size, dim)
        self.values = like.new_empty(rows, heads, size, dim)
        self.length = 0
        self.device, self.is_initialized = like.device, True

    def _grow(self, needed: int) -> None:
        size = min(self.capacity, max(needed, 2 * self.keys.shape[2]))
        for name in ("keys", "values"):
            old = getattr(self, name)
            new = old.new_empty(old.shape[0], old.shape[1], size, old.shape[3])
            new[:, :, : self.length] = old[:, :, : self.length]
            setattr(self, name, new)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        end = self.length + key_states.shape[-2]
        if end > self.keys.shape[2]:
            self._grow(end)
        self.keys[:, :, self.length : end] = key_states
        self.values[:, :, self.length : end] = value_states
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def get_seq_length(self) -> int:
        return self.length

    def get_mask_sizes(self, query_length: int) -> Tuple[int, int]:
        return self.length + query_length, 0

    def reorder(self, source_rows: torch.Tensor) -> None:
        if source_rows.shape[0] == self.keys.shape[0]:  # beams moved: copy the generated part in place
            self.keys[:, :, : self.length] = self.keys[source_rows, :, : self.length]
            self.values[:, :, : self.length] = self.values[source_rows, :, : self.length]
        else:  # rows dropped (finished clips)
            self.keys, self.values = self.keys[source_rows], self.values[source_rows]


class StaticKVLayer(DynamicLayer):
    """The generated tokens of every row at their full capacity, written at the step counter ``write_at`` (a
    tensor): every decode step has the same shapes and no Python-int slicing, as a CUDA graph needs. Attention
    masks the slots not written yet (:meth:`SharedPrefixCache.attend`)."""

    def __init__(self, rows: int, heads: int, dim: int, capacity: int, like: torch.Tensor, write_at: torch.Tensor):
        super().__init__()
        self.keys = like.new_zeros(rows, heads, capacity, dim)
        self.values = like.new_zeros(rows, heads, capacity, dim)
        self.write_at = write_at
        self.device, self.is_initialized = like.device, True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        self.keys.index_copy_(2, self.write_at, key_states)
        self.values.index_copy_(2, self.write_at, value_states)
        return self.keys, self.values

    def reorder(self, source_rows: torch.Tensor) -> None:
        if source_rows.shape[0] != self.keys.shape[0]:
            raise RuntimeError("a static KV cache keeps its rows: decode with sync_every >= max_new_tokens")
        self.keys.copy_(self.keys.index_select(0, source_rows))
        self.values.copy_(self.values.index_select(0, source_rows))


class SharedPrefixCache:
    """Owns the KV cache of a decode: the prefix of each clip once, and the generated tokens of each row.

    Same contract as :class:`~espnet_slam_aac.inference.kv_cache.KVCache` (``prefill``, ``fork``, ``step``,
    ``reorder``, ``release_prefix``), so :func:`~espnet_slam_aac.inference.decoding.decode` drives either.
    ``static=True`` keeps every row to the end and its generated KV at full capacity (:class:`StaticKVLayer`), so
    each step has the same shapes; ``compile=True`` (GPU) then runs the step through ``torch.compile`` with CUDA
    graphs (``mode="reduce-overhead"``).
    """

    def __init__(self, llm: torch.nn.Module, static: bool = False, compile: bool = False):
        self.llm = llm
        self.static = static or compile
        self.write_at: Optional[torch.Tensor] = None  # static: the slot of the next generated token, (1,) long
        self._forward = torch.compile(self._llm_step, mode="reduce-overhead") if compile else self._llm_step
        self.prefix: List[Tuple[torch.Tensor, torch.Tensor]] = []  # per layer (B, kv heads, P, dim)
        self.prefix_keep: Optional[torch.Tensor] = None  # (B, P) bool; None when no clip is padded
        self.prefix_next_pos: Optional[torch.Tensor] = None
        self.cache: Optional[Cache] = None
        self.row_clip: Optional[torch.Tensor] = None
        self.slots = 0  # rows per clip in the padded per-clip layout (the most any clip had at the fork)
        self.position: Optional[torch.Tensor] = None  # (R,) row -> its place in the padded layout
        self.generated = 0

    @torch.inference_mode()
    def prefill(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Run the left-padded prefix once; return the logits of the first generated token, (B, V)."""
        cache = DynamicCache(config=self.llm.config)
        logits, mask, self.prefix_next_pos = prefill_prefix(self.llm, inputs_embeds, attention_mask, cache)
        self.prefix = [(layer.keys, layer.values) for layer in cache.layers]
        self.prefix_keep = None if mask is None else mask.bool()
        return logits

    def fork(self, row_clip: torch.Tensor, max_new_tokens: int) -> None:
        """Start the generated part of ``len(row_clip)`` rows; row ``r`` reads the prefix of clip ``row_clip[r]``."""
        keys = self.prefix[0][0]
        rows, (_, heads, _, dim) = len(row_clip), keys.shape
        if self.static:
            self.write_at = torch.zeros(1, dtype=torch.long, device=keys.device)
            layers = [StaticKVLayer(rows, heads, dim, max_new_tokens, keys, self.write_at) for _ in self.prefix]
        else:
            layers = [GeneratedKVLayer(rows, heads, dim, max_new_tokens, keys) for _ in self.prefix]
        self.cache = Cache(layers=layers)
        self.row_clip = row_clip.to(keys.device)
        self.slots = int(torch.bincount(self.row_clip).max())
        self._place_rows()
        self.generated = 0

    def _place_rows(self) -> None:
        """Each row's place in the padded per-clip layout: clip * slots + its rank among its clip's rows."""
        onehot = torch.nn.functional.one_hot(self.row_clip, len(self.prefix_next_pos))
        rank = (onehot.cumsum(0) * onehot).sum(-1) - 1
        self.position = self.row_clip * self.slots + rank

    def release_prefix(self) -> None:
        self.prefix = []

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row; return the next-token logits, (R, V)."""
        step = self.write_at if self.static else self.generated
        positions = (self.prefix_next_pos.index_select(0, self.row_clip) + step)[:, None]
        with attention_implementation(self.llm, ATTENTION):
            logits = self._forward(tokens[:, None], positions)
        self.generated += 1
        if self.static:
            self.write_at += 1
        return logits

    def _llm_step(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        out = self.llm(input_ids=tokens, position_ids=positions, cache=self.cache, use_cache=True, shared_prefix=self)
        return out.logits[:, -1, :]

    def reorder(self, source_rows: torch.Tensor) -> None:
        """Row ``r`` becomes old row ``source_rows[r]``, a row of the same clip."""
        source_rows = source_rows.to(self.row_clip.device)
        for layer in self.cache.layers:
            layer.reorder(source_rows)
        if not self.static:  # static rows stay where they are: beams move within their clip's rows
            self.row_clip = self.row_clip.index_select(0, source_rows)
            self._place_rows()

    def attend(self, layer: int, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scaling: float):
        """Attention of one query per row over its clip's prefix and its own ``keys``/``values``.

        ``query`` (R, H, 1, D), ``keys``/``values`` (R, Hkv, G, D) -> (R, 1, H, D), as transformers' attention
        functions return it.
        """
        prefix_keys, prefix_values = self.prefix[layer]
        clips, kv_heads, length, dim = prefix_keys.shape
        rows, heads, groups = query.shape[0], query.shape[1], query.shape[1] // kv_heads
        slots = self.slots
        q = query[:, :, 0, :]

        def per_clip(x: torch.Tensor) -> torch.Tensor:  # (R, H, X) -> (B, Hkv, slots * groups, X)
            padded = x.new_zeros(clips * slots, heads, x.shape[-1]).index_copy_(0, self.position, x)
            padded = padded.view(clips, slots, kv_heads, groups, x.shape[-1]).transpose(1, 2)
            return padded.reshape(clips, kv_heads, slots * groups, x.shape[-1])

        def per_row(x: torch.Tensor) -> torch.Tensor:  # (B, Hkv, slots * groups, X) -> (R, H, X)
            x = x.view(clips, kv_heads, slots, groups, x.shape[-1]).transpose(1, 2)
            return x.reshape(clips * slots, heads, x.shape[-1]).index_select(0, self.position)

        prefix_scores = per_row(torch.matmul(per_clip(q), prefix_keys.transpose(-1, -2)))
        if self.prefix_keep is not None:
            keep = self.prefix_keep.index_select(0, self.row_clip)[:, None, :]
            prefix_scores = prefix_scores.masked_fill(~keep, float("-inf"))
        own_scores = torch.matmul(q.view(rows, kv_heads, groups, dim), keys.transpose(-1, -2))
        if self.static:  # slots after this step's token are not written yet
            unwritten = torch.arange(keys.shape[2], device=keys.device) > self.write_at
            own_scores = own_scores.masked_fill(unwritten, float("-inf"))
        scores = torch.cat([prefix_scores, own_scores.reshape(rows, heads, -1)], dim=-1) * scaling
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
        prefix_probs, own_probs = probs.split([length, probs.shape[-1] - length], dim=-1)
        out = per_row(torch.matmul(per_clip(prefix_probs), prefix_values))
        out = out + torch.matmul(own_probs.reshape(rows, kv_heads, groups, -1), values).reshape(rows, heads, dim)
        return out[:, None]


def shared_prefix_attention(module, query, key, value, attention_mask, scaling=None, shared_prefix=None, **kwargs):
    """transformers attention function of the decode steps (see :meth:`SharedPrefixCache.attend`)."""
    scaling = module.head_dim**-0.5 if scaling is None else scaling
    return shared_prefix.attend(module.layer_idx, query, key, value, scaling), None


AttentionInterface.register(ATTENTION, shared_prefix_attention)


@contextlib.contextmanager
def attention_implementation(llm: torch.nn.Module, name: str) -> Iterator[None]:
    """Run the LM's attention layers with the registered attention function ``name``, then restore the old one."""
    config = llm.config
    old = config._attn_implementation
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = old
