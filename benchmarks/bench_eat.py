"""Throughput of the EAT front end (``eat_fbank``) and encoder (``eat``, EAT-base size, random weights).

10 s synthesized clips; batch sizes 1 and 8 by default; median of --iterations timed calls after one warm-up.
Prints a markdown table (clips/s = batch size / median seconds per call).

    python benchmarks/bench_eat.py --device cpu --threads 2 --iterations 3
"""

import argparse
import os
import statistics
import time

import numpy as np
import torch

from espnet_slam_aac.model.encoder import EATEncoder
from espnet_slam_aac.model.frontend import EATFbank
from espnet_slam_aac.testing import synth


def timed(fn, iterations: int, device: torch.device) -> float:
    """Median seconds of ``fn()`` over ``iterations`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(iterations):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with open("/proc/cpuinfo") as f:
        return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "cpu")


def clips(rate: int, count: int) -> torch.Tensor:
    rng = np.random.default_rng(0)
    return torch.from_numpy(np.stack([synth.synthesize_clip(rng, rate, 10.0)[0] for _ in range(count)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (CPU)")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--size", default="base", choices=["base", "large"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="encoder autocast")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    print(
        f"torch {torch.__version__}, {device_name(device)}, {torch.get_num_threads()} threads, "
        f"{args.iterations} iterations, load average {os.getloadavg()[0]:.1f}"
    )
    print("| part | input | batch | s/call (median) | clips/s |")
    print("|---|---|---|---|---|")
    encoder = EATEncoder(size=args.size).to(device)
    for batch in args.batch_sizes:
        for rate, resampler in ((16000, "transforms"), (44100, "transforms"), (44100, "functional")):
            speech = clips(rate, batch).to(device)
            lengths = torch.full((batch,), speech.shape[1], device=device)
            fe = EATFbank(fs=rate, resampler=resampler)
            seconds = timed(lambda: fe(speech, lengths), args.iterations, device)
            label = f"10 s at {rate} Hz" + (f" ({resampler} resampler)" if rate != 16000 else "")
            print(f"| front end | {label} | {batch} | {seconds:.4f} | {batch / seconds:.1f} |")
        fbank = torch.randn(batch, 1024, 128, device=device)
        fbank_lengths = torch.full((batch,), 1024, device=device)

        def encode():
            with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                return encoder(fbank, fbank_lengths)

        seconds = timed(encode, args.iterations, device)
        print(
            f"| encoder EAT-{args.size} {args.dtype} | 1024 frames | {batch} | {seconds:.4f} | {batch / seconds:.2f} |"
        )
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
