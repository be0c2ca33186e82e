"""``espnet-slam-aac``: one command, one sub-command per tool in ``espnet_slam_aac.bin``.

Each tool module defines ``get_parser()`` and ``main(argv)``; this file only maps names to modules,
so ``espnet-slam-aac NAME ...`` and ``python -m espnet_slam_aac.bin.MODULE ...`` are the same program.
"""

import argparse
import importlib
import sys
from typing import List, Optional

# sub-command -> (module under espnet_slam_aac.bin, one-line help)
COMMANDS = {
    "prepare-data": ("prepare_data", "turn a jsonl manifest into a Kaldi-style data dir"),
    "validate-data": ("validate_data_dir", "check a Kaldi-style data dir and say what to fix"),
    "eat-features": ("eat_features", "extract EAT features from audio files (no fairseq)"),
    "train": ("aac_train", "train SLAM-AAC with ESPnet's trainer (any ESPnet *_train option)"),
    "import-slam-checkpoint": ("import_slam_checkpoint", "convert a SLAM-LLM SLAM-AAC checkpoint into ours"),
    "decode": ("aac_inference", "n-best decoding of a wav.scp: text, beam<N>/text, candidates.jsonl"),
    "caption": ("caption", "caption your own audio files, folders or wav.scp (TSV path<TAB>caption)"),
    "demo": ("demo", "serve a demo page: drop a clip, see its caption, candidates and spectrogram"),
    "caption-corpus": ("caption_corpus", "caption a corpus in jobs that resume: folder, wav.scp or jsonl -> jsonl"),
    "paraphrase": ("paraphrase", "add paraphrased captions to a training data dir (back-translation or a file)"),
    "pack": ("pack", "pack a trained model: config, trained weights, frozen-source references, model card"),
    "upload": ("upload", "upload a packed model to the Hugging Face Hub"),
    "clap-refine": ("clap_refine", "choose each clip's caption among its n-best candidates with a CLAP"),
    "refine-tune": ("refine_tune", "tune CLAP-Refine's LM weight on a validation set by a metric"),
    "score": ("aac_score", "score decodes against all references with the AAC metrics, write RESULTS.md"),
    "fetch-metric-resources": ("fetch_metric_resources", "link or download the jars and models the metrics need"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="espnet-slam-aac",
        description="SLAM-AAC automated audio captioning for ESPnet.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(f"  {name:<24} {help_}" for name, (_, help_) in COMMANDS.items()),
    )
    parser.add_argument("command", choices=sorted(COMMANDS), metavar="COMMAND", help="see below")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments of COMMAND (COMMAND --help)")
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    ns = build_parser().parse_args(argv)
    module = importlib.import_module(f"espnet_slam_aac.bin.{COMMANDS[ns.command][0]}")
    sys.argv[0] = f"espnet-slam-aac {ns.command}"
    module.main(ns.args)


if __name__ == "__main__":
    main()
