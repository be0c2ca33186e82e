"""CLAP-Refine: load a CLAP, embed clips and captions, pick the candidate caption that best fits the audio.

Library API (used by ``Speech2Caption`` and ``bin/clap_refine.py``)::

    clap = load_clap("exp/clap/best_model.pt")          # or a LAION .pt, a ClapModel folder, a hub id
    audio = clap.audio_embeddings([(waveform, 44100)])   # (B, E), L2-normalised
    text = clap.text_embeddings(["a dog barks", ...])    # (M, E), L2-normalised
    best, scores = rescore(candidates, audio[0], text, lm_weight=0.0)
    picks = rescore_clips(clap, [(waveform, 44100)], [candidates])   # embed and rescore in one call

Backends (``load_clap`` tells them apart by content, not by file name):

- **SLAM-AAC's CLAP (ASE)**: ``best_model.pt`` + ``clap_config.yaml`` (a folder holding both, or the
  ``.pt``), HTS-AT at 32 kHz + RoBERTa (clap_ase.py). Text: at most 30 tokens, first-token embedding.
- **LAION-CLAP**: a transformers ``ClapModel`` folder or hub id, or an original LAION ``.pt`` converted on
  load (clap_convert.laion_to_hf). 48 kHz, clips repeat-padded to 10 s; text: at most 77 tokens (laion's).
  Only unfused checkpoints (e.g. ``630k-audioset-best.pt`` / ``laion/clap-htsat-unfused``).

Audio follows SLAM-AAC's ``clap_refine.py``: channel 0, the first ``max_seconds`` (10) of the clip at its own
rate, then resampling; ``whole_clip`` instead averages the embeddings of consecutive 10 s windows. The
reference embeds one clip at a time because zero-padding a batch would change its embeddings; here clips are
batched only with clips of the same spectrogram length (bucketing), so a batch gives the embeddings each
clip gets alone. Texts are batched with attention masks, identical texts embedded once.

Selection (``rescore``): score = cosine(audio, caption) + ``lm_weight`` * (logprob / length), i.e. the LM
term is the candidate's mean log-probability per generated token. With ``lm_weight`` 0 (the default and
the reference rule) the score is the cosine alone. **Ties** go to the candidate listed first (in
candidates.jsonl order: the smallest beam size), which is ``torch.sort(..., descending=True,
stable=True)``; the reference calls ``torch.sort`` unstable, so its pick among exact ties is unspecified.
"""

import inspect
import json
import logging
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from espnet_slam_aac.clap import ase as clap_ase
from espnet_slam_aac.clap import convert as clap_convert
from espnet_slam_aac.clap.frontend import LAION_MEL, MelConfig, clip_windows
from espnet_slam_aac.errors import AudioError, CheckpointError, ConfigError, DataError
from espnet_slam_aac.utils.checkpoint import is_hub_id
from espnet_slam_aac.utils.config import check_keys

logger = logging.getLogger(__name__)

LAION_MAX_TEXT_TOKENS = 77  # laion_clap's tokenizer: padding="max_length", truncation, max_length=77


class LaionTower(nn.Module):
    """transformers ``ClapModel`` behind the same two methods as ``clap_ase.ASEModel``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.audio_config = model.config.audio_config
        self.text_vocab_size = model.config.text_config.vocab_size

    def embed_audio(self, mel: torch.Tensor) -> torch.Tensor:
        out = self.model.get_audio_features(input_features=mel.unsqueeze(1)).pooler_output
        return nn.functional.normalize(out, dim=-1)

    def embed_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return nn.functional.normalize(out, dim=-1)


class CLAP:
    """A loaded CLAP model: ``audio_embeddings`` and ``text_embeddings``, comparable by dot product."""

    def __init__(
        self,
        tower: nn.Module,
        tokenizer,
        mel: MelConfig,
        *,
        backend: str,
        max_text_tokens: int,
        device: str = "cpu",
        batch_size: int = 16,
        text_batch_size: int = 256,
        max_seconds: float = 10.0,
        whole_clip: bool = False,
        channel: str = "first",
        short_clip: str = "error",
    ):
        if channel not in ("first", "mean") or short_clip not in ("error", "silence"):
            raise ConfigError(
                f"channel must be first|mean and short_clip error|silence, got {channel!r} and {short_clip!r}"
            )
        if len(tokenizer) != tower.text_vocab_size:
            raise ConfigError(
                f"the tokenizer has {len(tokenizer)} tokens but the text encoder {tower.text_vocab_size} word "
                "embeddings: wrong or empty tokenizer (transformers builds an empty one when files are missing)"
            )
        audio = tower.audio_config
        if mel.n_mels != audio.num_mel_bins:
            raise ConfigError(
                f"the front end makes {mel.n_mels} mel bins, the audio encoder takes {audio.num_mel_bins}"
            )
        capacity = audio.spec_size * (audio.spec_size // audio.num_mel_bins)  # frames HTS-AT can hold (1024)
        frames = int((mel.pad_seconds or max_seconds) * mel.sample_rate) // mel.hop_length + 1
        if max_seconds <= 0 or (mel.pad_seconds and max_seconds > mel.pad_seconds) or frames > capacity:
            raise ConfigError(
                f"max_seconds={max_seconds} does not fit this CLAP's audio input ({capacity} frames at "
                f"{mel.sample_rate} Hz / hop {mel.hop_length}); use whole_clip to cover longer clips"
            )
        self.tower = tower.to(device).eval()
        self.tokenizer = tokenizer
        self.mel = mel
        self.backend = backend
        self.max_text_tokens = max_text_tokens
        self.device = device
        self.batch_size = batch_size
        self.text_batch_size = text_batch_size
        self.clip_options = dict(
            max_seconds=max_seconds, whole_clip=whole_clip, channel=channel, short_clip=short_clip, device=device
        )

    @property
    def sample_rate(self) -> int:
        return self.mel.sample_rate

    @torch.inference_mode()
    def audio_embeddings(self, clips: Sequence[Tuple[np.ndarray, int]]) -> torch.Tensor:
        """[(waveform (samples,) or (samples, channels), sample_rate), ...] -> (B, E) on CPU, float32."""
        windows: List[Tuple[int, torch.Tensor]] = []
        for i, (waveform, rate) in enumerate(clips):
            try:
                windows += [(i, w) for w in clip_windows(waveform, int(rate), self.mel, **self.clip_options)]
            except AudioError as e:
                raise AudioError(f"clip {i} of the batch: {e}") from e
        by_length = defaultdict(list)  # equal spectrogram lengths only: no padding inside a batch
        for j, (_, mel) in enumerate(windows):
            by_length[mel.shape[0]].append(j)
        embeds: List[Optional[torch.Tensor]] = [None] * len(windows)
        for members in by_length.values():
            for start in range(0, len(members), self.batch_size):
                chunk = members[start : start + self.batch_size]
                batch = torch.stack([windows[j][1] for j in chunk])
                for j, e in zip(chunk, self.tower.embed_audio(batch).float().cpu()):
                    embeds[j] = e
        out = torch.zeros(len(clips), embeds[0].shape[0] if embeds else 0)
        for (i, _), e in zip(windows, embeds):
            out[i] += e  # whole_clip: the mean of the windows' embeddings, renormalised
        return nn.functional.normalize(out, dim=-1)

    @torch.inference_mode()
    def text_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """Captions -> (M, E) on CPU, float32. Raw text: no lowercasing or punctuation removal."""
        unique = list(dict.fromkeys(texts))
        rows = {}
        for start in range(0, len(unique), self.text_batch_size):
            chunk = unique[start : start + self.text_batch_size]
            tok = self.tokenizer(
                chunk, padding="longest", truncation=True, max_length=self.max_text_tokens, return_tensors="pt"
            )
            emb = self.tower.embed_text(tok["input_ids"].to(self.device), tok["attention_mask"].to(self.device))
            rows.update(zip(chunk, emb.float().cpu()))
        if not texts:
            return torch.zeros(0, 0)
        return torch.stack([rows[t] for t in texts])


@dataclass(frozen=True)
class CandidateScore:
    similarity: float  # cosine between the clip's audio embedding and the caption's text embedding
    lm_score: Optional[float]  # logprob / length (mean log-probability per token); None if not given
    combined: float  # similarity + lm_weight * lm_score (= similarity when lm_weight is 0): what is ranked


def _field(candidate, name: str):
    return candidate.get(name) if isinstance(candidate, Mapping) else getattr(candidate, name, None)


def rescore(
    candidates: Sequence,
    audio_embedding: torch.Tensor,
    text_embeddings: torch.Tensor,
    lm_weight: float = 0.0,
) -> Tuple[int, List[CandidateScore]]:
    """Pick a clip's caption: highest score wins, ties to the first candidate. Pure; see module docstring.

    ``candidates``: dicts (candidates.jsonl entries) or objects (e.g. ``decoding.Hypothesis``) with, when
    ``lm_weight`` is not 0, ``logprob`` (sum over the generated tokens) and ``length`` (their number);
    ``text_embeddings[i]`` embeds candidate i's caption.
    """
    if not candidates:
        raise ValueError("rescore needs at least one candidate")
    if text_embeddings.shape[0] != len(candidates):
        raise ValueError(f"{len(candidates)} candidates but {text_embeddings.shape[0]} text embeddings")
    sims = (text_embeddings.float() @ audio_embedding.float()).tolist()
    scores = []
    for cand, sim in zip(candidates, sims):
        lm = None
        if _field(cand, "logprob") is not None:
            lm = float(_field(cand, "logprob")) / max(int(_field(cand, "length") or 1), 1)
        elif lm_weight:
            raise ValueError(f"lm_weight={lm_weight} needs a logprob for every candidate, not for {cand!r}")
        scores.append(CandidateScore(sim, lm, sim + lm_weight * lm if lm_weight else sim))
    bad = [i for i, s in enumerate(scores) if math.isnan(s.combined)]
    if bad:
        raise ValueError(f"rescore: candidate {bad[0]} ({_field(candidates[bad[0]], 'text')!r}) scores NaN")
    best = max(range(len(scores)), key=lambda i: (scores[i].combined, -i))
    return best, scores


def rescore_clips(
    clap: CLAP,
    clips: Sequence[Tuple[np.ndarray, int]],
    candidates: Sequence[Sequence],
    lm_weight: float = 0.0,
    names: Optional[Sequence[str]] = None,
) -> List[Tuple[int, List[CandidateScore]]]:
    """CLAP-Refine of a batch, the one loop ``Speech2Caption`` and ``clap-refine`` share: embed the clips
    (``(waveform, sample_rate)``) and every candidate's text in one call each, then ``rescore`` each clip's
    candidates. ``names`` (default ``clip I``) name a clip in errors: unreadable audio, NaN scores."""
    names = list(names) if names is not None else [f"clip {i}" for i in range(len(clips))]
    try:
        audio = clap.audio_embeddings(clips)
    except AudioError:
        for name, clip in zip(names, clips):  # find the clip to name
            try:
                clap.audio_embeddings([clip])
            except AudioError as err:
                raise AudioError(f"{name}: {err}") from err
        raise
    text = clap.text_embeddings([_field(c, "text") for clip_candidates in candidates for c in clip_candidates])
    picks, offset = [], 0
    for name, clip_candidates, audio_embedding in zip(names, candidates, audio):
        try:
            picks.append(
                rescore(clip_candidates, audio_embedding, text[offset : offset + len(clip_candidates)], lm_weight)
            )
        except ValueError as err:
            raise DataError(f"{name}: {err}") from err
        offset += len(clip_candidates)
    return picks


def _tokenizer(source: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"cannot load the CLAP tokenizer from {source!r}: {e}. Pass tokenizer=<folder with the "
            "tokenizer files> (RoBERTa's, for these CLAPs)"
        ) from e


def _has_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file() or (folder / "vocab.json").is_file()


def _load_laion_pt(path: Path, ckpt: dict, tokenizer: Optional[str]):
    from transformers import ClapConfig, ClapModel

    sd, origins = clap_convert.laion_to_hf(ckpt, path)
    text_dims = clap_convert.roberta_dims(sd, path)
    config = ClapConfig(
        text_config={**text_dims, "layer_norm_eps": 1e-5},  # laion's RoBERTa; ClapTextConfig says 1e-12
        audio_config=clap_convert.htsat_dims(sd, path),
        projection_dim=int(sd["audio_projection.linear1.weight"].shape[0]),
    )
    model = ClapModel(config)
    clap_convert.load_converted(model, sd, origins, path)
    source = tokenizer or (str(path.parent) if _has_tokenizer(path.parent) else "roberta-base")
    return LaionTower(model.eval()), _tokenizer(source), LAION_MEL


def _laion_mel(folder: Optional[Path]) -> MelConfig:
    """Front end of a ClapModel folder: its preprocessor_config.json, with laion's fmin 50 (HF's default of
    0 is wrong for every LAION checkpoint) and a fixed first-10-s crop instead of rand_trunc/fusion."""
    if folder is None or not (folder / "preprocessor_config.json").is_file():
        return LAION_MEL
    pre = json.loads((folder / "preprocessor_config.json").read_text(encoding="utf-8"))
    if pre.get("padding", "repeatpad") != "repeatpad":
        raise ConfigError(f"{folder}: padding {pre['padding']!r} is not supported (only 'repeatpad')")
    return MelConfig(
        sample_rate=int(pre.get("sampling_rate", LAION_MEL.sample_rate)),
        n_fft=int(pre.get("fft_window_size", LAION_MEL.n_fft)),
        hop_length=int(pre.get("hop_length", LAION_MEL.hop_length)),
        n_mels=int(pre.get("feature_size", LAION_MEL.n_mels)),
        f_min=float(pre.get("frequency_min") or LAION_MEL.f_min),
        f_max=float(pre.get("frequency_max", LAION_MEL.f_max)),
        amin=LAION_MEL.amin,
        pad_seconds=float(pre.get("max_length_s", LAION_MEL.pad_seconds)),
    )


def _load_hf(spec: str, tokenizer: Optional[str]):
    from transformers import ClapModel

    folder = Path(spec) if Path(spec).is_dir() else None
    try:
        model = ClapModel.from_pretrained(spec)
    except (OSError, ValueError) as e:
        what = "a transformers ClapModel folder" if folder else "an existing file or folder, nor a loadable hub id"
        raise CheckpointError(f"{spec}: not {what}: {e}") from e
    if model.config.audio_config.enable_fusion:
        raise ConfigError(f"{spec}: fused LAION-CLAP checkpoints are not supported; use an unfused one")
    return LaionTower(model.eval()), _tokenizer(tokenizer or spec), _laion_mel(folder)


def load_clap(
    spec: str,
    *,
    config: Optional[str] = None,
    tokenizer: Optional[str] = None,
    max_text_tokens: Optional[int] = None,
    **options,
) -> CLAP:
    """Load a CLAP for rescoring; see the module docstring for ``spec`` and CLAP for ``options``
    (``device``, ``batch_size``, ``text_batch_size``, ``max_seconds``, ``whole_clip``, ``channel``,
    ``short_clip``). ``config``: the ASE's clap_config.yaml when not beside its best_model.pt;
    ``tokenizer``: a folder or hub id, by default the checkpoint's folder if it holds tokenizer files,
    else the text encoder's name (``roberta-base``)."""
    known = set(inspect.signature(CLAP.__init__).parameters) - {"self", "tower", "tokenizer", "mel", "backend"}
    check_keys(options, known | {"config", "tokenizer", "max_text_tokens"}, "CLAP options")
    path = Path(spec)
    if path.is_dir():
        if (path / "config.json").is_file():
            tower, tok, mel = _load_hf(spec, tokenizer)
            backend = "laion"
        elif (path / "best_model.pt").is_file():
            path = path / "best_model.pt"
        else:
            raise CheckpointError(f"{path}: neither a ClapModel folder (config.json) nor an ASE folder (best_model.pt)")
    elif not path.exists() and (path.suffix in (".pt", ".pth", ".ckpt") or not is_hub_id(spec)):
        raise CheckpointError(f"{spec}: no such CLAP checkpoint file or folder")
    elif not path.exists():
        tower, tok, mel = _load_hf(spec, tokenizer)  # a hub id such as laion/clap-htsat-unfused
        backend = "laion"
    if path.is_file():
        ckpt = clap_convert.load_pickle(path)
        if isinstance(ckpt.get("model"), Mapping):
            tower, mel, ase_config = clap_ase.build_ase(path, ckpt, config)
            default_tok = str(path.parent) if _has_tokenizer(path.parent) else ase_config["text_encoder_args"]["type"]
            tok, backend = _tokenizer(tokenizer or default_tok), "ase"
        else:
            tower, tok, mel = _load_laion_pt(path, ckpt, tokenizer)
            backend = "laion"
    if max_text_tokens is None:
        max_text_tokens = clap_ase.MAX_TEXT_TOKENS if backend == "ase" else LAION_MAX_TEXT_TOKENS
    logger.info("loaded %s CLAP from %s (%d Hz front end)", backend, spec, mel.sample_rate)
    return CLAP(tower, tok, mel, backend=backend, max_text_tokens=max_text_tokens, **options)
