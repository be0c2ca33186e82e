#!/usr/bin/env python3
"""A subset of Clotho v2.1 or AudioCaps, through aac-datasets, as a jsonl manifest (key, source, target).

    aac_datasets_manifest.py CORPUS SUBSET OUT_JSONL --root DIR [--download]

CORPUS/SUBSET: clotho dev|val|eval (v2.1) or audiocaps train|val|test (v1). --root is the folder that
holds CLOTHO_v2.1/ or AUDIOCAPS/ as aac-datasets lays them out; --download fetches what is missing into it
(Clotho from Zenodo; AudioCaps from YouTube, which needs yt-dlp and ffmpeg on PATH, and loses clips whose
videos are gone). One line per caption: key ``<corpus>_<subset>_<row>_<n>`` (row: the clip's position in
the subset's caption list, so keys do not move when clips go missing), the absolute audio path, caption n.

AudioCaps clips that are not on disk are left out, counted, and listed in OUT_JSONL's sibling
``<name>.missing.tsv`` (row, youtube_id, start_time); report the clip count with any AudioCaps score.

aac-datasets is an optional dependency: ``pip install -e '.[recipe]'`` (or ``pip install aac-datasets``).
"""

import argparse
import json
import os
import sys
from pathlib import Path
from typing import List, Optional

SUBSETS = {"clotho": ("dev", "val", "eval"), "audiocaps": ("train", "val", "test")}
INSTALL_HINT = (
    "aac-datasets is not installed. Install the recipe extras with `pip install -e '.[recipe]'` at the "
    "repository root (or `pip install aac-datasets`), or give your own jsonl manifests in db.sh"
)


def load_subset(corpus: str, subset: str, root: Path, download: bool):
    try:
        import aac_datasets
    except ImportError as err:
        raise SystemExit(f"aac_datasets_manifest.py: {INSTALL_HINT} ({err})") from err
    root.mkdir(parents=True, exist_ok=True)
    if corpus == "clotho":
        return aac_datasets.Clotho(str(root), subset=subset, download=download, version="v2.1")
    # every clip of the subset's list, with a path whether or not it is on disk
    return aac_datasets.AudioCaps(str(root), subset=subset, download=download, exclude_removed_audio=False)


def write_manifest(corpus: str, subset: str, dataset, out: Path) -> List[str]:
    """Write the manifest; returns the missing clips' tsv rows (AudioCaps)."""
    paths = dataset.at(None, "fpath")
    captions = dataset.at(None, "captions")
    extra = {}
    if corpus == "audiocaps":
        extra = {name: dataset.at(None, name) for name in ("youtube_id", "start_time")}
    missing = []
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row, (path, caps) in enumerate(zip(paths, captions)):
            if not os.path.isfile(path):
                if corpus == "clotho":  # Clotho downloads whole: a missing file is a broken download
                    raise SystemExit(
                        f"aac_datasets_manifest.py: {path} is missing; download Clotho again "
                        f"(--download, after removing the incomplete folder)"
                    )
                missing.append("\t".join([str(row)] + [str(extra[k][row]) for k in extra]))
                continue
            for n, caption in enumerate(caps, 1):
                key = f"{corpus}_{subset}_{row:05d}_{n}"
                f.write(json.dumps({"key": key, "source": os.path.abspath(path), "target": caption}) + "\n")
    tmp.replace(out)
    return missing


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="aac_datasets_manifest.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("corpus", choices=sorted(SUBSETS))
    parser.add_argument("subset")
    parser.add_argument("out", type=Path, help="the jsonl manifest to write")
    parser.add_argument("--root", type=Path, required=True, help="folder holding (or to hold) the corpus")
    parser.add_argument("--download", action="store_true", help="download what is missing")
    args = parser.parse_args(argv)
    if args.subset not in SUBSETS[args.corpus]:
        parser.error(f"{args.corpus} subsets: {', '.join(SUBSETS[args.corpus])}")
    dataset = load_subset(args.corpus, args.subset, args.root, args.download)
    missing = write_manifest(args.corpus, args.subset, dataset, args.out)
    total = len(dataset)
    report = args.out.with_name(args.out.stem + ".missing.tsv")
    if missing:
        report.write_text("\n".join(["row\tyoutube_id\tstart_time"] + missing) + "\n", encoding="utf-8")
        print(
            f"{args.corpus} {args.subset}: {len(missing)} of {total} clips are not on disk (could not be "
            f"fetched); left out, listed in {report}",
            file=sys.stderr,
        )
    elif report.exists():
        report.unlink()
    print(f"{args.out}: {total - len(missing)} clips of {args.corpus} {args.subset}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
