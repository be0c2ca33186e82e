"""Scoring 7 decodes of 1045 clips: one batched run (ours) vs one aac-metrics ``evaluate`` call per decode.

Synthetic Clotho-sized set: 1045 clips with 5 references each (``synth.captions_for`` of random sound
events) and 7 decodes (as beam sizes 2..8). ``--overlap beams``: each clip's 7 captions are drawn from 3
variants, so decodes often agree as real beam sizes do; ``--overlap none``: every caption is distinct.
Metrics: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D with PTB tokenization (what runs offline here). Both modes
run in one process, alternating, best of --repeats; the maximum difference of their scores is printed.

    python benchmarks/bench_score.py --overlap beams --repeats 2
"""

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from espnet_slam_aac.scoring import resources as metric_resources
from espnet_slam_aac.scoring.metrics import score_decodes
from espnet_slam_aac.testing import synth

METRICS = ["bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider_d"]


def synthetic_set(n_clips: int, n_decodes: int, overlap: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    refs, decodes = {}, {f"beam{b}": {} for b in range(2, 2 + n_decodes)}
    for i in range(n_clips):
        key = f"clip{i:04d}"
        events = synth.random_events(rng)
        refs[key] = synth.captions_for(events, 5)
        wrong = synth.random_events(rng)  # a decoder sometimes names the wrong events
        variants = [synth.captions_for(events, 2)[1], synth.captions_for(wrong, 1)[0], refs[key][0] + " loudly"]
        for j, hyps in enumerate(decodes.values()):
            caption = variants[int(rng.integers(0, 3))]
            hyps[key] = caption if overlap == "beams" else f"{caption} {'quietly ' * (j + 1)}".strip()
    return refs, decodes


def per_decode(refs, decodes, resources):
    """What a user of aac-metrics does: one ``evaluate`` per decode (PTB twice, a METEOR JVM each)."""
    import aac_metrics.utils.checks as checks
    from aac_metrics import evaluate

    checks.MAX_JAVA_MAJOR_VERSION = max(checks.MAX_JAVA_MAJOR_VERSION, resources.java.major)
    keys = sorted(refs)
    scores = {}
    for name, hyps in decodes.items():
        corpus, _ = evaluate(
            [hyps[k] for k in keys],
            [refs[k] for k in keys],
            metrics=METRICS,
            cache_path=str(resources.cache_dir),
            java_path=resources.java.path,
        )
        scores[name] = {m: float(corpus[m]) for m in METRICS}
    return scores


def batched(refs, decodes, resources):
    report = score_decodes(refs, decodes, resources, metrics=METRICS)
    return {name: d.corpus for name, d in report.decodes.items()}


def interleaved(fns, repeats):
    """Best time of each function over ``repeats`` rounds, the functions alternating within a round
    (fair under a machine load that changes over time); returns the times and the last results."""
    times = [[] for _ in fns]
    results = [None for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            results[i] = fn()
            times[i].append(time.perf_counter() - start)
    return [min(t) for t in times], results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=1045)
    parser.add_argument("--decodes", type=int, default=7)
    parser.add_argument("--overlap", choices=["beams", "none"], default="beams")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    refs, decodes = synthetic_set(args.clips, args.decodes, args.overlap)
    unique = len({(k, h[k]) for h in decodes.values() for k in h})
    with tempfile.TemporaryDirectory() as cache:
        resources = metric_resources.resolve(Path(cache))
        import aac_metrics  # noqa: F401  (import once, outside the timings: ~6-10 s)

        load_before = os.getloadavg()[0]
        (t_ref, t_ours), (ref_scores, our_scores) = interleaved(
            [lambda: per_decode(refs, decodes, resources), lambda: batched(refs, decodes, resources)], args.repeats
        )
        load_after = os.getloadavg()[0]
    worst = max(abs(our_scores[n][m] - ref_scores[n][m]) for n in decodes for m in METRICS)
    print(
        f"{os.cpu_count()} CPUs, load average {load_before:.1f} before / {load_after:.1f} after; "
        f"Java {resources.java.version}; {platform.platform()}"
    )
    print(f"{args.clips} clips x {args.decodes} decodes ({unique} unique clip-caption pairs, overlap={args.overlap})")
    print(f"| mode | JVM launches | seconds (best of {args.repeats}) |")
    print("|---|---|---|")
    print(
        f"| aac-metrics `evaluate` per decode | {6 * args.decodes} (per decode: PTB x2, METEOR, "
        f"3 `java -version` checks) | {t_ref:.1f} |"
    )
    print(f"| ours, all decodes in one run | 2 (one PTB, one METEOR) | {t_ours:.1f} |")
    print(f"speedup: {t_ref / t_ours:.2f}x; max |difference| of corpus scores: {worst:.1e}")


if __name__ == "__main__":
    main()
