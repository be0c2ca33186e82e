#!/usr/bin/env python3
"""Write the trainable weights of a training config's model as built, before any training: a random
projector and LoRA at zero (the base LLM as it is). Decoded and scored beside the trained model
(aac.sh --score_untrained true), it shows what training gained.

    untrained_model.py CONFIG_YAML OUT_PTH [--seed 0]
"""

import argparse

import torch

from espnet_slam_aac.inference.speech2caption import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    model, _ = load_model(args.config, None, "cpu", torch.float32)
    torch.save(model.state_dict(), args.out)


if __name__ == "__main__":
    main()
