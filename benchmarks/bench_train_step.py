"""Training-step time and peak memory of SLAM-AAC, frozen weights (EAT, LLM) in float32 vs bfloat16.

One step = forward (front end, SpecAugment, EAT, projector, LLM + LoRA, loss), backward, AdamW step, on a
synthetic batch of 10.24 s clips and 20-token captions. The model is what ``AACTask`` builds from the default
config (SpecAugment on, LoRA r 8 on q/v, projector k 5 / 2048), then cast as ESPnet's ``main_worker`` casts it
(``.to(float32)``), so the dtype guard is part of what is measured. Weights are random
(``load_pretrained_weights: false``): only shapes matter here.

Each configuration runs in a fresh process, so its peak memory is its own (CPU: peak RSS of the process;
CUDA: ``torch.cuda.max_memory_allocated``). Presets:

- ``tiny``: the test model (Llama 64-d, 2 layers; EAT 32-d, 1 block);
- ``scaled``: EAT-base + a 1024-d, 8-layer Llama with Vicuna's vocabulary (CPU-sized);
- ``7b``: EAT-base + a Vicuna-7B-shaped Llama (4096-d, 32 layers, 32 heads, 11008 MLP, 32000 vocabulary).

    python benchmarks/bench_train_step.py                                  # CPU: tiny and scaled
    python benchmarks/bench_train_step.py --device cuda --llm_preset 7b    # GPU: Vicuna-7B shapes, batch 4
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

PRESETS = {
    # LLM shape, EAT shape
    "tiny": (
        dict(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128, vocab_size=384),
        dict(embed_dim=32, depth=1, num_heads=2),
    ),
    "scaled": (
        dict(hidden_size=1024, num_layers=8, num_heads=16, intermediate_size=2816, vocab_size=32000),
        dict(size="base"),
    ),
    "7b": (
        dict(hidden_size=4096, num_layers=32, num_heads=32, intermediate_size=11008, vocab_size=32000),
        dict(size="base"),
    ),
}
CAPTIONS = ["a dog barks twice then a car passes", "rain falls on a tin roof while thunder rumbles"]


def build(preset: str, frozen_dtype: str, device: str, workdir: Path):
    """The model ``AACTask.build_model`` makes of the default config with these shapes, assembled from its parts
    so that ESPnet's task module (and its many imports) is not needed on a GPU machine."""
    from espnet2.asr.specaug.specaug import SpecAug

    from espnet_slam_aac.model.decoder import LLMDecoder
    from espnet_slam_aac.model.encoder import EATEncoder
    from espnet_slam_aac.model.frontend import EATFbank
    from espnet_slam_aac.model.projector import LinearProjector
    from espnet_slam_aac.model.slam_aac import SlamAAC, cast_frozen
    from espnet_slam_aac.testing.tiny_llm import llama_config, write_tokenizer

    llm_shape, eat_shape = PRESETS[preset]
    llm_shape = dict(llm_shape)
    vocab = llm_shape.pop("vocab_size")
    write_tokenizer(workdir, CAPTIONS)
    llama_config(vocab, **llm_shape, max_position_embeddings=4096).save_pretrained(workdir)
    dtype = getattr(torch, frozen_dtype)
    with torch.device(device):  # weights are made where they will live
        specaug = SpecAug(
            apply_time_warp=False,
            time_mask_width_range=[0, 64],
            num_time_mask=2,
            freq_mask_width_range=[0, 8],
            num_freq_mask=2,
        )
        encoder = cast_frozen(EATEncoder(checkpoint=None, **eat_shape), dtype)
        decoder = LLMDecoder(str(workdir), dtype=dtype, load_pretrained_weights=False)
        projector = LinearProjector(encoder.output_size(), decoder.hidden_size)
        model = SlamAAC(EATFbank(), specaug, encoder, projector, decoder)
    return model.to(dtype=torch.float32, device=device)  # what ESPnet's main_worker does


def measure(preset: str, frozen_dtype: str, device: str, batch_size: int, steps: int, warmup: int) -> dict:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        model = build(preset, frozen_dtype, device, Path(tmp))
        build_s = time.perf_counter() - t0
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=0.0)
    speech = 0.1 * torch.randn(batch_size, 163_840, device=device)  # 10.24 s at 16 kHz
    speech_lengths = torch.full((batch_size,), 163_840, device=device)
    text = torch.randint(3, 300, (batch_size, 20), device=device)
    text_lengths = torch.full((batch_size,), 20, device=device)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(warmup + steps):
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        # ESPnet's use_amp: bf16 autocast on GPUs (autocast is off on CPU)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            loss, _, _ = model(speech, speech_lengths, text, text_lengths)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    frozen = [p for p in model.parameters() if not p.requires_grad]
    return dict(
        preset=preset,
        frozen_dtype=frozen_dtype,
        device=device if not cuda else torch.cuda.get_device_name(),
        batch_size=batch_size,
        threads=torch.get_num_threads(),
        build_s=round(build_s, 1),
        step_s=round(sum(times) / len(times), 3),
        step_s_min=round(min(times), 3),
        frozen_params_m=round(sum(p.numel() for p in frozen) / 1e6, 1),
        frozen_gib=round(sum(p.numel() * p.element_size() for p in frozen) / 2**30, 2),
        trainable_params_m=round(sum(p.numel() for p in trainable) / 1e6, 2),
        frozen_dtypes=sorted({str(p.dtype).replace("torch.", "") for p in frozen}),
        trainable_dtypes=sorted({str(p.dtype).replace("torch.", "") for p in trainable}),
        peak_gib=round(
            (torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
            / 2**30,
            2,
        ),
        peak_kind="cuda max allocated" if cuda else "process peak RSS",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--llm_preset", nargs="+", choices=list(PRESETS), help="default: tiny scaled (CPU), 7b (CUDA)")
    parser.add_argument("--frozen_dtype", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--single", action="store_true", help=argparse.SUPPRESS)  # one config, this process
    args = parser.parse_args()
    presets = args.llm_preset or (["7b"] if args.device.startswith("cuda") else ["tiny", "scaled"])
    if args.single:
        print(
            json.dumps(measure(presets[0], args.frozen_dtype[0], args.device, args.batch_size, args.steps, args.warmup))
        )
        return
    results = []
    for preset in presets:
        for dtype in args.frozen_dtype:
            cmd = [
                sys.executable,
                __file__,
                "--single",
                "--device",
                args.device,
                "--llm_preset",
                preset,
                "--frozen_dtype",
                dtype,
                "--batch_size",
                str(args.batch_size),
                "--steps",
                str(args.steps),
                "--warmup",
                str(args.warmup),
            ]
            out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
            if out.returncode != 0:
                sys.exit(f"{preset}/{dtype} failed (exit {out.returncode})")
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = results[-1]
            print(
                f"| {r['preset']} | {r['device']} | {r['frozen_dtype']} | {r['batch_size']} | {r['step_s']} | "
                f"{r['frozen_gib']} | {r['peak_gib']} ({r['peak_kind']}) | {r['trainable_params_m']} M |",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
