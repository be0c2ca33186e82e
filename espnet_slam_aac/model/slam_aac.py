"""SLAM-AAC as an ESPnet model: front end -> SpecAugment -> EAT -> projector -> LLM with LoRA.

    speech (B, samples) --eat_fbank--> fbank (B, 1024, 128) --specaug (training only)--> EAT (frozen)
      --> tokens (B, 513, 768) --linear projector--> audio embeddings (B, 102, d_llm)
      --> [audio][<s> USER: Describe the audio you hear. \\n ASSISTANT:][caption][</s>] --> LLM + LoRA

Training loss: cross entropy on caption + EOS, averaged over those tokens; the ESPnet ``weight`` is their
count, so that distributed training averages exactly as one process on the global batch would.

For generation (the decode helper) ``prefix_embeds(speech, speech_lengths)`` returns the left-padded
``[audio][<s> prompt]`` embeddings and attention mask; ``decoder.llm`` is the Hugging Face model (``generate``)
and ``decoder.tokenizer`` its tokenizer. Call ``model.eval()`` first.

Weights: the parameters that do not train when the model is built (EAT, the base LLM) come from their sources
(``encoder_conf.checkpoint``, ``decoder_conf.model_name_or_path``) whenever the model is built, so they are left
out of ``state_dict()``: checkpoints, averaged models and packed models hold only what trains (projector +
LoRA). ``load_state_dict`` accepts state dicts without them and still insists on everything else. Frozen weights
keep the dtype they were built in (``--frozen_dtype``) through ``.to(dtype)`` / ``.float()``, which ESPnet
applies to the whole model; device moves apply to everything.
"""

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from espnet2.asr.encoder.abs_encoder import AbsEncoder
from espnet2.asr.frontend.abs_frontend import AbsFrontend
from espnet2.asr.specaug.abs_specaug import AbsSpecAug
from espnet2.torch_utils.device_funcs import force_gatherable
from espnet2.train.abs_espnet_model import AbsESPnetModel
from torch.nn.modules.module import _IncompatibleKeys
from torch.nn.utils.rnn import pad_sequence

from espnet_slam_aac.model.decoder import IGNORE_ID, LLMDecoder
from espnet_slam_aac.model.projector import AbsProjector

REDUCED_PRECISION = (torch.bfloat16, torch.float16)


class SlamAAC(AbsESPnetModel):
    """Model ``slam_aac``.

    Args:
        extract_feats_in_collect_stats: compute features in ``--collect_stats`` (off: there are no feature
            statistics to gather, and collect-stats then needs no model at all; the task sets it off there).
    """

    def __init__(
        self,
        frontend: Optional[AbsFrontend],
        specaug: Optional[AbsSpecAug],
        encoder: AbsEncoder,
        projector: AbsProjector,
        decoder: LLMDecoder,
        extract_feats_in_collect_stats: bool = False,
    ):
        super().__init__()
        self.frontend = frontend
        self.specaug = specaug
        self.encoder = encoder
        self.projector = projector
        self.decoder = decoder
        self.extract_feats_in_collect_stats = extract_feats_in_collect_stats
        # What is rebuilt from its source at build time: frozen parameters and all buffers.
        self.source_keys = frozenset(n for n, p in self.named_parameters() if not p.requires_grad) | frozenset(
            n for n, _ in self.named_buffers()
        )
        # DDP neither broadcasts them at start nor syncs buffers every step: every rank loads the same source.
        self._ddp_params_and_buffers_to_ignore = sorted(self.source_keys)

    # ---- audio -> LLM embeddings -------------------------------------------------------------------------
    def encode(self, speech: torch.Tensor, speech_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Audio embeddings ``(B, N, d_llm)`` (float32 or the autocast dtype) and their counts ``(B,)``."""
        feats, lengths = (speech, speech_lengths) if self.frontend is None else self.frontend(speech, speech_lengths)
        if self.specaug is not None and self.training:
            feats, lengths = self.specaug(feats, lengths)
        tokens, lengths, _ = self.encoder(feats, lengths)
        return self.projector(tokens, lengths)

    def _prefixes(self, audio: torch.Tensor, audio_lengths: torch.Tensor) -> List[torch.Tensor]:
        """``[audio][<s> prompt]`` embeddings of each clip, in the LLM's dtype."""
        prompt = self.decoder.embed(self.decoder.prompt_ids)
        return [torch.cat([audio[b, :n].to(prompt.dtype), prompt]) for b, n in enumerate(audio_lengths.tolist())]

    def prefix_embeds(self, speech: torch.Tensor, speech_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Generation input: ``[audio][<s> prompt]`` per clip, left-padded: ``(B, L, d_llm)`` in the LLM's
        dtype and the attention mask ``(B, L)`` (0 on padding)."""
        rows = self._prefixes(*self.encode(speech, speech_lengths))
        embeds = pad_sequence([r.flip(0) for r in rows], batch_first=True).flip(1)
        return embeds, padding_mask(rows, embeds.shape[1]).flip(1)

    def training_inputs(
        self, audio: torch.Tensor, audio_lengths: torch.Tensor, text: torch.Tensor, text_lengths: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher-forcing input, right-padded: embeddings ``(B, L, d)``, attention mask ``(B, L)`` and labels
        ``(B, L)``: ``[audio][<s> prompt][caption][</s>]``, labels ``IGNORE_ID`` except on caption + EOS."""
        eos = text.new_tensor([self.decoder.eos_id])
        captions = [torch.cat([text[b, :n], eos]) for b, n in enumerate(text_lengths.tolist())]
        prefixes = self._prefixes(audio, audio_lengths)
        rows = [torch.cat([p, self.decoder.embed(c)]) for p, c in zip(prefixes, captions)]
        labels = [torch.cat([c.new_full((len(p),), IGNORE_ID), c]) for p, c in zip(prefixes, captions)]
        embeds = pad_sequence(rows, batch_first=True)
        labels = pad_sequence(labels, batch_first=True, padding_value=IGNORE_ID)
        return embeds, padding_mask(rows, embeds.shape[1]), labels

    # ---- ESPnet interface --------------------------------------------------------------------------------
    def forward(
        self,
        speech: torch.Tensor,
        speech_lengths: torch.Tensor,
        text: torch.Tensor,
        text_lengths: torch.Tensor,
        **kwargs,
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], torch.Tensor]:
        audio, audio_lengths = self.encode(speech, speech_lengths)
        embeds, mask, labels = self.training_inputs(audio, audio_lengths, text, text_lengths)
        logits = self.decoder(embeds, mask)
        loss, acc, count = caption_loss(logits, labels)
        stats = dict(loss=loss.detach(), acc=acc)
        return force_gatherable((loss, stats, count.float()), loss.device)

    def collect_feats(self, speech: torch.Tensor, speech_lengths: torch.Tensor, **kwargs) -> Dict[str, torch.Tensor]:
        if self.frontend is None:
            return {"feats": speech, "feats_lengths": speech_lengths}
        feats, lengths = self.frontend(speech, speech_lengths)
        return {"feats": feats, "feats_lengths": lengths}

    # ---- what a checkpoint holds, and in which dtype -----------------------------------------------------
    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        state = super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        for key in [k for k in state if k.startswith(prefix) and k[len(prefix) :] in self.source_keys]:
            del state[key]
        return state

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = [k for k in result.missing_keys if k not in self.source_keys]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(
                f"Error(s) in loading state_dict for {type(self).__name__}: missing keys {missing}, "
                f"unexpected keys {result.unexpected_keys}"
            )
        return _IncompatibleKeys(missing, result.unexpected_keys)

    def _apply(self, fn, recurse: bool = True):
        def keep_frozen_dtype(t: torch.Tensor) -> torch.Tensor:
            out = fn(t)
            if not t.requires_grad and t.dtype in REDUCED_PRECISION and out.dtype != t.dtype:
                out = out.to(t.dtype)
            return out

        return super()._apply(keep_frozen_dtype, recurse)


def padding_mask(rows: List[torch.Tensor], length: int) -> torch.Tensor:
    """``(B, length)`` long mask, 1 on the first ``len(rows[b])`` positions of row ``b``."""
    lengths = torch.tensor([len(r) for r in rows], device=rows[0].device)
    return (torch.arange(length, device=lengths.device)[None, :] < lengths[:, None]).long()


def cast_frozen(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Cast the parameters of ``module`` that do not train to ``dtype``, in place."""
    for p in module.parameters():
        if not p.requires_grad:
            p.data = p.data.to(dtype)
    return module


def caption_loss(logits: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Next-token cross entropy over labelled positions (mean), token accuracy and the labelled count."""
    logits, target = logits[:, :-1].float(), labels[:, 1:]
    valid = target != IGNORE_ID
    count = valid.sum()
    loss = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=IGNORE_ID, reduction="sum") / count
    with torch.no_grad():
        acc = ((logits.argmax(-1) == target) & valid).sum() / count
    return loss, acc, count
