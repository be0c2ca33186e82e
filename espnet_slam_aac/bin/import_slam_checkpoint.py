"""Convert a SLAM-LLM SLAM-AAC checkpoint into ours: ``config.yaml`` + ``model.pth`` (projector + LoRA).

    espnet-slam-aac import-slam-checkpoint --model_pt aac_epoch_1_step_4500/model.pt \\
        --peft_dir aac_epoch_1_step_4500 --config conf/train_finetune.yaml --out exp/slam_aac_clotho

``--config`` names the frozen parts (EAT checkpoint, LLM) and the projector, as for training. The LoRA rank
and target modules come from the checkpoint's tensors, alpha and dropout from ``adapter_config.json`` when the
peft folder has one (else from ``--config``). The model is built once (the frozen weights are loaded) to check
every tensor's name and shape. The result loads with
``AACTask.build_model_from_file(OUT/config.yaml, OUT/model.pth)``.
"""

import argparse
import io
import logging
import sys
from pathlib import Path
from typing import List, Optional

import torch
from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump

from espnet_slam_aac.model.decoder import DEFAULT_LORA
from espnet_slam_aac.model.slam_checkpoint import check_against, lora_conf_from, read_slam_checkpoint
from espnet_slam_aac.tasks.aac import FROZEN_DTYPES, AACTask
from espnet_slam_aac.utils import runner
from espnet_slam_aac.utils.fileio import atomic_output, refuse_overwrite, write_atomically


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_pt", type=Path, required=True, help="SLAM-LLM's model.pt (projector, LoRA)")
    parser.add_argument("--peft_dir", type=Path, help="peft folder of old-format checkpoints (adapter_config.json)")
    parser.add_argument("--config", type=Path, required=True, help="training YAML naming the EAT and LLM sources")
    parser.add_argument("--out", type=Path, required=True, help="output folder for config.yaml and model.pth")
    parser.add_argument(
        "--frozen_dtype", choices=FROZEN_DTYPES, help="dtype of the frozen weights (written to config.yaml)"
    )
    runner.add_arguments(parser)
    return parser


def import_checkpoint(
    model_pt: Path, config: Path, out: Path, peft_dir: Optional[Path] = None, frozen_dtype: Optional[str] = None
) -> Path:
    """Write ``out/config.yaml`` and ``out/model.pth`` (each whole, never over an input); return ``out``."""
    refuse_overwrite([out / "model.pth", out / "config.yaml"], [model_pt, config, peft_dir])
    state, adapter_config = read_slam_checkpoint(model_pt, peft_dir)
    args = AACTask.get_parser().parse_args(["--config", str(config)])
    if frozen_dtype is not None:
        args.frozen_dtype = frozen_dtype
    lora = lora_conf_from(state, adapter_config, {**DEFAULT_LORA, **(args.decoder_conf.get("lora") or {})})
    if lora != args.decoder_conf.get("lora", DEFAULT_LORA):
        logging.info("LoRA settings from the checkpoint: %s", lora)
    args.decoder_conf = {**args.decoder_conf, "lora": lora}
    model = AACTask.build_model(args)
    check_against(state, model.state_dict())
    model.load_state_dict(state)
    with atomic_output(out / "model.pth", binary=True) as f:
        torch.save(state, f)
    text = io.StringIO()
    yaml_no_alias_safe_dump(vars(args), text, indent=4, sort_keys=False)
    write_atomically(out / "config.yaml", text.getvalue().splitlines())
    return out


def main(argv: Optional[List[str]] = None) -> None:
    runner.run(run, get_parser().parse_args(argv))


def run(ns: argparse.Namespace) -> None:
    out = import_checkpoint(ns.model_pt, ns.config, ns.out, ns.peft_dir, ns.frozen_dtype)
    print(f"wrote {out / 'config.yaml'} and {out / 'model.pth'}", file=sys.stderr)


if __name__ == "__main__":
    main()
