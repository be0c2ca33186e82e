"""CLAP-Refine audio embedding throughput: batched (ours) vs one clip per call (SLAM-AAC's clap_refine.py).

The reference embeds clips with ``DataLoader(batch_size=1)`` because zero-padding a batch would change the
embeddings; ours batches clips of equal spectrogram length, which gives the same embeddings (checked here,
max abs difference printed). Both run in one process on the same clips and the same random-weight CLAP:

- ``--size tiny``: the tiny test CLAP (HTS-AT 16-dim, 2 stages);
- ``--size htsat``: SLAM-AAC's audio tower at full size (HTS-AT-tiny: 96-dim, depths 2-2-6-2, 28 M
  parameters, 1024-d projection), with a small text tower (text is batched 512 at a time in both).

Clips are Clotho-like (15-30 s, 44.1 kHz, random noise); both take the first 10 s. Example::

    python benchmarks/bench_clap.py --size htsat --clips 32 --batch_size 16 --device cpu
"""

import argparse
import json
import platform
import tempfile
import time

import numpy as np
import torch


def build(size: str, device: str, batch_size: int):
    from transformers import ClapAudioConfig, RobertaConfig

    from espnet_slam_aac.clap.ase import ASEModel
    from espnet_slam_aac.clap.frontend import ASE_MEL
    from espnet_slam_aac.clap.model import CLAP
    from espnet_slam_aac.testing import tiny_clap as clap_tiny

    tokenizer = clap_tiny.train_tokenizer(tempfile.mkdtemp())
    if size == "tiny":
        tower = clap_tiny.tiny_ase_model(len(tokenizer))
    else:
        text = RobertaConfig(vocab_size=len(tokenizer), **clap_tiny.TEXT)
        tower = ASEModel(ClapAudioConfig(), text, embed_size=1024)
        clap_tiny.randomize(tower, 0)
    return CLAP(tower, tokenizer, ASE_MEL, backend="ase", max_text_tokens=30, device=device, batch_size=batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "htsat"], default="htsat")
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per mode (best is reported)")
    args = parser.parse_args()

    clap = build(args.size, args.device, args.batch_size)
    params = sum(p.numel() for p in clap.tower.audio_model.parameters()) + sum(
        p.numel() for p in clap.tower.audio_projection.parameters()
    )
    rng = np.random.default_rng(0)
    clips = [
        ((0.1 * rng.standard_normal(int(44100 * rng.uniform(15, 30)))).astype(np.float32), 44100)
        for _ in range(args.clips)
    ]
    clap.audio_embeddings(clips[:2])  # warm-up

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def timed(fn):
        best, out = float("inf"), None
        for _ in range(args.repeats):
            sync()
            start = time.perf_counter()
            out = fn()
            sync()
            best = min(best, time.perf_counter() - start)
        return best, out

    t_ref, ref = timed(lambda: torch.cat([clap.audio_embeddings([c]) for c in clips]))
    t_ours, ours = timed(lambda: clap.audio_embeddings(clips))
    result = {
        "size": args.size,
        "audio_params_M": round(params / 1e6, 2),
        "clips": args.clips,
        "batch_size": args.batch_size,
        "device": args.device if not args.device.startswith("cuda") else torch.cuda.get_device_name(),
        "cpu_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "batch1_clips_per_s": round(args.clips / t_ref, 2),
        "batched_clips_per_s": round(args.clips / t_ours, 2),
        "speedup": round(t_ref / t_ours, 2),
        "max_abs_diff": float((ref - ours).abs().max()),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
