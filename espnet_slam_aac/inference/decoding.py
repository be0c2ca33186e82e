"""n-best beam search over a Hugging Face causal LM, from prefix embeddings, with one prefill for every beam size.

SLAM-AAC's candidate set for CLAP-Refine is the top-1 caption of each beam size 2..8. Upstream decodes the set 7
times, each time re-encoding the audio and prefilling ``num_beams`` copies of the prompt. Here the prefix (audio
embeddings + prompt) is prefilled **once per clip**; each beam size then starts from copies of that KV cache.

Three parts, as in openai/whisper's ``decoding.py``:

- :class:`DecodingOptions`: every setting, read from the decode YAML;
- :class:`KVCache`: the one place that owns the LM's KV cache (prefill, fork per beam, one step, reorder); its
  rows live in :class:`BeamKVLayer` buffers, allocated once, where a beam reorder moves only generated tokens;
- :class:`BeamSearch`: one beam size over a batch of clips, with an ``update(logits) -> source rows`` /
  ``finalize() -> n-best`` contract. Its arithmetic is transformers' ``GenerationMixin._beam_search`` (5.x)
  step for step (top-2N continuations, finished beams kept by length-normalized score, the early-stopping
  heuristic, -1e9 masking), so its captions equal ``generate(inputs_embeds=..., num_beams=N)`` per clip.

:func:`decode` ties them together: ``schedule="combined"`` runs every beam size of a batch as one search over
``B * sum(beam_sizes)`` rows (one LM call per step); ``"sequential"`` runs one beam size after another, each forked
from the shared prefill (less memory, more LM calls). A clip whose search can no longer change is dropped from the
batch. Beam size 1 is greedy search, as ``generate(num_beams=1)``.
"""

import dataclasses
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
import yaml
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer
from transformers.generation.logits_process import (
    LogitsProcessorList,
    MinLengthLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
)

from espnet_slam_aac.errors import ConfigError

NEG = -1.0e9  # transformers' "impossible" score; kept identical so that ties and comparisons match it exactly

SCHEDULES = ("combined", "sequential")


@dataclass(frozen=True)
class DecodingOptions:
    """How captions are searched for. The defaults are the reference's plain decode (beam 4)."""

    beam_sizes: Tuple[int, ...] = (4,)  # each beam size contributes its top-``nbest`` to the candidate set
    nbest: int = 1  # hypotheses kept per beam size (``num_return_sequences``); at most the smallest beam size
    text_beam_size: Optional[int] = None  # whose top-1 is the 1-best ``text``; None: 4 if decoded, else the first
    max_new_tokens: int = 200
    min_new_tokens: int = 0  # EOS is forbidden before this many tokens (the reference's min_length=1 is a no-op)
    length_penalty: float = 1.0  # finished score = sum log p / length ** length_penalty (length counts EOS)
    repetition_penalty: float = 1.0  # transformers' CTRL-style penalty over the generated tokens
    early_stopping: Union[bool, str] = False  # transformers' meaning: False (heuristic), True, or "never"
    schedule: str = "combined"  # "combined": all beam sizes in one search; "sequential": one after another

    def __post_init__(self):
        beams = tuple(int(b) for b in ([self.beam_sizes] if isinstance(self.beam_sizes, int) else self.beam_sizes))
        object.__setattr__(self, "beam_sizes", beams)
        if not beams or min(beams) < 1 or len(set(beams)) != len(beams):
            raise ConfigError(f"beam_sizes must be distinct positive integers, got {list(beams)}")
        if not 1 <= self.nbest <= min(beams):
            raise ConfigError(f"nbest must be between 1 and the smallest beam size {min(beams)}, got {self.nbest}")
        if self.text_beam_size is None:
            object.__setattr__(self, "text_beam_size", 4 if 4 in beams else beams[0])
        if self.text_beam_size not in beams:
            raise ConfigError(f"text_beam_size {self.text_beam_size} is not one of beam_sizes {list(beams)}")
        if self.max_new_tokens < 1 or not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ConfigError(
                f"need 0 <= min_new_tokens <= max_new_tokens and max_new_tokens >= 1, "
                f"got {self.min_new_tokens} and {self.max_new_tokens}"
            )
        if self.repetition_penalty <= 0:
            raise ConfigError(f"repetition_penalty must be positive, got {self.repetition_penalty}")
        if self.early_stopping not in (True, False, "never"):
            raise ConfigError(f"early_stopping must be true, false or 'never', got {self.early_stopping!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")

    @classmethod
    def from_dict(cls, values: Dict, where: str = "decoding options") -> "DecodingOptions":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown option(s) {unknown}; known options are {sorted(known)}")
        values = dict(values)
        if "beam_sizes" in values:
            values["beam_sizes"] = parse_beam_sizes(values["beam_sizes"])
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: Union[str, Path], **overrides) -> "DecodingOptions":
        """Read a decode YAML (keys = the fields above); ``overrides`` that are not None win over the file."""
        path = Path(path)
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"cannot read decode config {path}: {err}") from err
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: a decode config is a mapping of option: value, got {type(values).__name__}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(values, where=str(path))

    def replace(self, **changes) -> "DecodingOptions":
        return dataclasses.replace(self, **changes)


def parse_beam_sizes(spec: Union[int, str, Sequence[int]]) -> Tuple[int, ...]:
    """``4``, ``"2..8"``, ``"2,4,8"``, ``[2, 3]`` -> a tuple of ints."""
    if isinstance(spec, int):
        return (spec,)
    if isinstance(spec, str):
        out: List[int] = []
        for part in spec.replace(" ", "").split(","):
            try:
                if ".." in part:
                    lo, hi = part.split("..")
                    out.extend(range(int(lo), int(hi) + 1))
                elif part:
                    out.append(int(part))
            except ValueError:
                raise ConfigError(f"beam sizes {spec!r}: write them as '4', '2..8' or '2,4,8'") from None
        return tuple(out)
    return tuple(int(b) for b in spec)


@dataclass
class Hypothesis:
    """One finished caption of one beam size, as token ids (EOS excluded)."""

    tokens: List[int]
    logprob: float  # sum of the (processed) token log-probabilities, EOS included
    length: int  # generated tokens the log-probability covers (caption + EOS if it ended with EOS)
    score: float  # logprob / length ** length_penalty: what the beam search ranked by
    beam_size: int
    rank: int  # 0 = the best of its beam size


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


class KVCache:
    """Owns the LM's KV cache: the prefix prefilled once, forked into beam rows, stepped and reordered.

    Rows of the working cache map to clips through ``row_clip``; the padding mask and positions of a row are those
    of its clip, so forked rows of different clips and beam sizes decode side by side in one LM call.
    """

    def __init__(self, llm: torch.nn.Module):
        self.llm = llm
        base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm  # a peft model forwards the kwarg
        self.logits_to_keep = "logits_to_keep" in inspect.signature(base.forward).parameters
        self.prefix: List[Tuple[torch.Tensor, torch.Tensor]] = []
        self.prefix_mask: Optional[torch.Tensor] = None  # (B, L) long; None when no clip is padded
        self.prefix_next_pos: Optional[torch.Tensor] = None  # (B,) position of the first generated token
        self.cache = None
        self.row_clip: Optional[torch.Tensor] = None
        self.generated = 0

    @torch.inference_mode()
    def prefill(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Run the left-padded prefix once; return the logits of the first generated token, (B, V)."""
        mask = attention_mask.long()
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        self.prefix_mask = None if bool((mask == 1).all()) else mask
        self.prefix_next_pos = positions[:, -1] + 1
        cache = DynamicCache(config=self.llm.config)
        extra = {"logits_to_keep": 1} if self.logits_to_keep else {}
        out = self.llm(
            inputs_embeds=inputs_embeds.contiguous(),
            attention_mask=self.prefix_mask,
            position_ids=positions,
            cache=cache,
            use_cache=True,
            **extra,
        )
        self.prefix = [(layer.keys, layer.values) for layer in out.cache.layers]
        return out.logits[:, -1, :]

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


class BeamSearch:
    """Beam search of one beam size over a batch of clips, with transformers' semantics.

    Contract: ``tokens`` are the next input token of every live row (clip-major, ``beam_size`` rows per live
    clip); ``update(logits)`` consumes the LM's logits for those rows and returns, for each row of the new layout,
    the old row it continues (the caller reorders the KV cache with it); ``finished`` says when no live clip is
    left; ``finalize()`` returns each clip's best ``nbest`` hypotheses.
    """

    def __init__(self, beam_size: int, clips: torch.Tensor, options: DecodingOptions, eos_ids: Sequence[int]):
        n, device = beam_size, clips.device
        self.beam_size, self.options, self.clips = n, options, clips
        self.batch = len(clips)
        self.eos = torch.tensor(list(eos_ids), dtype=torch.long, device=device)
        self.keep = max(2, 1 + len(eos_ids)) * n  # candidates considered per clip and step
        self.top_mask = torch.arange(self.keep, device=device) < n
        self.cur_len = 0
        size, total = (self.batch, n), options.max_new_tokens
        self.running_sequences = torch.full(size + (total,), int(eos_ids[0]), dtype=torch.long, device=device)
        self.sequences = self.running_sequences.clone()
        self.running_scores = torch.zeros(size, dtype=torch.float, device=device)
        self.running_scores[:, 1:] = NEG
        self.scores = torch.full(size, NEG, dtype=torch.float, device=device)
        self.logprobs = torch.full(size, NEG, dtype=torch.float, device=device)  # unnormalized twin of ``scores``
        self.lengths = torch.zeros(size, dtype=torch.long, device=device)
        self.is_finished = torch.zeros(size, dtype=torch.bool, device=device)
        self.heuristic_unsatisfied = torch.ones((self.batch, 1), dtype=torch.bool, device=device)
        self.live = torch.arange(self.batch, device=device)  # positions (in ``clips``) of the clips still searched
        self.done: Dict[int, Tuple[torch.Tensor, ...]] = {}  # position -> frozen (sequences, scores, logprobs, lengths)
        processors = LogitsProcessorList()
        if options.repetition_penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(options.repetition_penalty))
        if options.min_new_tokens > 0:
            processors.append(MinLengthLogitsProcessor(options.min_new_tokens, self.eos, device=device))
        self.processors = processors

    @property
    def finished(self) -> bool:
        return len(self.live) == 0

    @property
    def rows(self) -> int:
        return len(self.live) * self.beam_size

    @property
    def row_clips(self) -> torch.Tensor:
        """The clip (index into the caller's batch) of every live row."""
        return self.clips.index_select(0, self.live).repeat_interleave(self.beam_size)

    @property
    def tokens(self) -> torch.Tensor:
        return self.running_sequences[:, :, self.cur_len - 1].reshape(-1)

    def update(self, logits: torch.Tensor) -> torch.Tensor:
        if self.beam_size == 1:
            return self._greedy_update(logits)
        n, b, cur = self.beam_size, len(self.live), self.cur_len
        opts = self.options
        log_probs = F.log_softmax(logits.to(dtype=torch.float32, copy=True), dim=-1)
        log_probs = self.processors(self.running_sequences[:, :, :cur].reshape(b * n, cur), log_probs)
        vocab = log_probs.shape[-1]
        log_probs = (log_probs.view(b, n, vocab) + self.running_scores[:, :, None]).reshape(b, n * vocab)

        # top-K continuations over all beams of a clip (K = 2N with one EOS id)
        topk_logprobs, topk_indices = torch.topk(log_probs, k=self.keep)
        topk_beams = topk_indices // vocab
        topk_sequences = _gather(self.running_sequences, topk_beams)
        topk_sequences[:, :, cur] = topk_indices % vocab
        hits_stop = torch.isin(topk_sequences[:, :, cur], self.eos) | (cur + 1 >= opts.max_new_tokens)

        # the best N that did not stop keep running
        running_logprobs = topk_logprobs + hits_stop.to(torch.float32) * NEG
        next_indices = torch.topk(running_logprobs, k=n)[1]
        self.running_sequences = _gather(topk_sequences, next_indices)
        self.running_scores = _gather(running_logprobs, next_indices)
        source = _gather(topk_beams, next_indices) + torch.arange(b, device=log_probs.device)[:, None] * n

        # the top-N candidates that stopped enter the finished set if they beat its worst member
        just_finished = hits_stop & self.top_mask[None, :]
        finished_scores = topk_logprobs / ((cur + 1) ** opts.length_penalty)
        full = torch.all(self.is_finished, dim=-1, keepdim=True) & (opts.early_stopping is True)
        finished_scores += full.to(torch.float32) * NEG
        finished_scores += (~self.heuristic_unsatisfied).to(torch.float32) * NEG
        finished_scores += (~just_finished) * NEG
        merged_scores = torch.cat((self.scores, finished_scores), dim=1)
        best = torch.topk(merged_scores, k=n)[1]
        self.sequences = _gather(torch.cat((self.sequences, topk_sequences), dim=1), best)
        self.scores = _gather(merged_scores, best)
        self.logprobs = _gather(torch.cat((self.logprobs, topk_logprobs), dim=1), best)
        new_lengths = torch.full_like(topk_beams, cur + 1)
        self.lengths = _gather(torch.cat((self.lengths, new_lengths), dim=1), best)
        self.is_finished = _gather(torch.cat((self.is_finished, just_finished), dim=1), best)

        self.cur_len = cur + 1
        self.heuristic_unsatisfied = self._early_stop_heuristic()
        # a clip is done when its finished set can no longer change (transformers stops the batch when all are)
        done = ~self.heuristic_unsatisfied[:, 0]
        if opts.early_stopping is True:
            done |= self.is_finished.all(dim=-1)
        if bool(hits_stop.all()):
            done[:] = True
        return self._retire(done, source)

    def _greedy_update(self, logits: torch.Tensor) -> torch.Tensor:
        """Beam size 1 is transformers' greedy search (as ``generate(num_beams=1)``): processors on the logits,
        argmax, a clip stops at its first EOS."""
        b, cur = len(self.live), self.cur_len
        history = self.running_sequences[:, 0, :cur]
        scores = self.processors(history, logits.to(dtype=torch.float32, copy=True))
        tokens = scores.argmax(dim=-1)
        self.running_sequences[:, 0, cur] = tokens
        self.running_scores[:, 0] += F.log_softmax(scores, dim=-1).gather(1, tokens[:, None])[:, 0]
        done = torch.isin(tokens, self.eos) | (cur + 1 >= self.options.max_new_tokens)
        self.cur_len = cur + 1
        self.sequences, self.logprobs = self.running_sequences, self.running_scores
        self.lengths = torch.full_like(self.lengths, cur + 1)
        self.scores = self.logprobs / ((cur + 1) ** self.options.length_penalty)
        return self._retire(done, torch.arange(b, device=logits.device)[:, None])

    def _retire(self, done: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """Freeze the results of the clips that are ``done`` and drop their rows; return the surviving sources."""
        if bool(done.any()):
            for i in torch.nonzero(done)[:, 0].tolist():
                self.done[int(self.live[i])] = tuple(
                    t[i].clone() for t in (self.sequences, self.scores, self.logprobs, self.lengths)
                )
            keep = ~done
            source = source[keep]
            self.live = self.live[keep]
            for name in (
                "running_sequences",
                "running_scores",
                "sequences",
                "scores",
                "logprobs",
                "lengths",
                "is_finished",
                "heuristic_unsatisfied",
            ):
                setattr(self, name, getattr(self, name)[keep])
        return source.reshape(-1)

    def _early_stop_heuristic(self) -> torch.Tensor:
        opts = self.options
        if opts.early_stopping == "never" and opts.length_penalty > 0.0:
            best_length = opts.max_new_tokens
        else:
            best_length = self.cur_len
        best_running = self.running_scores[:, :1] / (best_length**opts.length_penalty)
        worst_finished = torch.where(self.is_finished, torch.min(self.scores, dim=1, keepdim=True)[0], NEG)
        return self.heuristic_unsatisfied & torch.any(best_running > worst_finished, dim=-1, keepdim=True)

    def finalize(self) -> List[List[Hypothesis]]:
        """Each clip's ``nbest`` best finished hypotheses, best first."""
        out = []
        for pos in range(self.batch):
            sequences, scores, logprobs, lengths = (t.tolist() for t in self.done[pos])
            hyps = []
            for rank in range(self.options.nbest):
                length = lengths[rank]
                tokens = [t for t in sequences[rank][:length] if t not in self.eos.tolist()]
                hyps.append(Hypothesis(tokens, logprobs[rank], length, scores[rank], self.beam_size, rank))
            out.append(hyps)
        return out


def _gather(tensor: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``tensor[b, indices[b, k], ...]`` (transformers' ``_gather_beams``)."""
    while indices.dim() < tensor.dim():
        indices = indices.unsqueeze(-1)
    return torch.take_along_dim(tensor, indices, dim=1)


def _run(cache: KVCache, searches: List[BeamSearch], first_logits: torch.Tensor) -> None:
    """Advance ``searches`` together until all are finished; their rows share one LM call per step."""
    cache.fork(torch.cat([s.row_clips for s in searches]), searches[0].options.max_new_tokens)
    logits = first_logits.index_select(0, cache.row_clip)
    live = list(searches)
    while live:
        sources, offset, still = [], 0, []
        for search in live:
            rows = search.rows
            sources.append(search.update(logits[offset : offset + rows]) + offset)
            offset += rows
            if not search.finished:
                still.append(search)
        live = still
        if not live:
            break
        cache.reorder(torch.cat(sources))
        logits = cache.step(torch.cat([s.tokens for s in live]))


@torch.inference_mode()
def decode(
    llm: torch.nn.Module,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    options: DecodingOptions,
    eos_token_id: Union[int, Sequence[int]],
) -> List[List[Hypothesis]]:
    """Beam-search every beam size of ``options`` for each clip of a left-padded prefix batch.

    Returns, per clip, the hypotheses grouped by beam size in the order of ``options.beam_sizes`` (``nbest`` each,
    best first). Equal to ``llm.generate(inputs_embeds=clip_prefix, num_beams=N, num_return_sequences=nbest,
    do_sample=False, ...)`` run separately for each clip and beam size.
    """
    eos_ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    cache = KVCache(llm)
    first_logits = cache.prefill(inputs_embeds, attention_mask)
    clips = torch.arange(inputs_embeds.shape[0], device=inputs_embeds.device)
    searches = [BeamSearch(n, clips, options, eos_ids) for n in options.beam_sizes]
    if options.schedule == "combined":
        _run(cache, searches, first_logits)
    else:
        for search in searches:
            _run(cache, [search], first_logits)
    cache.release_prefix()
    results = [search.finalize() for search in searches]
    return [[hyp for per_beam in results for hyp in per_beam[i]] for i in range(len(clips))]
