"""Tiny stand-ins for Vicuna: a random-init Llama with a sentencepiece tokenizer trained on the spot.

``build_tiny_llm`` writes a Hugging Face folder laid out like ``lmsys/vicuna-7b-v1.5``: ``config.json`` +
``model.safetensors`` (a ``LlamaForCausalLM``) and a sentencepiece ``tokenizer.model`` with a
``tokenizer_config.json`` (``LlamaTokenizer``, BOS added, EOS not, no pad token). Transformers converts the
``.model`` file when the folder is loaded, as it does for Vicuna, so the decoder's tokenization path is the
real one. Tests and the mini recipe load the folder by path, exactly as a hub id would be loaded.
"""

import io
import json
from pathlib import Path
from typing import Iterable, Union

import torch

from espnet_slam_aac.model.decoder import DEFAULT_PROMPT, DEFAULT_TEMPLATE

# Llama's special ids: <unk> 0, <s> 1, </s> 2; bytes fall back to <0x00>..<0xFF> as in Llama's tokenizer.
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2


def train_sentencepiece(texts: Iterable[str], vocab_size: int = 384) -> bytes:
    """A BPE sentencepiece model (serialized) with Llama's conventions: byte fallback, dummy prefix, no
    normalization, digits split. ``vocab_size`` is an upper bound: a small corpus may yield fewer pieces."""
    import sentencepiece

    out = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(list(texts)),
        model_writer=out,
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        model_type="bpe",
        unk_id=UNK_ID,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        pad_id=-1,
        byte_fallback=True,
        character_coverage=1.0,
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        split_digits=True,
        allow_whitespace_only_pieces=True,
        minloglevel=2,
    )
    return out.getvalue()


def write_tokenizer(out_dir: Union[str, Path], texts: Iterable[str], vocab_size: int = 384) -> int:
    """Write a Llama tokenizer laid out as Vicuna's (``tokenizer.model`` + ``tokenizer_config.json``: BOS added,
    EOS not, no pad token), trained on ``texts`` and SLAM-AAC's prompt (weighted as 20 sentences, so that the
    prompt gets pieces of its own). Returns the number of pieces."""
    import sentencepiece

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spm_bytes = train_sentencepiece(list(texts) + [DEFAULT_TEMPLATE.format(DEFAULT_PROMPT)] * 20, vocab_size)
    (out_dir / "tokenizer.model").write_bytes(spm_bytes)
    tokenizer_config = {
        "tokenizer_class": "LlamaTokenizer",
        "add_bos_token": True,
        "add_eos_token": False,
        "legacy": False,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": None,
        "model_max_length": 4096,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2), encoding="utf-8")
    return sentencepiece.SentencePieceProcessor(model_proto=spm_bytes).get_piece_size()


def llama_config(vocab_size: int, hidden_size: int, num_layers: int, num_heads: int, intermediate_size: int, **kw):
    """A Llama-2-style config (untied head, Llama's special ids)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        tie_word_embeddings=False,
        **kw,
    )


def build_tiny_llm(
    out_dir: Union[str, Path],
    texts: Iterable[str],
    vocab_size: int = 384,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 128,
    initializer_range: float = 0.1,
    seed: int = 0,
) -> Path:
    """Write a random-init Llama and its tokenizer (``write_tokenizer``) to ``out_dir``; return the folder.

    ``texts`` (e.g. the training captions) train the tokenizer; the LLM's vocabulary is its pieces. The same
    arguments give the same folder. ``initializer_range`` (weights' std) is larger than Llama's 0.02: with 64
    dimensions, a head that small keeps every logit near 0, and LoRA (which cannot change the head) could
    barely move the output distribution.
    """
    from transformers import LlamaForCausalLM

    out_dir = Path(out_dir)
    n_pieces = write_tokenizer(out_dir, texts, vocab_size)
    config = llama_config(
        n_pieces,
        hidden_size,
        num_layers,
        num_heads,
        intermediate_size,
        max_position_embeddings=1024,
        initializer_range=initializer_range,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.save_pretrained(out_dir)
    return out_dir
