"""Score captions against all references of each clip with the standard AAC metrics (aac-metrics 0.5.4).

    espnet-slam-aac score --ref_dir data/test --decode_dir exp/x/decode/test --out_dir exp/x/decode/test/score
    espnet-slam-aac score --ref_dir data/test --hyp beam2=exp/x/decode/test/beam2/text exp/x/decode/test/text
    espnet-slam-aac score --collect exp/x --results_md exp/x/RESULTS.md --title exp/x

References are ``text_spk1..N`` in --ref_dir (Kaldi ``key caption`` lines); nothing else of a data dir is
read (no audio, no wav.scp). Every decode (a --hyp file, named NAME=PATH or after its folder) is scored in
one run; all keys must match. With candidates (--candidates, or --decode_dir's candidates.jsonl), also what
they could reach: SPIDEr-max and an oracle decode per --oracle_metrics (each clip's best candidate by that
metric). Writes scores.json, scores.jsonl (per clip), RESULTS.md and a figure (every decode, one axis per
metric) in --out_dir. Metrics whose jars or models are
missing are reported as missing with the command that fetches them; the others are computed.
Nothing is downloaded: see `espnet-slam-aac fetch-metric-resources`.
"""

import argparse
import logging
import re
from pathlib import Path
from typing import Dict, List, Optional

from espnet_slam_aac.errors import SlamAACError
from espnet_slam_aac.scoring import resources as metric_resources
from espnet_slam_aac.scoring import results
from espnet_slam_aac.scoring.metrics import (
    ALL_METRICS,
    NOT_ORACLE,
    ORACLE_METRICS,
    TextNormalization,
    check_candidates,
    check_keys,
    read_candidate_sets,
    read_hypotheses,
    read_references,
    score_decodes,
)
from espnet_slam_aac.scoring.plots import scale
from espnet_slam_aac.utils import runner
from espnet_slam_aac.utils.fileio import refuse_overwrite

logger = logging.getLogger("espnet_slam_aac.score")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="espnet-slam-aac score", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    io = parser.add_argument_group("inputs and outputs")
    io.add_argument("--ref_dir", type=Path, help="data dir holding text_spk1..text_spkN (all references)")
    io.add_argument(
        "--hyp",
        nargs="+",
        default=[],
        metavar="[NAME=]PATH",
        help="hypothesis text files (Kaldi `key caption`); NAME defaults to the file's folder name",
    )
    io.add_argument(
        "--decode_dir",
        type=Path,
        help="a set's decode dir: scores DIR/text as '1best' and every DIR/*/text (beam<N>, "
        "clap_refine, ...) as its folder name",
    )
    io.add_argument(
        "--out_dir",
        type=Path,
        help="where scores.json, scores.jsonl, RESULTS.md and the plot go "
        "(default: <decode_dir>/score, else <first --hyp's folder>/score)",
    )
    io.add_argument(
        "--candidates",
        type=Path,
        help="candidates.jsonl of the decode: score what the candidates could reach "
        "(default: <decode_dir>/candidates.jsonl where it exists)",
    )
    io.add_argument("--set_name", help="name of the evaluation set in the outputs (default: --ref_dir's name)")
    io.add_argument(
        "--model_name",
        default="",
        help="which model made the decodes, when a set is scored for several (e.g. 'untrained': the "
        "baseline, whose 1-best joins the trained model's figure in RESULTS.md)",
    )
    io.add_argument(
        "--min_refs",
        type=int,
        default=1,
        help="error if a clip has fewer references than this (clips with fewer references than "
        "others are otherwise scored with the ones they have, and listed in the log)",
    )

    scoring = parser.add_argument_group("scoring")
    scoring.add_argument(
        "--metrics",
        nargs="+",
        default=list(ALL_METRICS),
        choices=ALL_METRICS,
        metavar="METRIC",
        help=f"metrics to compute (default: all: {' '.join(ALL_METRICS)})",
    )
    scoring.add_argument(
        "--oracle_metrics",
        nargs="*",
        default=list(ORACLE_METRICS),
        choices=[m for m in ALL_METRICS if m not in NOT_ORACLE],
        metavar="METRIC",
        help="with candidates: an oracle decode per metric, each clip's best candidate by it "
        f"(default: {' '.join(ORACLE_METRICS)}; those missing here are reported missing)",
    )
    scoring.add_argument(
        "--no_ptb_tokenize",
        dest="ptb_tokenize",
        action="store_false",
        help="skip aac-metrics' PTB tokenization (lower-casing, punctuation tokens dropped); "
        "numbers then differ from the literature",
    )
    scoring.add_argument(
        "--strip_punctuation",
        action="store_true",
        help="lower-case and delete ASCII punctuation first, as ESPnet's clotho_v2 recipe does (off by default)",
    )
    scoring.add_argument(
        "--cache_dir",
        type=Path,
        help="aac-metrics cache root holding aac-metrics/ (default: $AAC_METRICS_CACHE_PATH or ~/.cache)",
    )
    scoring.add_argument(
        "--java", help="Java 8+ executable (default: $AAC_METRICS_JAVA_PATH, java on PATH, $JAVA_HOME)"
    )
    scoring.add_argument(
        "--no_link",
        dest="link",
        action="store_false",
        help="do not link jars from the installed pycocoevalcap wheel into the cache",
    )
    scoring.add_argument("--device", default="cuda_if_available", help="torch device of the FENSE models")

    report = parser.add_argument_group("RESULTS.md")
    report.add_argument("--results_md", type=Path, help="RESULTS.md path (default: <out_dir>/RESULTS.md)")
    report.add_argument("--title", default="", help="heading of the experiment in RESULTS.md (e.g. the exp dir)")
    report.add_argument("--model_config", type=Path, help="training config.yaml: its model keys go into RESULTS.md")
    report.add_argument("--decode_config", type=Path, help="decoding config (YAML) shown in RESULTS.md")
    report.add_argument("--refine_config", type=Path, help="CLAP-Refine config (YAML) shown in RESULTS.md")
    report.add_argument("--info", nargs="+", default=[], metavar="KEY=VALUE", help="more lines for the settings")
    report.add_argument(
        "--collect",
        nargs="+",
        type=Path,
        metavar="SCORES",
        help="only render RESULTS.md (--results_md) from earlier runs: scores.json files, or "
        "dirs searched for them (e.g. the experiment dir)",
    )
    runner.add_arguments(parser)
    return parser


def hypothesis_files(hyps: List[str], decode_dir: Optional[Path]) -> Dict[str, Path]:
    """Decode name -> text file, in the order given (--decode_dir: '1best' first, then folders naturally sorted)."""
    named: Dict[str, Path] = {}

    def add(name: str, path: Path) -> None:
        if name in named:
            raise SlamAACError(f"two decodes are named {name!r} ({named[name]} and {path}); name them with NAME=PATH")
        named[name] = path

    if decode_dir is not None:
        if (decode_dir / "text").is_file():
            add("1best", decode_dir / "text")
        natural = lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.parent.name)]  # noqa: E731
        for path in sorted(decode_dir.glob("*/text"), key=natural):
            add(path.parent.name, path)
        if not named:
            raise SlamAACError(f"{decode_dir}: no text or */text hypothesis files")
    for spec in hyps:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec).parent.name or "hyp", spec
        add(name, Path(path))
    return named


def settings_from(args: argparse.Namespace) -> Dict:
    settings: Dict = {}
    if args.model_config:
        settings[f"model ({args.model_config})"] = results.summarize_config(args.model_config, results.MODEL_KEYS)
    if args.decode_config:
        settings[f"decode ({args.decode_config})"] = results.summarize_config(args.decode_config)
    if args.refine_config:
        settings[f"refine ({args.refine_config})"] = results.summarize_config(args.refine_config)
    for item in args.info:
        key, sep, value = item.partition("=")
        if not sep:
            raise SlamAACError(f"--info {item!r}: expected KEY=VALUE")
        settings[key] = value
    return settings


def main(argv: Optional[List[str]] = None) -> None:
    runner.run(run, get_parser().parse_args(argv))


def run(args: argparse.Namespace) -> None:
    if args.collect:
        if not args.results_md:
            raise SlamAACError("--collect needs --results_md")
        summaries = results.find_summaries(args.collect)
        for path in results.write_results(args.results_md, summaries, args.title):
            logger.info("wrote %s", path)
        return
    if args.ref_dir is None or not (args.hyp or args.decode_dir):
        raise SlamAACError("give --ref_dir and --hyp and/or --decode_dir (or --collect)")

    files = hypothesis_files(args.hyp, args.decode_dir)
    hypotheses = {name: read_hypotheses(path) for name, path in files.items()}
    for name, hyps in hypotheses.items():
        empty = [k for k, v in hyps.items() if not v]
        if empty:
            logger.warning("decode %s: %d empty captions (%s)", name, len(empty), ", ".join(empty[:5]))
    references = read_references(args.ref_dir, args.min_refs)
    check_keys(references, hypotheses)  # input errors first, before the slower resource checks and scoring
    candidates_path = args.candidates
    if candidates_path is None and args.decode_dir is not None and (args.decode_dir / "candidates.jsonl").is_file():
        candidates_path = args.decode_dir / "candidates.jsonl"
    candidates = read_candidate_sets(candidates_path) if candidates_path is not None else None
    if candidates is not None:
        check_candidates(references, candidates)
    out_dir = args.out_dir or (args.decode_dir or next(iter(files.values())).parent) / "score"
    inputs = [*files.values(), *args.ref_dir.glob("text_spk*"), candidates_path]
    inputs += [args.model_config, args.decode_config, args.refine_config]
    refuse_overwrite(
        [out_dir / "scores.json", out_dir / "scores.jsonl", args.results_md or out_dir / "RESULTS.md"], inputs
    )
    settings = settings_from(args)
    resources = metric_resources.resolve(args.cache_dir, args.java, link=args.link)
    if resources.linked:
        logger.info(
            "linked %d files of the installed pycocoevalcap into %s",
            len(resources.linked),
            resources.cache_dir / "aac-metrics",
        )

    normalization = TextNormalization(ptb_tokenize=args.ptb_tokenize, strip_punctuation=args.strip_punctuation)
    report = score_decodes(
        references,
        hypotheses,
        resources,
        args.metrics,
        normalization,
        args.device,
        candidates=candidates,
        oracle_metrics=args.oracle_metrics,
    )

    set_name = args.set_name or args.ref_dir.resolve().name
    summary = results.summarize(
        report,
        set_name,
        {n: str(p) for n, p in files.items()},
        str(args.ref_dir),
        resources.java.version if resources.java else None,
        settings,
        model=args.model_name,
        candidates_path=str(candidates_path or ""),
    )
    results.write_scores(out_dir, report, hypotheses, summary)
    written = results.write_results(args.results_md or out_dir / "RESULTS.md", [summary], args.title)

    width = max(len(n) for n in report.decodes)
    metrics = [m for m in report.metrics if m not in report.missing]
    print(f"{'decode':<{width}}  " + "  ".join(f"{results.DISPLAY[m]:>9}" for m in metrics))
    for name, scores in report.decodes.items():
        print(f"{name:<{width}}  " + "  ".join(f"{scale(m, scores.corpus[m]):>9.2f}" for m in metrics))
    if report.reach is not None and report.reach.spider_max is not None:
        print(f"{'spider_max':<{width}}  {100 * report.reach.spider_max:>9.2f}")
    for name, reason in (report.reach.missing if report.reach is not None else {}).items():
        logger.warning("%s not computed: %s", name, reason)
    for metric, info in report.missing.items():
        logger.warning(
            "%s not computed: %s%s",
            results.DISPLAY[metric],
            info.reason,
            f" -- fetch with: {info.fetch}" if info.fetch else "",
        )
    logger.info("wrote %s", ", ".join(str(p) for p in [out_dir / "scores.json", out_dir / "scores.jsonl"] + written))


if __name__ == "__main__":
    main()
