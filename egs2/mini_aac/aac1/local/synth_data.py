#!/usr/bin/env python3
"""Write the mini recipe's corpus: synthesized clips whose captions say what was synthesized.

Three jsonl manifests in the reference format (``key``, ``source``, ``target``) under OUT_DIR:
``train.jsonl`` (``--train_captions`` captions per clip, one line each), ``valid.jsonl`` and ``test.jsonl``
(``--eval_captions`` references per clip), and ``paraphrases.jsonl``: for each training caption, the
other wordings of the same clip that ``espnet_slam_aac.testing.synth`` knows, in the user-jsonl format of
``espnet-slam-aac paraphrase`` (``{"text": caption, "paraphrases": [...]}``). Deterministic given the seeds.
"""

import argparse
import json
from collections import defaultdict
from pathlib import Path

from espnet_slam_aac.testing import synth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--n_train", type=int, default=160)
    parser.add_argument("--n_valid", type=int, default=16)
    parser.add_argument("--n_test", type=int, default=24)
    parser.add_argument("--train_captions", type=int, default=2, help="captions per training clip")
    parser.add_argument("--n_paraphrases", type=int, default=2, help="extra wordings per training clip")
    parser.add_argument("--eval_captions", type=int, default=5, help="references per valid/test clip")
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()

    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    # One corpus per split, each with its own seed and key prefix, so the splits share no clip.
    full = synth.write_corpus(
        out / "train",
        args.n_train,
        args.train_captions + args.n_paraphrases,
        seed=1,
        seconds=args.seconds,
        prefix="train",
    )
    for name, n, seed in (("valid", args.n_valid, 2), ("test", args.n_test, 3)):
        manifest = synth.write_corpus(out / name, n, args.eval_captions, seed=seed, seconds=args.seconds, prefix=name)
        (out / f"{name}.jsonl").write_text(manifest.read_text(encoding="utf-8"), encoding="utf-8")

    # The first train_captions wordings are training captions; the rest become their paraphrases.
    by_clip = defaultdict(list)
    for line in full.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        by_clip[record["source"]].append(record)
    with (
        open(out / "train.jsonl", "w", encoding="utf-8") as train,
        open(out / "paraphrases.jsonl", "w", encoding="utf-8") as para,
    ):
        for records in by_clip.values():
            kept, extra = records[: args.train_captions], records[args.train_captions :]
            for record in kept:
                train.write(json.dumps(record) + "\n")
            paraphrases = [r["target"] for r in extra if r["target"] not in {k["target"] for k in kept}]
            if paraphrases:
                para.write(json.dumps({"text": kept[0]["target"], "paraphrases": paraphrases}) + "\n")


if __name__ == "__main__":
    main()
