"""Corpus captioning throughput: ``caption.sh`` (egs2/TEMPLATE/caption1) with 1, 2, 4 local jobs vs calling
``Speech2Caption`` file by file.

The baseline is what a user writes without the corpus tool: one process, the model loaded once, then for each file
``s2c(*load_audio(path))`` (a batch of one, audio read in the same thread). The corpus runs are the whole
command as a user runs it: ``./caption.sh --nj N`` (each job a process that loads the model; loader workers decode
and resample; batches of ``--batch_size`` sorted by duration), then the merge. Both decode beam 4 only (the
caption), ``--max_new_tokens`` tokens (a random model never ends a caption early), in float32 on the CPU
(``--device cuda``: bfloat16, one GPU per job).

Reported: clips/s of the baseline without its model loading, and of each corpus run end to end (wall time of
``caption.sh``: process start-up, model loading and the merge included) and in its steady state (each job's clips
over the time since its model was loaded, summed over the jobs). Every caption of the corpus runs is checked equal
to the one-job run's (the batches do not depend on the number of jobs). The load average is printed: on a shared
machine the figures move with it.

Model: a tiny random SLAM-AAC (``testing.tiny_model``: a 32-d EAT block, a 64-d 2-layer Llama). Clips: synthesized,
``--seconds`` long at 44.1 kHz (resampled to 16 kHz by the loader workers, as most corpora need).

    python benchmarks/bench_caption_corpus.py --clips 480 --seconds 5 --jobs 1 2 4
    python benchmarks/bench_caption_corpus.py --model exp/packed_7b --device cuda --clips 512 --batch_size 16 --jobs 1
"""

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "egs2" / "TEMPLATE" / "caption1"


def build_model(root: Path) -> Path:
    """A tiny packed model (the tests' tiny EAT and Llama shapes)."""
    from espnet_slam_aac.model.eat import EATConfig, EATModel
    from espnet_slam_aac.model.eat_checkpoint import save_hf_checkpoint
    from espnet_slam_aac.testing.tiny_llm import build_tiny_llm
    from espnet_slam_aac.testing.tiny_model import write_tiny_model

    torch.manual_seed(0)
    eat = save_hf_checkpoint(EATModel(EATConfig(embed_dim=32, depth=1, num_heads=2, max_length=64)), root / "eat")
    llm = build_tiny_llm(root / "llm", ["a dog barks", "rain falls on a roof", "a low tone beeps twice"] * 4)
    return write_tiny_model(root / "model", eat, llm)


def write_clips(folder: Path, n: int, seconds: float, rate: int) -> list:
    from espnet_slam_aac.testing import synth

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        wave, _ = synth.synthesize_clip(rng, rate, seconds * float(rng.uniform(0.7, 1.0)))
        path = folder / f"part{i % 4}" / f"clip{i:04d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, wave, rate, subtype="PCM_16")
        paths.append(path)
    return paths


def file_by_file(model: Path, paths: list, max_new_tokens: int, device: str) -> dict:
    from espnet_slam_aac.data.audio import load_audio
    from espnet_slam_aac.inference.speech2caption import Speech2Caption

    start = time.time()
    s2c = Speech2Caption.from_pretrained(
        model, batch_size=1, beam_sizes="4", max_new_tokens=max_new_tokens, device=device, dtype="auto"
    )
    loaded = time.time()
    for path in paths:
        s2c(*load_audio(path))
    seconds = time.time() - loaded
    return {"model_load_s": round(loaded - start, 1), "seconds": round(seconds, 1), "clips_per_s": len(paths) / seconds}


def corpus_run(model: Path, audio: Path, out: Path, nj: int, args) -> dict:
    command = ["./caption.sh", "--model", str(model), "--audio", str(audio), "--out", str(out), "--nj", str(nj)]
    command += ["--batch_size", str(args.batch_size), "--num_workers", str(args.num_workers), "--dtype", "auto"]
    command += ["--gpu_inference", "true" if args.device == "cuda" else "false"]
    decoding = f"--beams 4 --max_new_tokens {args.max_new_tokens} --window {args.window}"
    command += ["--progress_interval", "600", "--caption_args", decoding]
    start = time.time()
    done = subprocess.run(
        command, cwd=TEMPLATE, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    seconds = time.time() - start
    if done.returncode != 0:
        raise SystemExit(f"caption.sh failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    jobs = [json.loads(p.read_text()) for p in sorted((out / "progress").glob(f"*-of-{nj}.json"))]
    steady = sum((j["captioned"] + j["failed"]) / j["elapsed"] for j in jobs if j["elapsed"])
    n = sum(1 for _ in open(out / "captions.jsonl"))
    return {"nj": nj, "clips": n, "wall_s": round(seconds, 1), "clips_per_s": n / seconds, "steady_clips_per_s": steady}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=int, default=44100)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--num_workers", type=int, default=1, help="loader processes per job")
    parser.add_argument("--max_new_tokens", type=int, default=20)
    parser.add_argument("--window", type=int, default=32, help="inputs per window: jobs take turns by window")
    parser.add_argument("--model", type=Path, help="a packed model folder [a tiny random one]")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: one GPU per job, bfloat16")
    args = parser.parse_args()
    print(
        json.dumps(
            {
                "machine": platform.processor() or platform.machine(),
                "cpus": os.cpu_count(),
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "load": os.getloadavg(),
            }
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = args.model.resolve() if args.model else build_model(tmp)
        paths = write_clips(tmp / "audio", args.clips, args.seconds, args.rate)
        print(
            json.dumps(
                {
                    "speech2caption_file_by_file": file_by_file(model, paths, args.max_new_tokens, args.device),
                    "load": os.getloadavg(),
                }
            )
        )
        first = None
        for nj in args.jobs:
            result = corpus_run(model, tmp / "audio", tmp / f"out{nj}", nj, args)
            captions = (tmp / f"out{nj}" / "captions.jsonl").read_bytes()
            first = first or captions
            result["same_captions_as_first_run"] = captions == first
            print(json.dumps({"caption_sh": result, "load": os.getloadavg()}))


if __name__ == "__main__":
    main()
