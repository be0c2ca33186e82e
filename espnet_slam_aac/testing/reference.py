"""SLAM-AAC's own decoding call, for equality tests and benchmarks: ``generate`` on the audio + prompt prefix
with the settings of SLAM-LLM's inference script (one call per beam size, greedy settings otherwise)."""

import torch


def reference_generate(model, embeds: torch.Tensor, mask: torch.Tensor, beam: int, max_new_tokens: int) -> torch.Tensor:
    """Token ids ``(batch, new tokens)`` of ``model.decoder.llm.generate`` as SLAM-AAC calls it."""
    tok = model.decoder.tokenizer
    return model.decoder.llm.generate(
        inputs_embeds=embeds,
        attention_mask=mask,
        num_beams=beam,
        num_return_sequences=1,
        max_new_tokens=max_new_tokens,
        min_length=1,
        do_sample=False,
        top_p=1.0,
        temperature=1.0,
        repetition_penalty=1.0,
        length_penalty=1.0,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.eos_token_id,
    )
