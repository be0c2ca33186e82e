"""``Speech2Caption``: audio in, caption and n-best candidates out (ESPnet's ``Speech2Text`` for captioning).

    from espnet_slam_aac import Speech2Caption, load_audio

    s2c = Speech2Caption.from_pretrained("exp/pack", beam_sizes="2..8", refine="path/to/clap")
    result = s2c(*load_audio("dog.wav"))          # any sample rate, any channel count
    result.caption, result.candidates             # the caption; every candidate with beam size and score

A model is a trained ``AACTask`` config plus its weights (only what trains: projector + LoRA; EAT and the base
LLM are loaded from the sources the config names). ``from_pretrained`` takes a packed folder (``config.yaml`` +
``model.safetensors``), an experiment dir (``config.yaml`` + ``valid.loss.ave.pth`` or another ESPnet model
file) or a Hugging Face Hub id of a packed folder.

Each clip is brought to the front end's sample rate (with the front end's own resampler), its channel chosen by
the front end's ``channel`` rule, then a batch is encoded, projected and prefilled once and searched for every
beam size of the ``DecodingOptions`` (``decoding.decode``). Captions are the tokenizer's decoding of the
generated ids (special tokens skipped) with newlines as spaces, as the reference writes them. Without CLAP the
caption is the top-1 of ``text_beam_size``; with ``refine`` (a CLAP, ``clap.load_clap``) it is the candidate
that ``clap.rescore`` prefers.
"""

import argparse
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from espnet_slam_aac.clap.model import load_clap, rescore_clips
from espnet_slam_aac.clap.refine import RefineConfig
from espnet_slam_aac.data import audio
from espnet_slam_aac.data import resample as resampling
from espnet_slam_aac.errors import CheckpointError, ConfigError
from espnet_slam_aac.inference.batch_size import auto_batch_size
from espnet_slam_aac.inference.decoding import DecodingOptions, decode
from espnet_slam_aac.inference.lora_merge import merge_lora as merge_lora_weights
from espnet_slam_aac.tasks.aac import AACTask
from espnet_slam_aac.utils.checkpoint import read_state_dict, resolve_model_dir
from espnet_slam_aac.utils.config import read_yaml, resolve_beside, resolve_device, resolve_dtype

logger = logging.getLogger(__name__)

# model files looked for in a folder, in this order: a packed model, an imported SLAM-LLM checkpoint
# (import-slam-checkpoint), then ESPnet's usual names
MODEL_FILES = (
    "model.safetensors",
    "model.pth",
    "valid.loss.ave.pth",
    "valid.loss.best.pth",
    "valid.acc.ave.pth",
    "latest.pth",
)
# config keys that may name files relative to the model folder (a packed model carries them)
PATH_KEYS = (
    ("encoder_conf", "checkpoint"),
    ("decoder_conf", "model_name_or_path"),
    ("decoder_conf", "tokenizer_name_or_path"),
)


@dataclass
class Candidate:
    """One line item of ``candidates.jsonl``."""

    text: str
    beam_size: int
    logprob: float  # sum of token log-probabilities (EOS included)
    length: int  # generated tokens (EOS included when the caption ended with it)


@dataclass
class CaptionResult:
    caption: str
    candidates: List[Candidate]
    best: int  # index of ``caption`` in ``candidates``
    similarities: Optional[List[float]] = None  # CLAP cosine of each candidate, when refined


def find_model_file(folder: Path) -> Path:
    for name in MODEL_FILES:
        if (folder / name).is_file():
            return folder / name
    present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    raise CheckpointError(
        f"{folder}: no model file; looked for {list(MODEL_FILES)}, found {present}. Pass model_file explicitly"
    )


def load_model(
    train_config: Union[str, Path], model_file: Optional[Union[str, Path]], device: str, dtype: torch.dtype
) -> Tuple[torch.nn.Module, argparse.Namespace]:
    """Build the ``AACTask`` model of ``train_config`` with its frozen weights in ``dtype`` and load the trained
    weights strictly (a file that lacks a projector or LoRA tensor, or has extra ones, is an error)."""
    train_config = Path(train_config)
    conf = read_yaml(train_config, "model config")
    for section, key in PATH_KEYS:  # paths inside a packed folder are relative to it
        if isinstance(conf.get(section), dict) and key in conf[section]:
            conf[section][key] = resolve_beside(train_config.parent, conf[section][key])
    conf["frozen_dtype"] = str(dtype).replace("torch.", "")
    args = argparse.Namespace(**conf)
    model = AACTask.build_model(args)
    if model_file is not None:
        try:
            model.load_state_dict(read_state_dict(Path(model_file)), strict=True)
        except RuntimeError as err:
            raise CheckpointError(f"{model_file} does not fit the model of {train_config}: {err}") from err
    model.to(device=device, dtype=dtype).eval()
    return model, args


def prepare_waveform(
    waveform: Union[np.ndarray, torch.Tensor], sample_rate: int, fs: int, channel: str, resampler: str
) -> torch.Tensor:
    """``Speech2Caption.prepare`` for a front end's ``fs``, ``channel`` and ``resampler``: a plain function, so
    that loader worker processes (``inference.loader``) prepare clips without the model."""
    wave = torch.as_tensor(np.asarray(waveform, dtype=np.float32))
    if wave.dim() not in (1, 2) or wave.numel() == 0:
        raise ConfigError(f"expected a waveform (samples,) or (samples, channels), got shape {tuple(wave.shape)}")
    wave = audio.select_channel(wave, channel)
    audio.check_duration(wave.shape[0], int(sample_rate), "clip")
    if sample_rate == fs:
        return wave
    if fs == audio.SAMPLE_RATE:
        return resampling.resample(wave, int(sample_rate), resampler)
    import torchaudio

    return torchaudio.functional.resample(wave, int(sample_rate), fs)


class Speech2Caption:
    """Caption clips with a trained SLAM-AAC model.

    Args:
        train_config: the model's ``config.yaml``.
        model_file: its trained weights (``.safetensors`` or ESPnet ``.pth``); None keeps the built weights.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        dtype: of the whole model, ``float32`` (the reference), ``bfloat16``, ``float16`` or ``auto``.
        batch_size: clips per forward pass; None: as many as the GPU's free memory holds (``inference.batch_size``),
            8 on CPU.
        merge_lora: fold the LoRA adapter into the frozen LLM weights (``inference.lora_merge``): the same
            outputs to the dtype's rounding, no extra matmuls per step.
        decode_config: a decode YAML (``DecodingOptions``); ``**decoding`` fields override it.
        refine: a CLAP for CLAP-Refine (``clap.load_clap`` spec), or True for the one ``refine_config`` names;
        refine_config: a refine YAML (``clap_refine.RefineConfig``: the CLAP, ``lm_weight``, the CLAP's
            options); relative paths in it are looked up beside it first.
    """

    def __init__(
        self,
        train_config: Union[str, Path],
        model_file: Optional[Union[str, Path]] = None,
        device: str = "cpu",
        dtype: str = "float32",
        batch_size: Optional[int] = None,
        merge_lora: bool = True,
        decode_config: Optional[Union[str, Path]] = None,
        refine: Union[str, bool, None] = None,
        refine_config: Optional[Union[str, Path]] = None,
        **decoding,
    ):
        if batch_size is not None and batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        if decode_config is not None:
            self.options = DecodingOptions.from_yaml(decode_config, **decoding)
        else:
            self.options = DecodingOptions.from_dict({k: v for k, v in decoding.items() if v is not None})
        self.batch_size = batch_size
        self.model, self.train_args = load_model(train_config, model_file, self.device, self.dtype)
        if merge_lora:
            merge_lora_weights(self.model.decoder.llm)
        if batch_size is None:
            llm_config = self.model.decoder.llm.config
            self.batch_size = auto_batch_size(llm_config, self.options, self.dtype, torch.device(self.device))
        self.frontend = self.model.frontend
        if self.frontend is None:
            raise ConfigError(f"{train_config}: the model has no front end; Speech2Caption needs waveform input")
        self.tokenizer = self.model.decoder.tokenizer
        self.clap, self.lm_weight = None, 0.0
        if refine or refine_config is not None:
            self._load_clap(refine if isinstance(refine, str) else None, refine_config)

    def _load_clap(self, clap: Optional[str], refine_config: Optional[Union[str, Path]]) -> None:
        config = RefineConfig.from_yaml(refine_config, device=self.device)
        if clap is not None:
            config = dataclasses.replace(config, clap=clap)
        if not config.clap:
            where = f"{refine_config} names no CLAP ('clap:')" if refine_config else "no refine YAML given"
            raise ConfigError(f"CLAP-Refine needs a CLAP: {where}; name one (refine=CLAP)")
        self.clap, self.lm_weight = load_clap(config.clap, **config.clap_options()), config.lm_weight

    @classmethod
    def from_pretrained(
        cls, model: Union[str, Path], model_file: Optional[str] = None, refine: Union[str, bool, None] = None, **kwargs
    ) -> "Speech2Caption":
        """``model``: a packed folder, an experiment dir or a Hub id; ``kwargs`` as for the constructor.

        A packed folder's ``decode.yaml`` is the default ``decode_config``; ``refine=True`` refines with its
        ``refine.yaml`` (and the CLAP it names), ``refine=CLAP`` with another CLAP.
        """
        folder = resolve_model_dir(model)
        config = folder / "config.yaml"
        if not config.is_file():
            raise CheckpointError(f"{folder}: no config.yaml; is this a packed model or an experiment dir?")
        if kwargs.get("decode_config") is None and (folder / "decode.yaml").is_file():
            kwargs["decode_config"] = folder / "decode.yaml"
        if refine is True and kwargs.get("refine_config") is None:
            if not (folder / "refine.yaml").is_file():
                raise ConfigError(f"{model}: the model comes with no refine.yaml; name a CLAP to refine with")
            kwargs["refine_config"] = folder / "refine.yaml"
        return cls(config, model_file or find_model_file(folder), refine=refine, **kwargs)

    def prepare(self, waveform: Union[np.ndarray, torch.Tensor], sample_rate: int) -> torch.Tensor:
        """One clip, ``(samples,)`` or ``(samples, channels)`` at any rate -> mono float32 at the front end's
        rate, exactly as the front end would resample it (so features equal the reference's)."""
        return prepare_waveform(waveform, sample_rate, self.frontend.fs, self.frontend.channel, self.frontend.resampler)

    def __call__(self, waveform: Union[np.ndarray, torch.Tensor], sample_rate: int) -> CaptionResult:
        return self.caption([(waveform, sample_rate)])[0]

    def caption(self, clips: Sequence[Tuple[Union[np.ndarray, torch.Tensor], int]]) -> List[CaptionResult]:
        """Caption clips ``[(waveform, sample_rate), ...]``, ``batch_size`` at a time, in order."""
        out: List[CaptionResult] = []
        for start in range(0, len(clips), self.batch_size):
            out += self._caption_batch(clips[start : start + self.batch_size])
        return out

    @torch.inference_mode()
    def candidates(self, waves: Sequence[torch.Tensor]) -> List[List[Candidate]]:
        """n-best candidates of prepared clips (see ``prepare``), grouped by beam size."""
        lengths = torch.tensor([len(w) for w in waves])
        speech = torch.nn.utils.rnn.pad_sequence(list(waves), batch_first=True)
        embeds, mask = self.model.prefix_embeds(speech.to(self.device), lengths.to(self.device))
        hyps = decode(self.model.decoder.llm, embeds, mask, self.options, self.model.decoder.eos_id)
        return [
            [Candidate(self._text(h.tokens), h.beam_size, h.logprob, h.length) for h in clip_hyps] for clip_hyps in hyps
        ]

    def _text(self, tokens: List[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True).replace("\n", " ")

    def _caption_batch(self, clips) -> List[CaptionResult]:
        return self.caption_prepared([self.prepare(w, sr) for w, sr in clips], clips)

    def caption_prepared(
        self, waves: Sequence[torch.Tensor], clips: Optional[Sequence[Tuple[np.ndarray, int]]] = None
    ) -> List[CaptionResult]:
        """One batch of clips already ``prepare``d (e.g. by loader workers); ``clips``, their original
        ``(waveform, sample_rate)``, are needed only by CLAP-Refine, which hears the audio at its own rate."""
        if self.clap is not None and clips is None:
            raise ConfigError("CLAP-Refine needs the original clips: pass clips=[(waveform, sample_rate), ...]")
        candidates = self.candidates(waves)
        first = [c.beam_size for c in candidates[0]].index(self.options.text_beam_size)
        if self.clap is None:
            return [CaptionResult(c[first].text, c, first) for c in candidates]
        picks = rescore_clips(self.clap, [(np.asarray(w), int(sr)) for w, sr in clips], candidates, self.lm_weight)
        return [
            CaptionResult(c[best].text, c, best, [s.similarity for s in scores])
            for c, (best, scores) in zip(candidates, picks)
        ]
