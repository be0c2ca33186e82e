"""LoRA folded into the frozen weights for inference: a decode step runs the base model's matmuls only.

Unmerged, every adapted projection (q_proj, v_proj in SLAM-AAC) costs two more small matmuls per step, launched one
by one. Merged (``W + scale * B @ A``, peft's ``merge_adapter``), the outputs are those of the unmerged model up
to the rounding of the merged weight in its dtype: exact to float32's rounding in float32 (the token ids of the
tests are equal), within bf16's in bf16 (``benchmarks/bench_decode.py --variants shared,merged`` reports the
largest logit difference beside bf16's rounding at that magnitude). Inference only: the merged model must not
be trained or saved as an adapter.
"""

import torch


def merge_lora(llm: torch.nn.Module) -> bool:
    """Fold the active LoRA adapter of a peft ``llm`` into its base weights, in place. False when ``llm`` has none."""
    from peft import PeftModel

    if not isinstance(llm, PeftModel):
        return False
    with torch.no_grad():
        llm.base_model.merge_adapter()
    return True
