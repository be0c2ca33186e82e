"""SLAM-LLM's SLAM-AAC checkpoints -> our trainable-only state dict and config.

SLAM-LLM's ``slam_model`` holds ``encoder`` (EAT), ``llm`` (the ``PeftModel`` around Vicuna) and
``encoder_projector``; ``save_model_checkpoint_peft`` writes ``model.pt`` = the parameters that require grad,
under their ``named_parameters`` names:

    encoder_projector.linear{1,2}.{weight,bias}
    llm.base_model.model.model.layers.N.self_attn.{q,v}_proj.lora_{A,B}.default.weight

Released ("old-format") checkpoints come with a peft folder (``peft_ckpt``): ``adapter_config.json`` and
``adapter_model.{safetensors,bin}`` with peft's saved names (no ``llm.`` prefix, no adapter name):

    base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight

Both convert by the tables below; the LoRA rank and target modules follow from the tensors, alpha and dropout
from ``adapter_config.json`` when given. When both files hold a tensor, ``model.pt`` wins, as in SLAM-LLM
(``ckpt_path`` is loaded after ``peft_ckpt``).
"""

import json
import logging
import re
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

import torch

from espnet_slam_aac.errors import CheckpointError
from espnet_slam_aac.utils.checkpoint import read_state_dict

# (pattern, replacement): upstream name -> our name. A key no pattern matches is an error.
MODEL_PT_RENAMES: List[Tuple[str, str]] = [
    (r"^encoder_projector\.(linear[12]\.(?:weight|bias))$", r"projector.\1"),
    (
        r"^llm\.base_model\.model\.(.+)\.lora_([AB])(?:\.default)?\.weight$",
        r"decoder.llm.base_model.model.\1.lora_\2.default.weight",
    ),
]
PEFT_RENAMES: List[Tuple[str, str]] = [
    (
        r"^base_model\.model\.(.+)\.lora_([AB])(?:\.default)?\.weight$",
        r"decoder.llm.base_model.model.\1.lora_\2.default.weight",
    ),
]
LORA_KEY = re.compile(r"^decoder\.llm\.base_model\.model\.(.+)\.lora_([AB])\.default\.weight$")


def rename(state: Mapping[str, torch.Tensor], table: List[Tuple[str, str]], where: str) -> Dict[str, torch.Tensor]:
    out, unknown = {}, []
    for key, value in state.items():
        for pattern, replacement in table:
            if re.match(pattern, key):
                out[re.sub(pattern, replacement, key)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(
            f"{where} holds tensors that are not SLAM-AAC's projector or LoRA: {unknown[:5]}"
            f"{' ...' if len(unknown) > 5 else ''} ({len(unknown)} in all); is it a SLAM-AAC checkpoint?"
        )
    return out


def load_tensors(path: Path) -> Dict[str, torch.Tensor]:
    """A flat state dict from ``.safetensors`` or a torch pickle (``utils.checkpoint``: nothing can run code)."""
    if not path.is_file():
        raise CheckpointError(f"no such checkpoint file: {path}")
    state = read_state_dict(path)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is not a flat state dict of tensors (name -> tensor)")
    return dict(state)


def read_slam_checkpoint(
    model_pt: Path, peft_dir: Optional[Path] = None
) -> Tuple[Dict[str, torch.Tensor], Optional[dict]]:
    """Our-named tensors (float32) from ``model.pt`` and, optionally, a peft folder; and its adapter config."""
    state: Dict[str, torch.Tensor] = {}
    adapter_config = None
    if peft_dir is not None:
        peft_dir = Path(peft_dir)
        config_file = peft_dir / "adapter_config.json"
        if config_file.is_file():
            adapter_config = json.loads(config_file.read_text(encoding="utf-8"))
        files = [peft_dir / n for n in ("adapter_model.safetensors", "adapter_model.bin") if (peft_dir / n).is_file()]
        if files:
            state.update(rename(load_tensors(files[0]), PEFT_RENAMES, str(files[0])))
        elif adapter_config is None:
            raise CheckpointError(f"{peft_dir} has neither adapter_config.json nor adapter_model.safetensors/.bin")
    state.update(rename(load_tensors(Path(model_pt)), MODEL_PT_RENAMES, str(model_pt)))
    return {k: v.float() for k, v in state.items()}, adapter_config


def lora_conf_from(state: Mapping[str, torch.Tensor], adapter_config: Optional[dict], default: dict) -> Optional[dict]:
    """LoRA settings of the checkpoint: rank and target modules from its tensors, alpha and dropout from the
    adapter config (else ``default``). ``None`` when it holds no LoRA (a projector-only model)."""
    targets, ranks = set(), set()
    for key, value in state.items():
        m = LORA_KEY.match(key)
        if m:
            targets.add(m.group(1).rsplit(".", 1)[-1])
            ranks.add(value.shape[0] if m.group(2) == "A" else value.shape[1])
    if not targets:
        return None
    if len(ranks) != 1:
        raise CheckpointError(f"the LoRA tensors have different ranks {sorted(ranks)}; expected one")
    conf = dict(default, r=ranks.pop(), target_modules=sorted(targets))
    if adapter_config is not None:
        conf.update(alpha=adapter_config.get("lora_alpha", conf["alpha"]))
        conf.update(dropout=adapter_config.get("lora_dropout", conf["dropout"]))
        if adapter_config.get("r", conf["r"]) != conf["r"]:
            raise CheckpointError(f"adapter_config.json says r={adapter_config['r']} but the tensors have {conf['r']}")
    return conf


def check_against(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> None:
    """Every expected tensor present with the expected shape, and nothing else."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k}: {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or wrong:
        raise CheckpointError(
            "the checkpoint does not fit the model the config describes: "
            + "; ".join(
                part
                for part in (
                    f"missing {missing[:4]}" if missing else "",
                    f"not in the model {unexpected[:4]}" if unexpected else "",
                    f"shape (checkpoint vs model) {wrong[:4]}" if wrong else "",
                )
                if part
            )
            + ". Check --config (LLM, EAT, projector sizes) against the checkpoint."
        )
    logging.info("checkpoint fits the model: %d tensors", len(state))
