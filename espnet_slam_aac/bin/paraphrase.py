"""Add paraphrased captions to a training data dir: back-translation (default) or a user file.

Back-translation runs the chain of translation models of --config (default: MarianMT English -> Chinese ->
English, Helsinki-NLP/opus-mt-en-zh and opus-mt-zh-en), batched and cached in --cache so that reruns
translate nothing twice. --paraphrases FILE takes them from a jsonl file instead, one
{"text": caption, "paraphrases": [...]} per line. Each caption gets up to --max_per_caption paraphrases,
added as utterances of the same clip (<key>_para<N>); OUT_DIR/paraphrases.jsonl records where each came
from; duplicates of a caption of the same clip (case, white space and final .!? ignored) are dropped.
The rules are in the docstring of espnet_slam_aac.data.paraphrase.

Config (YAML), every key optional:
  max_per_caption: 2
  backtranslation:
    chain:                   # translation hops, in order; each: model, revision, num_beams,
      - {model: Helsinki-NLP/opus-mt-en-zh, num_return_sequences: 2}   # num_return_sequences,
      - {model: Helsinki-NLP/opus-mt-zh-en}                            # max_new_tokens, sample, top_p
    batch_size: 32
    device: auto             # cuda if available, else cpu
    seed: 0
"""

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from espnet_slam_aac.data.paraphrase import (
    BackTranslationConfig,
    TranslationCache,
    back_translate,
    dedup_key,
    load_chain,
    paraphrase_data_dir,
    read_paraphrase_file,
)
from espnet_slam_aac.errors import ConfigError
from espnet_slam_aac.utils import runner
from espnet_slam_aac.utils.config import check_keys, read_yaml
from espnet_slam_aac.utils.fileio import refuse_overwrite


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("in_dir", type=Path, help="training data dir (one caption per utterance)")
    parser.add_argument("out_dir", type=Path, help="data dir to write: the original utterances and the paraphrases")
    parser.add_argument("--config", type=Path, default=None, help="YAML (see above); default: the built-in chain")
    parser.add_argument(
        "--paraphrases",
        type=Path,
        default=None,
        help="jsonl of {text, paraphrases} to take paraphrases from, instead of translating",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="translation cache (jsonl), shared across runs and sets (default: none)",
    )
    parser.add_argument("--max_per_caption", type=int, default=None, help="paraphrases per caption (default 2)")
    parser.add_argument("--device", default=None, help="override backtranslation.device")
    parser.add_argument("--batch_size", type=int, default=None, help="override backtranslation.batch_size")
    parser.add_argument("--seed", type=int, default=None, help="override backtranslation.seed")
    runner.add_arguments(parser)
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    runner.run(run, get_parser().parse_args(argv))


def run(args: argparse.Namespace) -> None:
    conf = {}
    if args.config is not None:
        conf = read_yaml(args.config, "paraphrase config")
        check_keys(conf, ["max_per_caption", "backtranslation"], str(args.config))
    # the data dir is replaced as a whole: no input may be in it
    refuse_overwrite([], [args.config, args.paraphrases, args.cache, args.in_dir], replaced_dirs=[args.out_dir])
    max_per_caption = args.max_per_caption if args.max_per_caption is not None else conf.get("max_per_caption", 2)
    if args.paraphrases is not None:
        table = read_paraphrase_file(args.paraphrases)

        def make(captions):
            if not any(dedup_key(c) in table for c in captions):
                raise ConfigError(
                    f"{args.paraphrases}: no caption of {args.in_dir} is in the file "
                    "(is it the paraphrase file of this set?)"
                )
            return table

        report = paraphrase_data_dir(
            args.in_dir, args.out_dir, make, max_per_caption, method=f"file:{args.paraphrases.name}"
        )
    else:
        where = f"{args.config}: backtranslation" if args.config else "backtranslation"
        bt = BackTranslationConfig.from_dict(conf.get("backtranslation") or {}, where)
        for name in ("device", "batch_size", "seed"):
            if getattr(args, name) is not None:
                setattr(bt, name, getattr(args, name))
        cache = TranslationCache(args.cache)
        method = "backtranslation:" + " -> ".join(hop.model for hop in bt.chain)

        def make(captions):
            return back_translate(captions, load_chain(bt), cache, bt.batch_size)

        report = paraphrase_data_dir(args.in_dir, args.out_dir, make, max_per_caption, method)
    print(f"{args.out_dir}: {report}", file=sys.stderr)


if __name__ == "__main__":
    main()
