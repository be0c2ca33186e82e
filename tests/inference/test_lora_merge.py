"""lora_merge: LoRA folded into the frozen weights decodes the same captions, faster, from one set of matmuls."""

import torch
from peft import get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from espnet_slam_aac.inference.decoding import DecodingOptions, decode
from espnet_slam_aac.inference.lora_merge import merge_lora
from espnet_slam_aac.model.decoder import lora_config

EOS = 2


def lora_llm(seed: int = 0):
    """A tiny Llama with a LoRA adapter whose B is not zero, as after training."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=48,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        bos_token_id=1,
        eos_token_id=EOS,
        pad_token_id=EOS,
    )
    base = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        base.lm_head.weight *= 8.0
    llm = get_peft_model(base, lora_config()).eval()
    with torch.no_grad():
        for name, param in llm.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.3)
    return llm


def test_merged_lora_gives_the_logits_and_captions_of_the_adapter():
    llm = lora_llm()
    generator = torch.Generator().manual_seed(3)
    embeds = torch.randn(3, 9, 32, generator=generator)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[0, :4] = 0
    options = DecodingOptions(beam_sizes=(1, 2, 4), max_new_tokens=12, stop_rule="slam_aac")
    with torch.no_grad():
        before = llm(inputs_embeds=embeds, attention_mask=mask).logits
    unmerged = decode(llm, embeds, mask, options, EOS)
    assert merge_lora(llm)
    with torch.no_grad():
        after = llm(inputs_embeds=embeds, attention_mask=mask).logits
    merged = decode(llm, embeds, mask, options, EOS)
    assert (after - before).abs().max() > 0  # the adapter was folded in, not dropped: outputs moved by rounding only
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    assert [[h.tokens for h in c] for c in merged] == [[h.tokens for h in c] for c in unmerged]


def test_a_model_without_adapter_is_left_alone():
    torch.manual_seed(0)
    plain = LlamaForCausalLM(LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                         num_attention_heads=2))  # fmt: skip
    assert merge_lora(plain) is False
