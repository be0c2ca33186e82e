"""n-best beam search over a Hugging Face causal LM, from prefix embeddings, with one prefill for every beam size.

SLAM-AAC's candidate set for CLAP-Refine is the top-1 caption of each beam size 2..8. Upstream decodes the set 7
times, each time re-encoding the audio and prefilling ``num_beams`` copies of the prompt. Here the prefix (audio
embeddings + prompt) is prefilled **once per clip** and kept once in memory: every beam row of every beam size
reads its clip's prefix KV and holds only the tokens it generated.

Three parts, as in openai/whisper's ``decoding.py``:

- :class:`DecodingOptions`: every setting, read from the decode YAML;
- the cache owner (prefill, fork into beam rows, one step, reorder):
  :class:`~espnet_slam_aac.inference.shared_prefix.SharedPrefixCache` (one prefix per clip; optionally static
  and compiled for a GPU) or, for comparison, :class:`~espnet_slam_aac.inference.kv_cache.KVCache` (a prefix
  copy per row);
- :class:`~espnet_slam_aac.inference.beam_search.BeamSearch`: one beam size over a batch of clips, with an
  ``update(logits) -> source rows`` / ``finalize() -> n-best`` contract, under ``stop_rule="transformers"``
  (transformers 5.x ``generate`` step for step) or ``"slam_aac"`` (transformers 4.35.2's beam search, with
  which SLAM-AAC's released scores were decoded), so its captions equal ``generate(inputs_embeds=...,
  num_beams=N)`` of that version per clip.

:func:`decode` ties them together: ``schedule="combined"`` runs every beam size of a batch as one search over
``B * sum(beam_sizes)`` rows (one LM call per step); ``"sequential"`` runs one beam size after another, each forked
from the shared prefill (less memory, more LM calls). A clip whose search can no longer change is dropped from the
batch at the next host check. Beam size 1 is greedy search, as ``generate(num_beams=1)``.
"""

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from espnet_slam_aac.errors import ConfigError
from espnet_slam_aac.inference.beam_search import BeamSearch, Hypothesis
from espnet_slam_aac.inference.kv_cache import KVCache
from espnet_slam_aac.inference.shared_prefix import SharedPrefixCache
from espnet_slam_aac.utils.config import check_keys, read_yaml

SCHEDULES = ("combined", "sequential")
STOP_RULES = ("transformers", "slam_aac")
STEPS = ("eager", "static", "compiled")
PREFIX_CACHES = {"shared": SharedPrefixCache, "copied": KVCache}


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
    # "transformers": transformers 5.x generate's beam search; "slam_aac": transformers 4.35.2's, with which
    # SLAM-AAC's released scores were decoded (it stops later and normalizes max-length hypotheses by T + 1).
    # The default stays today's generate, what a user comparing with current transformers expects; the recipes'
    # decode YAMLs choose slam_aac, the reference's.
    stop_rule: str = "transformers"
    # how a decode step runs (same results): "eager"; "static" (every row kept to the end in a full-capacity
    # cache: the same shapes every step); "compiled" (static + torch.compile with CUDA graphs: a GPU path)
    step: str = "eager"

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
        if self.stop_rule not in STOP_RULES:
            raise ConfigError(f"stop_rule must be one of {STOP_RULES}, got {self.stop_rule!r}")
        if self.step not in STEPS:
            raise ConfigError(f"step must be one of {STEPS}, got {self.step!r}")

    @classmethod
    def from_dict(cls, values: Dict, where: str = "decoding options") -> "DecodingOptions":
        check_keys(values, [f.name for f in dataclasses.fields(cls)], where)
        values = dict(values)
        if "beam_sizes" in values:
            values["beam_sizes"] = parse_beam_sizes(values["beam_sizes"])
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: Union[str, Path], **overrides) -> "DecodingOptions":
        """Read a decode YAML (keys = the fields above); ``overrides`` that are not None win over the file."""
        values = read_yaml(path, "decode config")
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


def _run(cache: Union[SharedPrefixCache, KVCache], searches: List[BeamSearch], first_logits: torch.Tensor) -> None:
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
    bos_token_id: Optional[int] = None,
    prefix: str = "shared",
    sync_every: Optional[int] = None,
) -> List[List[Hypothesis]]:
    """Beam-search every beam size of ``options`` for each clip of a left-padded prefix batch.

    Returns, per clip, the hypotheses grouped by beam size in the order of ``options.beam_sizes`` (``nbest`` each,
    best first). Equal to ``llm.generate(inputs_embeds=clip_prefix, num_beams=N, num_return_sequences=nbest,
    do_sample=False, ...)`` run separately for each clip and beam size, under the transformers version of
    ``options.stop_rule``. ``bos_token_id`` (default: the LM config's) is the token 4.35.2 seeds ``input_ids`` with,
    which its repetition penalty counts. ``prefix="shared"`` keeps one prefix KV per clip
    (:mod:`~espnet_slam_aac.inference.shared_prefix`); ``"copied"`` is the earlier cache, one copy per beam row,
    kept for the benchmark's comparison. The host checks which clips are done every ``sync_every`` steps (default:
    every step on CPU, where waiting costs nothing, every 4th on a GPU, which then runs ahead); the results are
    the same, finished clips are frozen on the device until their rows are dropped. ``options.step`` "static"
    and "compiled" need the shared prefix.
    """
    eos_ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    bos = bos_token_id if bos_token_id is not None else getattr(llm.config, "bos_token_id", None)
    if options.stop_rule == "slam_aac" and options.repetition_penalty != 1.0 and bos is None:
        raise ConfigError("stop_rule slam_aac with a repetition penalty needs the LM's bos_token_id; none is set")
    if prefix not in PREFIX_CACHES:
        raise ConfigError(f"prefix must be one of {sorted(PREFIX_CACHES)}, got {prefix!r}")
    static, compiled = options.step != "eager", options.step == "compiled"
    if static and prefix != "shared":
        raise ConfigError(f"step {options.step!r} needs prefix='shared'")
    cache = SharedPrefixCache(llm, static, compiled) if prefix == "shared" else KVCache(llm)
    first_logits = cache.prefill(inputs_embeds, attention_mask)
    clips = torch.arange(inputs_embeds.shape[0], device=inputs_embeds.device)
    if static:
        sync_every = options.max_new_tokens  # rows are dropped only at the end
    elif sync_every is None:
        sync_every = 1 if inputs_embeds.device.type == "cpu" else 4
    searches = [BeamSearch(n, clips, options, eos_ids, bos, sync_every) for n in options.beam_sizes]
    if options.schedule == "combined":
        _run(cache, searches, first_logits)
    else:
        for search in searches:
            _run(cache, [search], first_logits)
    cache.release_prefix()
    results = [search.finalize() for search in searches]
    return [[hyp for per_beam in results for hyp in per_beam[i]] for i in range(len(clips))]
