"""n-best decoding throughput: our shared-prefill search vs the reference's one ``generate`` per beam size.

SLAM-AAC's CLAP-Refine candidate set is the top-1 caption of beam sizes 2..8. The reference decodes the set 7
times (``inference_*_CLAP_Refine.sh``): for each beam size, every batch is encoded again (EAT + projector), and
``generate(inputs_embeds=..., num_beams=N)`` prefills N copies of the prompt. Ours (``decoding.decode``) encodes
and prefills each clip once and searches all beam sizes from that prefix (``--schedule combined``: one search
over B * 35 rows; ``sequential``: one beam size after another, each forked from the shared prefill). Both run
in one process on the same model and clips, and every caption (token ids) is checked equal.

Model: SlamAAC with random weights: EAT-base (12 blocks, 768) + SLAM-AAC's projector + a Llama with LoRA
(q/v, r 8), Vicuna's vocabulary size (32000), SLAM-AAC's prompt (the tokenizer is a small sentencepiece model,
as in the tests; only the prompt is tokenized). ``--llm_preset small``: 4 layers, 1024 wide; ``7b``: Vicuna-7B's
shape (32 layers, 4096 wide, 11008 MLP) in bfloat16. Clips: 10 s at 16 kHz (the reference's 1024-frame input).
With random weights no caption ends early, so every hypothesis runs to ``--max_new_tokens``; 20 tokens is
about a real caption's length (Clotho's mean is about 11 words).

    python benchmarks/bench_decode.py --device cpu --llm_preset small --clips 8 --batch_size 4
    python benchmarks/bench_decode.py --device cuda --llm_preset 7b --beams 4 --clips 64 --batch_size 16
"""

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np
import torch

PRESETS = {
    "small": dict(hidden_size=1024, num_hidden_layers=4, num_attention_heads=16, intermediate_size=2816),
    "7b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, intermediate_size=11008),
}


def build_model(preset: str, device: str, dtype: torch.dtype):
    """SlamAAC with random weights: EAT-base, projector, a random Llama of ``preset`` with LoRA."""
    from peft import get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from espnet_slam_aac.model.decoder import LLMDecoder, lora_config
    from espnet_slam_aac.model.encoder import EATEncoder
    from espnet_slam_aac.model.frontend import EATFbank
    from espnet_slam_aac.model.projector import LinearProjector
    from espnet_slam_aac.model.slam_aac import SlamAAC
    from espnet_slam_aac.testing.tiny_llm import build_tiny_llm

    torch.manual_seed(0)
    # the tokenizer (and a throw-away tiny LM) of the tests; the benchmark's LM replaces the tiny one
    decoder = LLMDecoder(str(build_tiny_llm(tempfile.mkdtemp(), ["a dog barks", "rain falls on a roof"])))
    config = LlamaConfig(
        vocab_size=32000, max_position_embeddings=4096, bos_token_id=1, eos_token_id=2, **PRESETS[preset]
    )
    with torch.device(device):  # initialized where it runs: a 7B model initializes in seconds on a GPU
        llm = LlamaForCausalLM._from_config(config, dtype=dtype).eval()
    llm.requires_grad_(False)
    decoder.llm = get_peft_model(llm, lora_config())
    encoder = EATEncoder(size="base")
    model = SlamAAC(EATFbank(), None, encoder, LinearProjector(768, config.hidden_size), decoder)
    return model.to(device=device, dtype=dtype).eval()


def reference_candidates(model, speech, lengths, beam_sizes, max_new_tokens):
    """The reference: per beam size, encode + prefix + generate (num_beams=N, its settings)."""
    out = [[] for _ in range(len(speech))]
    tok = model.decoder.tokenizer
    for beam in beam_sizes:
        embeds, mask = model.prefix_embeds(speech, lengths)
        ids = model.decoder.llm.generate(
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
        for i, row in enumerate(ids.tolist()):
            out[i].append([t for t in row if t != tok.eos_token_id])
    return out


def our_candidates(model, speech, lengths, options):
    from espnet_slam_aac.inference.decoding import decode

    embeds, mask = model.prefix_embeds(speech, lengths)
    hyps = decode(model.decoder.llm, embeds, mask, options, model.decoder.eos_id)
    return [[h.tokens for h in clip] for clip in hyps]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run(fn, batches, device):
    """(clips/s, outputs, peak GPU memory GiB) of ``fn`` over the batches."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    start = time.perf_counter()
    outputs = []
    with torch.inference_mode():
        for speech, lengths in batches:
            outputs += fn(speech, lengths)
    sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    return sum(len(s) for s, _ in batches) / seconds, outputs, peak


def main() -> None:
    from espnet_slam_aac.inference.decoding import DecodingOptions, parse_beam_sizes
    from espnet_slam_aac.testing import synth

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--llm_preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--dtype", default=None, help="float32 | bfloat16 [float32 on CPU, bfloat16 on GPU]")
    parser.add_argument("--beams", default="2..8", help="beam sizes of the candidate set [2..8]")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--batch_size", type=int, default=4, help="clips per batch, both ways (the reference: 4)")
    parser.add_argument("--max_new_tokens", type=int, default=20)
    parser.add_argument("--schedules", default="combined,sequential", help="our schedules to time")
    parser.add_argument("--skip_reference", action="store_true", help="time ours only")
    parser.add_argument(
        "--check",
        choices=["assert", "report"],
        default="assert",
        help="captions must equal the reference's (assert), or count the equal ones (report: "
        "bf16 GPU kernels depend on batch shapes, so near-ties of a random model may flip)",
    )
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32"))
    beam_sizes = parse_beam_sizes(args.beams)

    model = build_model(args.llm_preset, args.device, dtype)
    rng = np.random.default_rng(0)
    waves = [
        torch.from_numpy(synth.synthesize_clip(rng, 16000, 10.0, 1)[0].astype(np.float32)) for _ in range(args.clips)
    ]
    batches = []
    for i in range(0, args.clips, args.batch_size):
        chunk = waves[i : i + args.batch_size]
        batches.append((torch.stack(chunk).to(args.device), torch.tensor([len(w) for w in chunk], device=args.device)))

    results = {}
    load = os.getloadavg()
    for schedule in [s for s in args.schedules.split(",") if s]:
        options = DecodingOptions(beam_sizes=beam_sizes, max_new_tokens=args.max_new_tokens, schedule=schedule)
        run(lambda s, n: our_candidates(model, s, n, options), batches[:1], args.device)  # warm-up
        results[schedule] = run(lambda s, n: our_candidates(model, s, n, options), batches, args.device)
    if not args.skip_reference:
        ref = lambda s, n: reference_candidates(model, s, n, beam_sizes, args.max_new_tokens)  # noqa: E731
        run(ref, batches[:1], args.device)  # warm-up
        results["reference"] = run(ref, batches, args.device)

    report = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "load_avg_at_start": load,
        "torch": torch.__version__,
        "llm_preset": args.llm_preset,
        "dtype": str(dtype),
        "beam_sizes": list(beam_sizes),
        "clips": args.clips,
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
    }
    for name, (rate, _, peak) in results.items():
        report[f"{name}_clips_per_s"] = round(rate, 4)
        if peak is not None:
            report[f"{name}_peak_gib"] = round(peak, 2)
    if "reference" in results:
        expected = results["reference"][1]
        for name, (rate, outputs, _) in results.items():
            if name == "reference":
                continue
            same = sum(a == b for clip_a, clip_b in zip(outputs, expected) for a, b in zip(clip_a, clip_b))
            total = sum(len(c) for c in expected)
            report[f"{name}_equal_captions"] = f"{same}/{total}"
            report[f"{name}_speedup"] = round(rate / results["reference"][0], 2)
            if args.check == "assert":
                assert same == total, f"{name}: {total - same} of {total} captions differ from the reference"
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
