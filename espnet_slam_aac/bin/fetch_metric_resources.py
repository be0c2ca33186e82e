"""Put the jars and models the captioning metrics need where aac-metrics looks for them.

    espnet-slam-aac fetch-metric-resources --dry_run          # what is there, what would be linked/downloaded
    espnet-slam-aac fetch-metric-resources --metrics spice    # fetch what SPICE (and SPIDEr...) needs

First, without network: jars shipped by installed packages (the pycocoevalcap 1.2 wheel: PTB tokenizer,
METEOR, SPICE and 17 of its 19 libraries) are linked into <cache>/aac-metrics/. Then whatever is still
missing is downloaded through aac-metrics 0.5.4 (needs internet):
  ptb     stanford-corenlp-3.4.1.jar (github.com/tylin/coco-caption)
  meteor  meteor-1.5.jar + paraphrase-{en,fr,de,es,cz}.gz
  spice   SPICE-1.0.zip (panderson.me) + stanford-corenlp-full-2015-12-09.zip (nlp.stanford.edu, ~400 MB);
          alternatively copy stanford-corenlp-3.6.0.jar and stanford-corenlp-3.6.0-models.jar into
          <cache>/aac-metrics/spice/lib/ by hand
  fense   hub models sentence-transformers/paraphrase-TinyBERT-L6-v2 and bert-base-uncased (Hugging Face
          cache) + echecker_clotho_audiocaps_base.ckpt ($FENSE_DATA or <torch hub>/fense_data)
Exits 1 if something asked for is still missing afterwards. Java (8+) must be installed separately.
"""

import argparse
import logging
from pathlib import Path
from typing import Dict, List, Optional

from espnet_slam_aac.scoring import resources as mr
from espnet_slam_aac.scoring.metrics import ALL_METRICS
from espnet_slam_aac.utils import runner

logger = logging.getLogger("espnet_slam_aac.fetch_metric_resources")
ALIASES = {"ptb": ("java", "ptb"), "all": ("java",) + mr.FETCHABLE}


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="espnet-slam-aac fetch-metric-resources",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--metrics",
        nargs="+",
        default=["all"],
        choices=("all", "ptb") + ALL_METRICS,
        metavar="METRIC",
        help="metrics to make computable (default: all); 'ptb' = the tokenizer only",
    )
    parser.add_argument(
        "--cache_dir", type=Path, help="aac-metrics cache root (default: $AAC_METRICS_CACHE_PATH or ~/.cache)"
    )
    parser.add_argument("--java", help="Java executable to check (default: as `score` finds it)")
    parser.add_argument(
        "--dry_run",
        action="store_true",
        help="only print what is present, what would be linked and what would be downloaded",
    )
    runner.add_arguments(parser)
    return parser


def components_for(metrics: List[str]) -> List[str]:
    """Resource components needed by the metrics, with the PTB tokenizer (every metric uses it by default)."""
    needed: Dict[str, None] = {}
    for metric in metrics:
        names = ALIASES.get(metric) or ("java", "ptb") + mr.METRIC_COMPONENTS[metric]
        needed.update(dict.fromkeys(names))
    return [c for c in ("java",) + mr.FETCHABLE if c in needed]


def download_sources(component: str) -> List[str]:
    """What aac-metrics 0.5.4 downloads for a component (URLs and hub ids)."""
    if component in ("sbert", "echecker"):
        from aac_metrics.functional.fer import _PRETRAIN_ECHECKERS_DICT

        if component == "sbert":
            return [f"hub model {mr.SBERT_MODEL}"]
        return [_PRETRAIN_ECHECKERS_DICT[mr.ECHECKER_NAME][0], f"hub model {mr.ECHECKER_BACKBONE}"]
    from aac_metrics.download import DATA_URLS

    names = {
        "ptb": ["stanford_nlp"],
        "meteor": [n for n in DATA_URLS if n.startswith("meteor")],
        "spice": ["spice_zip", "spice_corenlp_zip"],
    }[component]
    return [DATA_URLS[n]["url"] for n in names]


def download(component: str, cache_dir: Path) -> None:
    from aac_metrics.download import download_metrics

    flags = dict(ptb_tokenizer=False, meteor=False, spice=False, fense=False, bert_score=False)
    flags[{"ptb": "ptb_tokenizer", "sbert": "fense", "echecker": "fense"}.get(component, component)] = True
    download_metrics(cache_path=str(cache_dir), verbose=1, **flags)


def print_status(resources: mr.MetricResources, components: List[str]) -> List[str]:
    missing = []
    for name in components:
        component = resources.components[name]
        if component.ok:
            detail = f"Java {resources.java.version} ({resources.java.path})" if name == "java" else "present"
            print(f"  {name:<9} ok       {detail}")
        else:
            missing.append(name)
            print(f"  {name:<9} MISSING  " + "\n                     ".join(component.missing))
    return missing


def main(argv: Optional[List[str]] = None) -> None:
    runner.run(run, get_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    cache_dir = args.cache_dir or mr.default_cache_dir()
    components = components_for(args.metrics)
    links = mr.link_installed(cache_dir, dry_run=args.dry_run)
    print(f"aac-metrics cache: {cache_dir}")
    for target, source in links:
        print(f"  {'would link' if args.dry_run else 'linked'} {target} -> {source}")
    resources = mr.resolve(cache_dir, args.java, link=False, dry_run=args.dry_run)
    if args.dry_run:
        # jars that would be linked count as present in the plan
        planned = {str(t) for t, _ in links}
        for component in resources.components.values():
            component.missing = [m for m in component.missing if m not in planned]
    print("status:")
    missing = print_status(resources, components)
    fetchable = [c for c in missing if c != "java"]
    if args.dry_run:
        for name in fetchable:
            print(f"would download for {name}: " + ", ".join(download_sources(name)))
        if "java" in missing:
            print("Java cannot be downloaded by this tool: " + mr.fetch_command("java"))
        return 0
    for name in dict.fromkeys("fense" if c in ("sbert", "echecker") else c for c in fetchable):
        component = "sbert" if name == "fense" else name
        logger.info("downloading %s: %s", name, ", ".join(download_sources(component)))
        try:
            download(component, cache_dir)
        except Exception as exc:  # network errors come in many types; report and go on with the others
            logger.error("downloading %s failed: %s: %s", name, type(exc).__name__, exc)
    if fetchable:
        resources = mr.resolve(cache_dir, args.java, link=True)
        print("status after downloading:")
        missing = print_status(resources, components)
    if missing:
        print("still missing: " + ", ".join(missing) + ("; " + mr.fetch_command("java") if "java" in missing else ""))
        return 1
    return 0


if __name__ == "__main__":
    main()
