import json

import sentencepiece
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from espnet_slam_aac.model.decoder import DEFAULT_PROMPT, DEFAULT_TEMPLATE
from espnet_slam_aac.testing.tiny_llm import BOS_ID, EOS_ID, build_tiny_llm


def test_folder_loads_as_a_llama_tokenizer_adding_bos_not_eos_like_vicunas(tiny_llm):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llm)
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token) == (BOS_ID, EOS_ID, None)
    sp = sentencepiece.SentencePieceProcessor(model_file=str(tiny_llm / "tokenizer.model"))
    text = DEFAULT_TEMPLATE.format(DEFAULT_PROMPT) + "a low tone beeps twice"
    assert tokenizer(text).input_ids == [BOS_ID] + sp.encode(text)
    assert tokenizer.decode(tokenizer(text).input_ids, skip_special_tokens=True) == text
    config = json.loads((tiny_llm / "config.json").read_text())
    assert config["vocab_size"] == len(tokenizer) == sp.get_piece_size()
    assert (config["bos_token_id"], config["eos_token_id"]) == (BOS_ID, EOS_ID)


def test_same_arguments_give_the_same_folder(tmp_path):
    texts = ["a soft burst of noise", "fast clicks then a rising sweep"]
    a, b = build_tiny_llm(tmp_path / "a", texts), build_tiny_llm(tmp_path / "b", texts)
    assert (a / "tokenizer.model").read_bytes() == (b / "tokenizer.model").read_bytes()
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
