"""The LLM decoder: a Hugging Face causal LM, frozen, with optional peft LoRA, and SLAM-AAC's prompt.

SLAM-AAC's LLM input for one clip (reference: SLAM-LLM ``audio_dataset.py`` and ``slam_model_aac.py``):

    [audio embeddings][<s> USER: Describe the audio you hear. \\n ASSISTANT:][caption][</s>]

- The audio comes before BOS; there is no system prompt and no audio token.
- The template is ``"USER: {} \\n ASSISTANT:"`` (upstream appends a space to the prompt and formats
  ``"USER: {}\\n ASSISTANT:"``, the same string). The caption follows ``ASSISTANT:`` with no space.
- Upstream tokenizes prompt + caption as one string (so the caption's first piece is the one that follows
  ``:``, not a word-initial one) and appends EOS. ``CaptionTokenizer`` does the same, once per caption, and the
  model masks by position: the loss covers caption + EOS only. The pad id is EOS.
"""

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from espnet_slam_aac.errors import ConfigError

DEFAULT_LLM = "lmsys/vicuna-7b-v1.5"
DEFAULT_PROMPT = "Describe the audio you hear."
DEFAULT_TEMPLATE = "USER: {} \n ASSISTANT:"
DEFAULT_LORA = dict(r=8, alpha=32, dropout=0.05, target_modules=["q_proj", "v_proj"])
IGNORE_ID = -100  # label of positions without loss (audio, prompt, padding)
# How many more embeddings than tokenizer entries an LLM may have: tables are padded to a multiple of 64/128 and
# some reserve unused ids (Qwen2: 271, Phi-2: 905), never more than an eighth of the table. A larger gap means the
# tokenizer is not this LLM's (a folder without tokenizer.model makes transformers build a 3-token tokenizer).
MAX_VOCAB_PADDING = 1024


def check_tokenizer_fits(tokenizer, vocab_size: int, llm: str) -> None:
    """ConfigError unless ``tokenizer`` covers the LLM's vocabulary of ``vocab_size`` embeddings (within padding)."""
    n, padding = len(tokenizer), min(MAX_VOCAB_PADDING, vocab_size // 8)
    if n > vocab_size or vocab_size - n > padding:
        source = getattr(tokenizer, "name_or_path", "?")
        raise ConfigError(
            f"the tokenizer from {source} ({n} tokens) does not fit the LLM {llm} ({vocab_size} embeddings, at most "
            f"{padding} of them padding): its captions would be garbage. Is the tokenizer file "
            "(tokenizer.model or tokenizer.json) missing there? Point decoder_conf.tokenizer_name_or_path at the "
            "LLM's own tokenizer"
        )


def load_tokenizer(name_or_path: str):
    """The LLM's tokenizer with ``pad = eos`` (as SLAM-LLM's ``setup_tokenizer``)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    if tokenizer.eos_token_id is None:
        raise ConfigError(f"the tokenizer of {name_or_path} has no EOS token; captions need one to end")
    tokenizer.pad_token_id = tokenizer.eos_token_id
    return tokenizer


class CaptionTokenizer:
    """Token ids of the prompt and of captions, exactly as the reference builds them.

    ``prompt_ids`` = the reference's ``tokenizer.encode(prompt)``: the pieces of the formatted prompt after
    the special tokens the tokenizer puts in front (BOS for Llama/Vicuna); an EOS the tokenizer would append is
    not part of it. ``caption_ids(c)`` = the pieces that follow the prompt when prompt + ``c`` is tokenized as
    one string, i.e. the reference's ``tokenizer.encode(prompt + caption)`` minus its prompt part (no EOS).
    Should a tokenizer merge the prompt's last piece with the caption's first characters, the caption is
    tokenized on its own instead (logged), so that the prompt the model is trained on is always the one it is
    prompted with at inference.
    """

    def __init__(self, tokenizer, prompt: str = DEFAULT_PROMPT, template: str = DEFAULT_TEMPLATE):
        if "{}" not in template:
            raise ConfigError(f"the prompt template must contain '{{}}' where the prompt goes, got {template!r}")
        self.tokenizer = tokenizer
        self.prompt_text = template.format(prompt)
        self._prompt_pieces = self._pieces(self.prompt_text)
        specials = set(tokenizer.all_special_ids)
        if not [i for i in self._prompt_pieces if i not in specials]:
            raise ConfigError(
                f"the tokenizer from {getattr(tokenizer, 'name_or_path', '?')} encodes the prompt "
                f"{self.prompt_text!r} to special tokens only ({self._prompt_pieces}): it has no vocabulary (is its "
                "tokenizer.model or tokenizer.json missing?)"
            )
        encoded = list(tokenizer(self.prompt_text)["input_ids"])
        n = len(self._prompt_pieces)
        start = next((i for i in range(len(encoded)) if encoded[i : i + n] == self._prompt_pieces), None)
        if start is None:
            raise ConfigError(f"cannot find the prompt's pieces in the tokenizer's encoding of {self.prompt_text!r}")
        self.prompt_ids: List[int] = encoded[: start + n]
        self.eos_id: int = tokenizer.eos_token_id

    def _pieces(self, text: str) -> List[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def caption_ids(self, caption: str) -> List[int]:
        joint = self._pieces(self.prompt_text + caption)
        n = len(self._prompt_pieces)
        if joint[:n] == self._prompt_pieces:
            return joint[n:]
        logging.warning(
            "caption %r merges with the prompt's last piece when tokenized after it; tokenizing it alone", caption
        )
        return self._pieces(caption)

    def sequence(self, caption: str) -> Tuple[List[int], List[int]]:
        """The text part of one training example: ids ``[BOS prompt caption EOS]`` and their labels
        (``IGNORE_ID`` on BOS and prompt). The model prepends the audio embeddings, which have no labels."""
        cap = self.caption_ids(caption) + [self.eos_id]
        return self.prompt_ids + cap, [IGNORE_ID] * len(self.prompt_ids) + cap


def lora_config(
    r: int = 8, alpha: int = 32, dropout: float = 0.05, target_modules: Sequence[str] = ("q_proj", "v_proj")
):
    """peft's ``LoraConfig`` for SLAM-AAC's keys (``aac_config.PeftConfig``: bias none, causal LM)."""
    from peft import LoraConfig

    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


class LLMDecoder(nn.Module):
    """Decoder ``llm``: a frozen Hugging Face causal LM with peft LoRA, its tokenizer and the prompt.

    Args:
        model_name_or_path: local folder or Hub id of any ``AutoModelForCausalLM`` (Vicuna-7B v1.5 by default).
        tokenizer_name_or_path: where the tokenizer is, when not beside the model.
        lora: ``{r, alpha, dropout, target_modules}`` (default: SLAM-AAC's 8 / 32 / 0.05 / q_proj, v_proj; keys
            left out take these values); ``None`` freezes the whole LLM and only the projector trains.
        prompt, template: the instruction and the text around it (SLAM-AAC's by default).
        dtype: dtype of the base LLM's weights (``torch.dtype`` or name; None = float32); the task sets it from
            ``--frozen_dtype``. LoRA weights are kept in float32 whatever this is.
        load_pretrained_weights: ``False`` builds the architecture of ``config.json`` with random weights
            (benchmarks of large shapes; as ESPnet's ``hugging_face_transformers`` decoder option).

    ``forward(inputs_embeds, attention_mask) -> logits``. ``llm`` is the Hugging Face model (a
    ``PeftModelForCausalLM`` with LoRA); ``tokenizer`` and ``captions`` (a ``CaptionTokenizer``) serve callers.
    """

    def __init__(
        self,
        model_name_or_path: str = DEFAULT_LLM,
        tokenizer_name_or_path: Optional[str] = None,
        lora: Optional[Dict] = DEFAULT_LORA,
        prompt: str = DEFAULT_PROMPT,
        template: str = DEFAULT_TEMPLATE,
        dtype=None,
        load_pretrained_weights: bool = True,
    ):
        super().__init__()
        from transformers import AutoConfig, AutoModelForCausalLM

        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype or torch.float32
        self.tokenizer = load_tokenizer(tokenizer_name_or_path or model_name_or_path)
        config = AutoConfig.from_pretrained(model_name_or_path)
        check_tokenizer_fits(self.tokenizer, config.get_text_config().vocab_size, model_name_or_path)
        self.captions = CaptionTokenizer(self.tokenizer, prompt, template)
        if load_pretrained_weights:
            llm = AutoModelForCausalLM.from_pretrained(model_name_or_path, config=config, dtype=dtype)
        else:
            llm = AutoModelForCausalLM.from_config(config, dtype=dtype)
        check_tokenizer_fits(self.tokenizer, llm.get_input_embeddings().num_embeddings, model_name_or_path)
        llm.requires_grad_(False)
        if lora is not None:
            from peft import get_peft_model

            unknown = set(lora) - set(DEFAULT_LORA)
            if unknown:
                raise ConfigError(f"unknown LoRA option(s) {sorted(unknown)}; known: {sorted(DEFAULT_LORA)}")
            llm = get_peft_model(llm, lora_config(**{**DEFAULT_LORA, **lora}))
        self.llm = llm
        self.register_buffer("prompt_ids", torch.tensor(self.captions.prompt_ids, dtype=torch.long), persistent=False)

    @property
    def eos_id(self) -> int:
        return self.captions.eos_id

    @property
    def hidden_size(self) -> int:
        return self.llm.get_input_embeddings().embedding_dim

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.llm.get_input_embeddings()(ids)

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        embedding = self.llm.get_input_embeddings()
        out = self.llm(
            inputs_embeds=inputs_embeds.to(embedding.weight.dtype), attention_mask=attention_mask, use_cache=False
        )
        return out.logits
