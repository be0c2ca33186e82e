"""Beam search of one beam size over a batch of clips, under either of two stop rules, on the device.

``stop_rule="transformers"`` is transformers 5.x ``GenerationMixin._beam_search`` step for step (top-2N
continuations, finished beams kept by length-normalized score, the early-stopping heuristic, -1e9 masking).
``stop_rule="slam_aac"`` is transformers 4.35.2's ``BeamSearchScorer`` as SLAM-AAC's released scores were decoded:
there ``generate(inputs_embeds=...)`` seeds ``input_ids`` with one BOS that the model never reads, so

- the heuristic (``BeamHypotheses.is_done(best_sum_logprobs, cur_len)``) takes the best of all 2N scored
  continuations, finished ones included, and a ``cur_len`` one token longer (the seeded BOS counts);
- hypotheses still running at ``max_new_tokens`` are finished with a length that counts the BOS (T + 1), and the
  EOS-ended ones of the last step compete with them (5.x takes the top N of the last step, EOS or not);
- ``early_stopping="never"`` bounds the best reachable score with ``max_length = max_new_tokens + 1``;
- the repetition penalty sees the seeded BOS as a generated token;
- finished scores are Python floats (float64) as ``BeamHypotheses.add`` computes them, so ties resolve alike.

An EOS-ended hypothesis is normalized by the same length under both rules (its tokens plus EOS). Beam size 1 is
greedy search (``generate(num_beams=1)``) under both; only the repetition penalty's BOS differs there.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from espnet_slam_aac.inference.decoding import DecodingOptions

NEG = -1.0e9  # transformers' "impossible" score; kept identical so that ties and comparisons match it exactly


@dataclass
class Hypothesis:
    """One finished caption of one beam size, as token ids (EOS excluded)."""

    tokens: List[int]
    logprob: float  # sum of the (processed) token log-probabilities, EOS included
    length: int  # generated tokens the log-probability covers (caption + EOS if it ended with EOS)
    score: float  # the length-normalized score the beam search ranked by (see the stop rules above)
    beam_size: int
    rank: int  # 0 = the best of its beam size


class BeamSearch:
    """Beam search of one beam size over a batch of clips.

    Contract: ``tokens`` are the next input token of every live row (clip-major, ``beam_size`` rows per live
    clip); ``update(logits)`` consumes the LM's logits for those rows and returns, for each row of the new layout,
    the old row it continues (the caller reorders the KV cache with it); ``finished`` says when no live clip is
    left; ``finalize()`` returns each clip's best ``nbest`` hypotheses. A clip whose finished set can no longer
    change is frozen on the device and its rows are dropped at the next host check, every ``sync_every`` steps
    and at the last (transformers pads it until the whole batch is done: the same results). Between checks no
    step waits for the device.
    """

    def __init__(
        self,
        beam_size: int,
        clips: torch.Tensor,
        options: "DecodingOptions",
        eos_ids: Sequence[int],
        bos_id: Optional[int] = None,
        sync_every: int = 1,
    ):
        n, device = beam_size, clips.device
        self.beam_size, self.options, self.clips = n, options, clips
        self.batch = len(clips)
        self.slam_aac = options.stop_rule == "slam_aac"
        self.seeded = bos_id if self.slam_aac else None  # 4.35.2's input_ids start with it
        self.eos = torch.tensor(list(eos_ids), dtype=torch.long, device=device)
        self.keep = max(2, 1 + len(eos_ids)) * n  # candidates considered per clip and step
        self.top_mask = torch.arange(self.keep, device=device) < n
        self.cur_len = 0
        size, total = (self.batch, n), options.max_new_tokens
        self.score_dtype = torch.float64 if self.slam_aac else torch.float32
        self.running_sequences = torch.full(size + (total,), int(eos_ids[0]), dtype=torch.long, device=device)
        self.sequences = self.running_sequences.clone()
        self.running_scores = torch.zeros(size, dtype=torch.float, device=device)
        self.running_scores[:, 1:] = NEG
        self.scores = torch.full(size, NEG, dtype=self.score_dtype, device=device)
        self.logprobs = torch.full(size, NEG, dtype=torch.float, device=device)  # unnormalized twin of ``scores``
        self.lengths = torch.zeros(size, dtype=torch.long, device=device)
        self.is_finished = torch.zeros(size, dtype=torch.bool, device=device)
        self.heuristic_unsatisfied = torch.ones((self.batch, 1), dtype=torch.bool, device=device)
        self.live = torch.arange(self.batch, device=device)  # positions (in ``clips``) of the clips still searched
        self.frozen = torch.zeros(self.batch, dtype=torch.bool, device=device)  # done, rows not dropped yet
        self.sync_every = sync_every
        self.done: Dict[int, Tuple[torch.Tensor, ...]] = {}  # position -> frozen (sequences, scores, logprobs, lengths)

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

    def _process(self, scores: torch.Tensor) -> torch.Tensor:
        """transformers' logits processors of our options: the repetition penalty over each row's tokens (the
        seeded BOS included under ``slam_aac``), then EOS forbidden before ``min_new_tokens``."""
        opts, cur = self.options, self.cur_len
        if opts.repetition_penalty != 1.0:
            history = self.running_sequences[:, :, :cur].reshape(scores.shape[0], cur)
            if self.seeded is not None:
                history = torch.cat([history.new_full((history.shape[0], 1), self.seeded), history], dim=1)
            if history.shape[1]:
                picked = scores.gather(1, history)
                picked = torch.where(picked < 0, picked * opts.repetition_penalty, picked / opts.repetition_penalty)
                scores = scores.scatter(1, history, picked)
        if cur < opts.min_new_tokens:
            scores = scores.index_fill(1, self.eos, -float("inf"))
        return scores

    def update(self, logits: torch.Tensor) -> torch.Tensor:
        if self.beam_size == 1:
            return self._greedy_update(logits)
        n, b, cur = self.beam_size, len(self.live), self.cur_len
        log_probs = self._process(F.log_softmax(logits.to(dtype=torch.float32, copy=True), dim=-1))
        vocab = log_probs.shape[-1]
        log_probs = (log_probs.view(b, n, vocab) + self.running_scores[:, :, None]).reshape(b, n * vocab)

        # top-K continuations over all beams of a clip (K = 2N with one EOS id)
        topk_logprobs, topk_indices = torch.topk(log_probs, k=self.keep)
        topk_beams = topk_indices // vocab
        topk_sequences = _gather(self.running_sequences, topk_beams)
        topk_sequences[:, :, cur] = topk_indices % vocab
        is_eos = torch.isin(topk_sequences[:, :, cur], self.eos)
        last = cur + 1 >= self.options.max_new_tokens
        offsets = torch.arange(b, device=log_probs.device)[:, None] * n
        if self.slam_aac:
            done, source = self._step_4352(topk_logprobs, topk_sequences, topk_beams, is_eos, last)
        else:
            done, source = self._step_5x(topk_logprobs, topk_sequences, topk_beams, is_eos, last)
        self.cur_len = cur + 1
        return self._check(done, source + offsets, last)

    def _check(self, done: torch.Tensor, source: torch.Tensor, last: bool) -> torch.Tensor:
        """Freeze the clips that are ``done``; at a host check, retire the frozen ones."""
        self.frozen = self.frozen | done
        if last or self.cur_len % self.sync_every == 0:
            return self._retire(self.frozen, source)
        return source.reshape(-1)

    def _keep_running(self, topk_logprobs, topk_sequences, topk_beams, stops) -> torch.Tensor:
        """The best N continuations that do not stop run on; returns their source beams (within each clip)."""
        running_logprobs = topk_logprobs + stops.to(torch.float32) * NEG
        next_indices = torch.topk(running_logprobs, k=self.beam_size)[1]
        self.running_sequences = _gather(topk_sequences, next_indices)
        self.running_scores = _gather(running_logprobs, next_indices)
        return _gather(topk_beams, next_indices)

    def _add_finished(self, scores, sequences, logprobs, lengths, finished) -> None:
        """Merge candidates into each clip's finished set, which keeps the N best scores."""
        merged_scores = torch.cat((self.scores, scores), dim=1)
        best = torch.topk(merged_scores, k=self.beam_size)[1]
        self.sequences = _gather(torch.cat((self.sequences, sequences), dim=1), best)
        self.scores = _gather(merged_scores, best)
        self.logprobs = _gather(torch.cat((self.logprobs, logprobs), dim=1), best)
        self.lengths = _gather(torch.cat((self.lengths, lengths), dim=1), best)
        self.is_finished = _gather(torch.cat((self.is_finished, finished), dim=1), best)

    def _step_5x(self, topk_logprobs, topk_sequences, topk_beams, is_eos, last: bool):
        """transformers 5.x: the top-N candidates that stopped (EOS or max length) enter the finished set if they
        beat its worst member; a clip is done when the best running beam cannot beat it."""
        opts, cur = self.options, self.cur_len
        hits_stop = is_eos | last
        source = self._keep_running(topk_logprobs, topk_sequences, topk_beams, hits_stop)
        just_finished = hits_stop & self.top_mask[None, :]
        finished_scores = topk_logprobs / ((cur + 1) ** opts.length_penalty)
        full = torch.all(self.is_finished, dim=-1, keepdim=True) & (opts.early_stopping is True)
        finished_scores += full.to(torch.float32) * NEG
        finished_scores += (~self.heuristic_unsatisfied).to(torch.float32) * NEG
        finished_scores += (~just_finished) * NEG
        lengths = torch.full_like(topk_beams, cur + 1)
        self._add_finished(finished_scores, topk_sequences, topk_logprobs, lengths, just_finished)
        self.heuristic_unsatisfied = self._heuristic_5x(cur + 1)
        done = ~self.heuristic_unsatisfied[:, 0]
        if opts.early_stopping is True:
            done |= self.is_finished.all(dim=-1)
        if last:  # (all K continuations stop only at the last step: an EOS id fills at most N of each 2N)
            done[:] = True
        return done, source

    def _heuristic_5x(self, cur_len: int) -> torch.Tensor:
        opts = self.options
        if opts.early_stopping == "never" and opts.length_penalty > 0.0:
            best_length = opts.max_new_tokens
        else:
            best_length = cur_len
        best_running = self.running_scores[:, :1] / (best_length**opts.length_penalty)
        worst_finished = torch.where(self.is_finished, torch.min(self.scores, dim=1, keepdim=True)[0], NEG)
        return self.heuristic_unsatisfied & torch.any(best_running > worst_finished, dim=-1, keepdim=True)

    def _step_4352(self, topk_logprobs, topk_sequences, topk_beams, is_eos, last: bool):
        """transformers 4.35.2 (``BeamSearchScorer.process``, then ``finalize`` at the last step)."""
        opts, cur, lp = self.options, self.cur_len, self.options.length_penalty
        source = self._keep_running(topk_logprobs, topk_sequences, topk_beams, is_eos)
        # EOS among the top N: hypothesis = seeded BOS + cur tokens, scored by its length cur + 1 (frozen clips
        # take none: 4.35.2 stops processing a clip once it is done)
        eos_top = is_eos & self.top_mask[None, :] & ~self.frozen[:, None]
        scores = torch.where(eos_top, topk_logprobs.double() / ((cur + 1) ** lp), NEG)
        lengths = torch.full_like(topk_beams, cur + 1)
        self._add_finished(scores, topk_sequences, topk_logprobs, lengths, eos_top)
        # is_done(best of all 2N continuations, cur_len = seeded BOS + cur + 1 tokens)
        full = self.is_finished.all(dim=-1)
        if opts.early_stopping is True:
            done = full
        else:
            length = opts.max_new_tokens + 1 if opts.early_stopping == "never" and lp > 0.0 else cur + 2
            highest = topk_logprobs[:, 0].double() / (length**lp)
            done = full & (self.scores.min(dim=1)[0] >= highest)
        done = done | self.frozen
        if last:  # finalize: the running beams of the clips not done, their length counting the seeded BOS
            add = (~done)[:, None].expand_as(self.running_scores)
            total = opts.max_new_tokens
            scores = torch.where(add, self.running_scores.double() / ((total + 1) ** lp), NEG)
            lengths = torch.full_like(self.lengths, total)
            self._add_finished(scores, self.running_sequences, self.running_scores, lengths, add)
            done = torch.ones_like(done)
        return done, source

    def _greedy_update(self, logits: torch.Tensor) -> torch.Tensor:
        """Beam size 1 is greedy search (as ``generate(num_beams=1)``): processors on the logits, argmax, a clip
        stops at its first EOS."""
        b, cur = len(self.live), self.cur_len
        scores = self._process(logits.to(dtype=torch.float32, copy=True))
        tokens = scores.argmax(dim=-1)
        last = cur + 1 >= self.options.max_new_tokens
        self.running_sequences[:, 0, cur] = tokens  # a frozen row's tokens lie past its length: never read
        step = F.log_softmax(scores, dim=-1).gather(1, tokens[:, None])[:, 0]
        self.running_scores[:, 0] += torch.where(self.frozen, 0.0, step)
        self.lengths = torch.where(self.frozen[:, None], self.lengths, cur + 1)
        done = self.frozen | torch.isin(tokens, self.eos) | last
        self.cur_len = cur + 1
        self.sequences, self.logprobs = self.running_sequences, self.running_scores
        self.scores = (self.logprobs / (self.lengths.to(torch.float64) ** self.options.length_penalty)).to(
            self.score_dtype
        )
        return self._check(done, torch.arange(b, device=logits.device)[:, None], last)

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
                "frozen",
            ):
                setattr(self, name, getattr(self, name)[keep])
        return source.reshape(-1)

    def finalize(self) -> List[List[Hypothesis]]:
        """Each clip's ``nbest`` best finished hypotheses, best first."""
        out, eos = [], set(self.eos.tolist())
        for pos in range(self.batch):
            sequences, scores, logprobs, lengths = (t.tolist() for t in self.done[pos])
            hyps = []
            for rank in range(self.options.nbest):
                length = lengths[rank]
                tokens = [t for t in sequences[rank][:length] if t not in eos]
                hyps.append(Hypothesis(tokens, logprobs[rank], length, scores[rank], self.beam_size, rank))
            out.append(hyps)
        return out


def _gather(tensor: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``tensor[b, indices[b, k], ...]`` (transformers' ``_gather_beams``)."""
    while indices.dim() < tensor.dim():
        indices = indices.unsqueeze(-1)
    return torch.take_along_dim(tensor, indices, dim=1)
