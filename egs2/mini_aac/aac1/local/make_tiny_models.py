#!/usr/bin/env python3
"""The mini recipe's frozen models, made on the spot with random weights (nothing is downloaded):

  OUT_DIR/eat    a tiny EAT (32-d, 1 block) as a Hugging Face folder (config.json + model.safetensors),
                 where the real recipes name EAT-base
  OUT_DIR/llm    a tiny Llama (64-d, 2 layers) with a sentencepiece tokenizer trained on the training
                 captions and the prompt, laid out like Vicuna's folder, then trained briefly as a language
                 model on the caption texts alone: like Vicuna, it knows the language before SLAM-AAC
                 training teaches it to listen (a random LM would have to learn both from 400 captions)
  OUT_DIR/clap   a tiny CLAP in SLAM-AAC's layout (best_model.pt + clap_config.yaml + tokenizer)

The same arguments give the same files. The LLM's tokenizer learns the words of CAPTIONS (a jsonl manifest).
"""

import argparse
import json
from pathlib import Path

import torch

from espnet_slam_aac.model.eat import EATConfig, EATModel
from espnet_slam_aac.model.eat_checkpoint import save_hf_checkpoint
from espnet_slam_aac.testing.tiny_clap import build_tiny_clap
from espnet_slam_aac.testing.tiny_llm import build_tiny_llm


def warm_up_llm(folder: Path, captions, steps: int, seed: int) -> None:
    """Train the Llama in ``folder`` as a language model on ``captions`` (text only) and save it back."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    ids = [tokenizer(c)["input_ids"] + [tokenizer.eos_token_id] for c in sorted(set(captions))]
    width = max(map(len, ids))
    batch = torch.full((len(ids), width), tokenizer.eos_token_id)
    labels = torch.full((len(ids), width), -100)
    for i, seq in enumerate(ids):
        batch[i, : len(seq)] = torch.tensor(seq)
        labels[i, : len(seq)] = torch.tensor(seq)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    for step in range(steps):
        rows = torch.randint(len(ids), (32,), generator=generator)
        loss = model(input_ids=batch[rows], labels=labels[rows]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"{folder}: language-model loss {loss.item():.2f} after {steps} steps")
    model.save_pretrained(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("captions", type=Path, help="jsonl manifest whose 'target' captions train the tokenizer")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lm_steps", type=int, default=150, help="text-only training steps of the LLM")
    args = parser.parse_args()

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        eat = EATModel(EATConfig(embed_dim=32, depth=1, num_heads=2, max_length=64))
    save_hf_checkpoint(eat, args.out_dir / "eat")
    captions = [json.loads(line)["target"] for line in args.captions.read_text(encoding="utf-8").splitlines()]
    build_tiny_llm(args.out_dir / "llm", captions, seed=args.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        warm_up_llm(args.out_dir / "llm", captions, args.lm_steps, args.seed)
    build_tiny_clap(args.out_dir / "clap", "ase", seed=args.seed)
    print(f"{args.out_dir}: eat, llm, clap")


if __name__ == "__main__":
    main()
