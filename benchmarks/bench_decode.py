"""n-best decoding: the shared-prefix decoder vs the copied-prefix one vs the reference's ``generate`` per beam.

SLAM-AAC's CLAP-Refine candidate set is the top-1 caption of beam sizes 2..8. The reference decodes the set 7
times (``inference_*_CLAP_Refine.sh``): for each beam size, every batch is encoded again (EAT + projector), and
``generate(inputs_embeds=..., num_beams=N)`` prefills N copies of the prompt. Ours (``decoding.decode``) encodes
and prefills each clip once and searches all beam sizes from that prefix (``--schedules combined``: one search
over B * 35 rows; ``sequential``: one beam size after another). Variants (``--variants``):

- ``shared``: ``decode(prefix="shared")``, one prefix KV per clip, rows hold only their generated tokens;
- ``copied``: ``decode(prefix="copied")``, the earlier cache: every row holds a copy of its clip's prefix;
- ``merged``: ``shared`` with the LoRA folded into the frozen weights (``inference.lora_merge``); the report
  gives the largest prefill-logit change the merge makes, beside the dtype's rounding at that magnitude;
- ``static``: ``shared`` with every row kept to the end in a full-capacity cache (the same shapes every step);
- ``compiled`` (GPU): ``static`` with the step run through ``torch.compile`` and CUDA graphs;
- ``generate``: the reference, 7 x ``generate`` (``--stop_rule`` picks the rule ours follow; ``generate`` is the
  installed transformers', so captions are compared only under ``transformers``).

Each variant runs in its own subprocess on the same model and clips, so its peak memory is its own: on a GPU
``torch.cuda.max_memory_allocated`` (model included), on CPU the growth of the peak RSS over the loaded model.
Every caption (token ids) is compared with the first variant's.

Model: SlamAAC with random weights: EAT-base (12 blocks, 768) + SLAM-AAC's projector + a Llama with LoRA
(q/v, r 8), Vicuna's vocabulary size (32000), SLAM-AAC's prompt (the tokenizer is a small sentencepiece model,
as in the tests; only the prompt is tokenized). ``--llm_preset small``: 4 layers, 1024 wide; ``7b``: Vicuna-7B's
shape (32 layers, 4096 wide, 11008 MLP) in bfloat16. Clips: 10 s at 16 kHz (the reference's 1024-frame input).
With random weights no caption ends early, so every hypothesis runs to ``--max_new_tokens``; 20 tokens is
about a real caption's length (Clotho's mean is about 11 words).

    python benchmarks/bench_decode.py --device cpu --llm_preset small --clips 8 --batch_size 4
    python benchmarks/bench_decode.py --device cuda --llm_preset 7b --clips 64 --batch_size 16 --check report \
        --variants shared,static,compiled,copied,merged,generate
    python benchmarks/bench_decode.py --device cuda --llm_preset 7b --beams 4 --clips 64 --batch_size 16 \
        --schedules combined --check report
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
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
    with torch.no_grad():  # a trained adapter's B is not zero (peft starts it at zero): make merging matter
        for name, param in decoder.llm.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.02)
    encoder = EATEncoder(size="base")
    model = SlamAAC(EATFbank(), None, encoder, LinearProjector(768, config.hidden_size), decoder)
    return model.to(device=device, dtype=dtype).eval()


def reference_candidates(model, speech, lengths, beam_sizes, max_new_tokens):
    """The reference: per beam size, encode + prefix + generate (num_beams=N, its settings)."""
    from espnet_slam_aac.testing.reference import reference_generate

    out = [[] for _ in range(len(speech))]
    tok = model.decoder.tokenizer
    for beam in beam_sizes:
        embeds, mask = model.prefix_embeds(speech, lengths)
        ids = reference_generate(model, embeds, mask, beam, max_new_tokens)
        for i, row in enumerate(ids.tolist()):
            out[i].append([t for t in row if t != tok.eos_token_id])
    return out


VARIANTS = {  # ours: (decode's prefix, DecodingOptions.step)
    "shared": ("shared", "eager"),
    "copied": ("copied", "eager"),
    "merged": ("shared", "eager"),
    "static": ("shared", "static"),
    "compiled": ("shared", "compiled"),
}


def our_candidates(model, speech, lengths, options, variant):
    from espnet_slam_aac.inference.decoding import decode

    embeds, mask = model.prefix_embeds(speech, lengths)
    prefix, step = VARIANTS[variant]
    hyps = decode(model.decoder.llm, embeds, mask, options.replace(step=step), model.decoder.eos_id, prefix=prefix)
    return [[h.tokens for h in clip] for clip in hyps]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def run(fn, batches, device):
    """(clips per wall second, clips per CPU second of this process, outputs) of ``fn`` over the batches."""
    sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    outputs = []
    with torch.inference_mode():
        for speech, lengths in batches:
            outputs += fn(speech, lengths)
    sync(device)
    clips = sum(len(s) for s, _ in batches)
    return clips / (time.perf_counter() - start), clips / (time.process_time() - cpu), outputs


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--llm_preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--dtype", default=None, help="float32 | bfloat16 [float32 on CPU, bfloat16 on GPU]")
    parser.add_argument("--beams", default="2..8", help="beam sizes of the candidate set [2..8]")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--batch_size", type=int, default=4, help="clips per batch, every variant (the reference: 4)")
    parser.add_argument("--max_new_tokens", type=int, default=20)
    parser.add_argument("--schedules", default="combined", help="our schedules to time: combined,sequential")
    parser.add_argument("--variants", default="shared,copied,generate", help="what to time; the first is compared")
    parser.add_argument("--stop_rule", default="transformers", help="ours: transformers (= generate) or slam_aac")
    parser.add_argument(
        "--check",
        choices=["assert", "report"],
        default="assert",
        help="captions must equal the first variant's (assert), or count the equal ones (report: bf16 GPU kernels "
        "depend on batch shapes, so near-ties of a random model may flip)",
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (a shared machine: 1, and read clips_per_cpu_s)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one variant[:schedule], print JSON
    return parser.parse_args(argv)


def run_one(args) -> dict:
    """Time one variant in this process: clips/s, peak memory, captions."""
    from espnet_slam_aac.inference.decoding import DecodingOptions, parse_beam_sizes
    from espnet_slam_aac.testing import synth

    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32"))
    beam_sizes = parse_beam_sizes(args.beams)
    if args.threads:
        torch.set_num_threads(args.threads)
    variant, _, schedule = args.one.partition(":")
    model = build_model(args.llm_preset, args.device, dtype)
    rng = np.random.default_rng(0)
    waves = [
        torch.from_numpy(synth.synthesize_clip(rng, 16000, 10.0, 1)[0].astype(np.float32)) for _ in range(args.clips)
    ]
    batches = []
    for i in range(0, args.clips, args.batch_size):
        chunk = waves[i : i + args.batch_size]
        batches.append((torch.stack(chunk).to(args.device), torch.tensor([len(w) for w in chunk], device=args.device)))
    extra = {}
    if variant == "merged":
        from espnet_slam_aac.inference.lora_merge import merge_lora

        with torch.inference_mode():
            embeds, mask = model.prefix_embeds(*batches[0])
            before = model.decoder.llm(inputs_embeds=embeds, attention_mask=mask).logits.float()
            merge_lora(model.decoder.llm)
            after = model.decoder.llm(inputs_embeds=embeds, attention_mask=mask).logits.float()
        top = before.abs().max().item()
        extra = {"merge_max_logit_diff": (after - before).abs().max().item(), "max_abs_logit": top,
                 "dtype_rounding_at_max_logit": top * torch.finfo(dtype).eps / 2}  # fmt: skip
    if variant == "generate":
        fn = lambda s, n: reference_candidates(model, s, n, beam_sizes, args.max_new_tokens)  # noqa: E731
    else:
        options = DecodingOptions(
            beam_sizes=beam_sizes, max_new_tokens=args.max_new_tokens, schedule=schedule, stop_rule=args.stop_rule
        )
        fn = lambda s, n: our_candidates(model, s, n, options, variant)  # noqa: E731
    with torch.inference_mode():
        model.prefix_embeds(*batches[0])  # warm the encoder alone: the RSS baseline includes it
    base = peak_rss_gib()
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    run(fn, batches[:1], args.device)  # warm-up
    rate, cpu_rate, outputs = run(fn, batches, args.device)
    if args.device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = peak_rss_gib() - base
    return {"clips_per_s": rate, "clips_per_cpu_s": cpu_rate, "peak_gib": peak, "outputs": outputs, **extra}


def main() -> None:
    args = parse_args()
    if args.one:
        print(json.dumps(run_one(args)))
        return
    names = []
    for variant in [v for v in args.variants.split(",") if v]:
        names += [variant] if variant == "generate" else [f"{variant}:{s}" for s in args.schedules.split(",") if s]
    load = os.getloadavg()
    results = {}
    for name in names:
        out = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--one", name], check=True, stdout=subprocess.PIPE, text=True
        )
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{name}: {results[name]['clips_per_s']:.3f} clips/s", file=sys.stderr)
    report = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu",
        "threads": args.threads or torch.get_num_threads(),
        "load_avg_at_start": load,
        "torch": torch.__version__,
        "llm_preset": args.llm_preset,
        "dtype": args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32"),
        "beam_sizes": args.beams,
        "clips": args.clips,
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "stop_rule": args.stop_rule,
        "peak_memory": "torch.cuda.max_memory_allocated" if args.device.startswith("cuda") else "peak RSS growth",
    }
    first = names[0]
    for name, result in results.items():
        report[f"{name}_clips_per_s"] = round(result["clips_per_s"], 4)
        report[f"{name}_clips_per_cpu_s"] = round(result["clips_per_cpu_s"], 4)
        report[f"{name}_peak_gib"] = round(result["peak_gib"], 3)
        for key in ("merge_max_logit_diff", "max_abs_logit", "dtype_rounding_at_max_logit"):
            if key in result:
                report[key] = float(f"{result[key]:.3g}")
        if name != first:
            report[f"{name}_speed_vs_{first}"] = round(result["clips_per_s"] / results[first]["clips_per_s"], 3)
            cpu_speed = result["clips_per_cpu_s"] / results[first]["clips_per_cpu_s"]
            report[f"{name}_cpu_speed_vs_{first}"] = round(cpu_speed, 3)
            if name == "generate" and args.stop_rule != "transformers":
                continue  # generate follows the installed transformers' rule
            expected = results[first]["outputs"]
            same = sum(a == b for ca, cb in zip(result["outputs"], expected) for a, b in zip(ca, cb))
            total = sum(len(c) for c in expected)
            report[f"{name}_equal_captions"] = f"{same}/{total}"
            if args.check == "assert":
                assert same == total, f"{name}: {total - same} of {total} captions differ from {first}'s"
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
