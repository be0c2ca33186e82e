"""``AACTask``: SLAM-AAC through ESPnet's training machinery (config, collect-stats, DDP, AMP, resume, averaging).

A config YAML picks every part by name, as in any ESPnet task::

    frontend: eat_fbank        # waveform -> EAT's normalized fbank
    specaug: specaug           # training only
    encoder: eat               # frozen EAT, weights from encoder_conf.checkpoint
    projector: linear          # stack 5 tokens -> MLP
    decoder: llm               # HF causal LM from decoder_conf.model_name_or_path + LoRA
    model: slam_aac

Data: ``speech`` (``wav.scp``, type ``sound``) and ``text`` (raw captions). The preprocessor tokenizes each
caption with the LLM's tokenizer, in the context of the prompt (``CaptionTokenizer``); the model adds
audio, prompt and EOS.
"""

import argparse
import inspect
from pathlib import Path
from typing import Callable, Collection, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from espnet2.asr.encoder.abs_encoder import AbsEncoder
from espnet2.asr.frontend.abs_frontend import AbsFrontend
from espnet2.asr.specaug.abs_specaug import AbsSpecAug
from espnet2.asr.specaug.specaug import SpecAug
from espnet2.tasks.abs_task import AbsTask
from espnet2.train.abs_espnet_model import AbsESPnetModel
from espnet2.train.class_choices import ClassChoices
from espnet2.train.collate_fn import CommonCollateFn
from espnet2.train.preprocessor import AbsPreprocessor
from espnet2.utils.types import str2bool

from espnet_slam_aac.errors import AudioError, ConfigError, DataError, SlamAACError
from espnet_slam_aac.model.decoder import (
    DEFAULT_LLM,
    DEFAULT_LORA,
    DEFAULT_PROMPT,
    DEFAULT_TEMPLATE,
    CaptionTokenizer,
    LLMDecoder,
    check_tokenizer_fits,
    load_tokenizer,
)
from espnet_slam_aac.model.eat import EATConfig
from espnet_slam_aac.model.encoder import EATEncoder
from espnet_slam_aac.model.frontend import EATFbank
from espnet_slam_aac.model.projector import AbsProjector, LinearProjector
from espnet_slam_aac.model.slam_aac import SlamAAC, cast_frozen
from espnet_slam_aac.tasks.guard import GuardedTrainer
from espnet_slam_aac.utils.checkpoint import safe_torch_load
from espnet_slam_aac.utils.config import DTYPES, check_keys, resolve_dtype

FROZEN_DTYPES = DTYPES

frontend_choices = ClassChoices(
    name="frontend", classes=dict(eat_fbank=EATFbank), type_check=AbsFrontend, default="eat_fbank", optional=True
)
specaug_choices = ClassChoices(
    name="specaug", classes=dict(specaug=SpecAug), type_check=AbsSpecAug, default=None, optional=True
)
encoder_choices = ClassChoices(name="encoder", classes=dict(eat=EATEncoder), type_check=AbsEncoder, default="eat")
projector_choices = ClassChoices(
    name="projector", classes=dict(linear=LinearProjector), type_check=AbsProjector, default="linear"
)
decoder_choices = ClassChoices(name="decoder", classes=dict(llm=LLMDecoder), type_check=LLMDecoder, default="llm")
model_choices = ClassChoices(
    name="model", classes=dict(slam_aac=SlamAAC), type_check=AbsESPnetModel, default="slam_aac"
)


def resolve_frozen_dtype(name: str, ngpu: int) -> torch.dtype:
    """``auto``: on GPUs (``--ngpu > 0`` and CUDA present) the dtype ESPnet's ``use_amp`` computes in, bfloat16
    where the GPU supports it and float16 otherwise; float32 on CPU (whose bf16 products are slow)."""
    if name not in FROZEN_DTYPES:
        raise ConfigError(f"frozen_dtype must be one of {FROZEN_DTYPES}, got {name!r}")
    return resolve_dtype(name, "cuda" if ngpu > 0 and torch.cuda.is_available() else "cpu")


# constructor arguments the task fills in itself, per component: not keys of its *_conf section
TASK_SET = dict(
    frontend=(),
    specaug=(),
    encoder=(),
    decoder=(),  # dtype: build_model explains that --frozen_dtype sets it
    projector=("input_size", "output_size"),
    model=("frontend", "specaug", "encoder", "projector", "decoder"),
)


def check_component_confs(args: argparse.Namespace) -> None:
    """Every ``<name>_conf`` key is an argument of the chosen component's constructor: ConfigError naming the
    YAML, the section, the key and the known keys (instead of a TypeError from deep inside the build)."""
    where = f"{args.config}: " if getattr(args, "config", None) else ""
    for choices in AACTask.class_choices_list:
        name = choices.name
        choice, conf = getattr(args, name, None), getattr(args, f"{name}_conf", None) or {}
        if choice is None:
            continue
        params = inspect.signature(choices.get_class(choice).__init__).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            continue
        known = [k for k in params if k != "self" and k not in TASK_SET[name]]
        check_keys(conf, known, f"{where}{name}_conf ({name} {choice!r})")
    lora = (getattr(args, "decoder_conf", None) or {}).get("lora")
    if isinstance(lora, dict):
        check_keys(lora, DEFAULT_LORA, f"{where}decoder_conf.lora")


def without_worker_traceback(err: SlamAACError) -> SlamAACError:
    """Our error as raised, not as a DataLoader worker re-raises it (its message then holds the worker's
    traceback, ``--num_workers`` > 0): the last line of that traceback is the original message."""
    message = str(err)
    if "\nOriginal Traceback" not in message:
        return err
    return type(err)(message.rstrip().splitlines()[-1].split(": ", 1)[-1])


def max_audio_embeddings(args: argparse.Namespace) -> int:
    """The most audio embeddings the model puts before the prompt: EAT's tokens for the longest fbank the front
    end gives (``target_length``, or ``max_frames`` for whole clips), stacked ``downsample_rate`` to one."""
    fbank = {k: p.default for k, p in inspect.signature(EATFbank.__init__).parameters.items()}
    projector = {k: p.default for k, p in inspect.signature(LinearProjector.__init__).parameters.items()}
    fbank.update(getattr(args, "frontend_conf", None) or {})
    projector.update(getattr(args, "projector_conf", None) or {})
    frames, rate = fbank["target_length"] or fbank["max_frames"], projector["downsample_rate"]
    return EATConfig().num_tokens(int(frames)) // int(rate)


class CaptionPreprocessor(AbsPreprocessor):
    """``text`` (a caption string) -> int64 token ids of the caption as it follows the prompt (no EOS);
    ``speech`` is checked to be finite (a NaN/inf sample would make the loss NaN), named by key. A caption of
    more than ``max_caption_tokens`` tokens (what the LLM's positions leave after audio, prompt and EOS) is a
    DataError naming the utterance: at collect-stats, before any training step."""

    def __init__(
        self,
        train: bool,
        captions: CaptionTokenizer,
        text_name: str = "text",
        speech_name: str = "speech",
        max_caption_tokens: Optional[int] = None,
        limit_reason: str = "",
    ):
        super().__init__(train)
        self.captions = captions
        self.text_name = text_name
        self.speech_name = speech_name
        self.max_caption_tokens = max_caption_tokens
        self.limit_reason = limit_reason

    def __call__(self, uid: str, data: Dict) -> Dict[str, np.ndarray]:
        speech = data.get(self.speech_name)
        if speech is not None and not np.isfinite(speech).all():
            bad = int(np.size(speech) - np.isfinite(speech).sum())
            raise AudioError(
                f"utterance {uid!r}: {bad} NaN or infinite samples in '{self.speech_name}'; fix or drop the file "
                "(validate-data --check_audio finds every such file)"
            )
        if self.text_name in data:
            caption = data[self.text_name].strip()
            if not caption:
                raise DataError(f"utterance {uid!r} has an empty caption in '{self.text_name}'; drop it or fill it")
            ids = self.captions.caption_ids(caption)
            if self.max_caption_tokens is not None and len(ids) > self.max_caption_tokens:
                raise DataError(
                    f"utterance {uid!r}: its caption is {len(ids)} tokens long, more than the {self.max_caption_tokens}"
                    f" the LLM can take ({self.limit_reason}); shorten the caption or leave the utterance out"
                )
            data[self.text_name] = np.array(ids, dtype=np.int64)
        return data


class AACTask(AbsTask):
    num_optimizers: int = 1

    class_choices_list = [
        frontend_choices,
        specaug_choices,
        encoder_choices,
        projector_choices,
        decoder_choices,
        model_choices,
    ]

    # ESPnet's, plus a progress line on stderr (tasks/monitor.py), stopping on non-finite losses (tasks/guard.py)
    trainer = GuardedTrainer

    @classmethod
    def get_parser(cls):
        parser = super().get_parser()
        # ESPnet's attention plots hook its own attention modules; the LLM and EAT have none of those, so the
        # plotting pass would only cost an extra forward pass each epoch
        parser.set_defaults(num_att_plot=0)
        return parser

    @classmethod
    def add_task_arguments(cls, parser: argparse.ArgumentParser):
        group = parser.add_argument_group(description="Task related")
        group.add_argument(
            "--frozen_dtype",
            default="auto",
            choices=FROZEN_DTYPES,
            help="dtype of the frozen weights (EAT, base LLM); 'auto' = bfloat16 on GPU (float16 where bf16 is "
            "unsupported), float32 on CPU. Trainable weights stay float32 (--use_amp for half-precision compute).",
        )
        group = parser.add_argument_group(description="Preprocess related")
        group.add_argument(
            "--use_preprocessor",
            type=str2bool,
            default=True,
            help="Tokenize captions with the LLM's tokenizer (needed for training)",
        )
        for class_choices in cls.class_choices_list:
            class_choices.add_arguments(group)

    @classmethod
    def build_collate_fn(
        cls, args: argparse.Namespace, train: bool
    ) -> Callable[[Collection[Tuple[str, Dict[str, np.ndarray]]]], Tuple[List[str], Dict[str, torch.Tensor]]]:
        return CommonCollateFn(float_pad_value=0.0, int_pad_value=-1)

    @classmethod
    def build_preprocess_fn(cls, args: argparse.Namespace, train: bool) -> Optional[CaptionPreprocessor]:
        if not args.use_preprocessor:
            return None
        conf = args.decoder_conf
        from transformers import AutoConfig

        llm = conf.get("model_name_or_path", DEFAULT_LLM)
        llm_config = AutoConfig.from_pretrained(llm).get_text_config()
        tokenizer = load_tokenizer(conf.get("tokenizer_name_or_path") or llm)
        check_tokenizer_fits(tokenizer, llm_config.vocab_size, llm)
        prompt, template = conf.get("prompt", DEFAULT_PROMPT), conf.get("template", DEFAULT_TEMPLATE)
        captions = CaptionTokenizer(tokenizer, prompt, template)
        positions = getattr(llm_config, "max_position_embeddings", None)
        if positions is None:  # the LLM states no limit
            return CaptionPreprocessor(train, captions)
        audio = max_audio_embeddings(args)
        reason = (
            f"{llm} has {positions} positions; up to {audio} go to the audio, {len(captions.prompt_ids)} to the "
            "prompt and 1 to EOS"
        )
        limit = positions - audio - len(captions.prompt_ids) - 1
        return CaptionPreprocessor(train, captions, max_caption_tokens=limit, limit_reason=reason)

    @classmethod
    def required_data_names(cls, train: bool = True, inference: bool = False) -> Tuple[str, ...]:
        return ("speech",) if inference else ("speech", "text")

    @classmethod
    def optional_data_names(cls, train: bool = True, inference: bool = False) -> Tuple[str, ...]:
        return ()

    @classmethod
    def main_worker(cls, args: argparse.Namespace):
        check_component_confs(args)  # collect-stats builds no model: a typo must still stop it
        if args.collect_stats:
            # collect-stats only measures shapes (there are no feature statistics to gather), so ESPnet can skip
            # building the model, and loading the LLM
            args.model_conf = {**args.model_conf, "extract_feats_in_collect_stats": False}
        try:
            with safe_torch_load():  # --init_param, --resume, averaging: no checkpoint runs code (utils/checkpoint.py)
                super().main_worker(args)
        except SlamAACError as err:
            raise without_worker_traceback(err) from None

    @classmethod
    def build_model_from_file(
        cls,
        config_file: Optional[Union[Path, str]] = None,
        model_file: Optional[Union[Path, str]] = None,
        device: str = "cpu",
    ) -> Tuple[SlamAAC, argparse.Namespace]:
        with safe_torch_load():  # ESPnet reads model_file with torch.load(weights_only=False)
            return super().build_model_from_file(config_file, model_file, device)

    @classmethod
    def build_model(cls, args: argparse.Namespace) -> SlamAAC:
        check_component_confs(args)
        frozen_dtype = resolve_frozen_dtype(getattr(args, "frozen_dtype", "auto"), getattr(args, "ngpu", 0))
        decoder_conf = dict(args.decoder_conf)
        if decoder_conf.pop("dtype", None) is not None:
            raise ConfigError("the LLM's dtype is set by --frozen_dtype; leave decoder_conf.dtype unset")
        frontend = frontend_choices.get_class(args.frontend)(**args.frontend_conf) if args.frontend else None
        specaug = specaug_choices.get_class(args.specaug)(**args.specaug_conf) if args.specaug else None
        encoder_conf = dict(args.encoder_conf)
        if frontend is not None:
            encoder_conf.setdefault("input_size", frontend.output_size())  # the encoder checks what it is given
        encoder = cast_frozen(encoder_choices.get_class(args.encoder)(**encoder_conf), frozen_dtype)
        decoder = decoder_choices.get_class(args.decoder)(dtype=frozen_dtype, **decoder_conf)
        projector = projector_choices.get_class(args.projector)(
            input_size=encoder.output_size(), output_size=decoder.hidden_size, **args.projector_conf
        )
        return model_choices.get_class(args.model)(
            frontend=frontend,
            specaug=specaug,
            encoder=encoder,
            projector=projector,
            decoder=decoder,
            **args.model_conf,
        )
