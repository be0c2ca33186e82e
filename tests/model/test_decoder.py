import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from espnet_slam_aac.errors import ConfigError
from espnet_slam_aac.model.decoder import (
    DEFAULT_LORA,
    IGNORE_ID,
    CaptionTokenizer,
    LLMDecoder,
    check_tokenizer_fits,
)

WORDS = ["▁USER:", "▁Describe", "▁the", "▁audio", "▁you", "▁hear.", "▁\n", "▁ASSISTANT:", "▁dog", "▁barks"]


def fixed_tokenizer(extra_merges=()):
    """A Llama tokenizer (BPE, metaspace, BOS added) whose pieces are the words above, built by hand."""
    from transformers import LlamaTokenizer

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for c in sorted({c for w in WORDS for c in w} | {"a", "!"}):
        vocab[c] = len(vocab)
    merges = list(extra_merges)
    for left, right in extra_merges:
        vocab[left + right] = len(vocab)
    for w in WORDS:
        for i in range(2, len(w) + 1):
            if w[:i] not in vocab:
                vocab[w[:i]] = len(vocab)
                merges.append((w[: i - 1], w[i - 1]))
    tokenizer = LlamaTokenizer(vocab=vocab, merges=merges, add_bos_token=True)
    tokenizer.pad_token_id = tokenizer.eos_token_id
    return tokenizer


def test_sequence_is_bos_prompt_caption_eos_with_loss_on_caption_and_eos_only():
    tokenizer = fixed_tokenizer()
    ids, labels = CaptionTokenizer(tokenizer).sequence("a dog barks")
    pieces = tokenizer.convert_ids_to_tokens(ids)
    # the caption follows "ASSISTANT:" with no space: its first piece is "a", not the word-initial "▁a"
    assert pieces == ["<s>"] + WORDS[:8] + ["a", "▁dog", "▁barks", "</s>"]
    assert labels == [IGNORE_ID] * 9 + ids[9:]
    assert tokenizer.decode(ids[1:9]) == "USER: Describe the audio you hear. \n ASSISTANT:"


def test_caption_merging_with_the_prompt_is_tokenized_alone_keeping_the_prompt(caplog):
    tokenizer = fixed_tokenizer(extra_merges=[(":", "!")])  # ranks first: "ASSISTANT:!" -> "▁ASSISTANT", ":!"
    captions = CaptionTokenizer(tokenizer)
    assert tokenizer.convert_ids_to_tokens(captions.prompt_ids)[-1] == "▁ASSISTANT:"
    ids = captions.caption_ids("! dog")
    assert tokenizer.convert_ids_to_tokens(ids) == ["▁", "!", "▁dog"]
    assert "merges with the prompt" in caplog.text


def test_template_without_placeholder_is_refused():
    with pytest.raises(ConfigError, match="must contain"):
        CaptionTokenizer(fixed_tokenizer(), template="USER: ASSISTANT:")


def test_default_lora_is_slam_aacs_on_q_and_v_only(tiny_llm):
    decoder = LLMDecoder(str(tiny_llm))
    config = decoder.llm.peft_config["default"]
    assert (config.r, config.lora_alpha, config.lora_dropout) == (8, 32, 0.05)
    assert set(config.target_modules) == {"q_proj", "v_proj"} and config.bias == "none"
    trainable = {n: p for n, p in decoder.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert all(".q_proj." in n or ".v_proj." in n for n in trainable)
    hidden, layers = decoder.hidden_size, decoder.llm.config.num_hidden_layers
    assert sum(p.numel() for p in trainable.values()) == layers * 2 * (2 * hidden * 8)
    assert decoder.tokenizer.pad_token_id == decoder.tokenizer.eos_token_id == decoder.eos_id


def test_lora_options_come_from_the_config_and_none_freezes_the_llm(tiny_llm):
    decoder = LLMDecoder(str(tiny_llm), lora=dict(r=4, target_modules=["q_proj", "k_proj", "o_proj"]))
    config = decoder.llm.peft_config["default"]
    assert (config.r, config.lora_alpha) == (4, DEFAULT_LORA["alpha"])
    assert set(config.target_modules) == {"q_proj", "k_proj", "o_proj"}
    assert not any(p.requires_grad for p in LLMDecoder(str(tiny_llm), lora=None).parameters())
    with pytest.raises(ConfigError, match="unknown LoRA option"):
        LLMDecoder(str(tiny_llm), lora=dict(rank=8))


def test_base_weights_take_the_given_dtype_and_lora_stays_float32(tiny_llm):
    decoder = LLMDecoder(str(tiny_llm), dtype="bfloat16")
    dtypes = {p.dtype for p in decoder.parameters() if not p.requires_grad}
    assert dtypes == {torch.bfloat16}
    assert {p.dtype for p in decoder.parameters() if p.requires_grad} == {torch.float32}
    embeds = torch.randn(2, 5, decoder.hidden_size)
    logits = decoder(embeds, torch.ones(2, 5, dtype=torch.long))
    assert logits.shape == (2, 5, len(decoder.tokenizer))


FIXTURE_MODEL = Path(__file__).resolve().parents[1] / "fixtures" / "premove_packed" / "model"


def test_packed_model_without_its_tokenizer_file_fails_caption_naming_tokenizer_and_llm(tmp_path):
    """transformers builds a 3-token tokenizer from tokenizer_config.json alone: every caption would be empty."""
    packed = tmp_path / "model"
    shutil.copytree(FIXTURE_MODEL, packed)
    (packed / "sources" / "llm" / "tokenizer.model").unlink()
    clip = FIXTURE_MODEL.parent / "clips" / "clip0.wav"
    cmd = [sys.executable, "-m", "espnet_slam_aac.cli", "caption", str(clip), "--model", str(packed)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and run.stdout == "" and "Traceback" not in run.stderr, run.stderr[-2000:]
    llm = packed / "sources" / "llm"
    assert f"error: the tokenizer from {llm} (3 tokens) does not fit the LLM {llm} (320 embeddings" in run.stderr


def test_tokenizer_must_cover_the_llm_vocabulary_within_padding():
    tokenizer = fixed_tokenizer()
    n = len(tokenizer)
    check_tokenizer_fits(tokenizer, n, "llm")
    check_tokenizer_fits(tokenizer, n + n // 8, "llm")  # an embedding table padded to a round size
    with pytest.raises(ConfigError, match=r"tokenizer .* does not fit the LLM big-llm"):
        check_tokenizer_fits(tokenizer, n * 100, "big-llm")
    with pytest.raises(ConfigError, match="does not fit"):
        check_tokenizer_fits(tokenizer, n - 1, "llm")  # ids past the embedding table


def test_prompt_of_special_tokens_only_is_refused():
    with pytest.raises(ConfigError, match="encodes the prompt .* to special tokens only"):
        CaptionTokenizer(fixed_tokenizer(), prompt="", template="{}")
