#!/usr/bin/env python3
"""A training-layout data dir (one utterance per caption) as an evaluation set: one utterance per clip.

    references_view.py IN_DIR OUT_DIR

Utterances sharing an audio file (wav.scp path) are one clip: its key is the first of their keys (in
sorted order), its captions, in key order, become text_spk1..N. Stage 8 uses it to decode a validation set
once per clip, and stage 9 scores CLAP-Refine's LM weights against all of a clip's captions. OUT_DIR is
written atomically (espnet_slam_aac.data.datadir).
"""

import argparse
import sys
from pathlib import Path
from typing import Dict, List

from espnet_slam_aac.data.datadir import read_data_dir, write_data_dir
from espnet_slam_aac.data.records import Utterance
from espnet_slam_aac.errors import SlamAACError


def references_view(in_dir: Path, out_dir: Path) -> int:
    """Write the view; returns the number of clips."""
    clips: Dict[str, List[Utterance]] = {}
    for utt in read_data_dir(in_dir):  # sorted by key
        clips.setdefault(utt.source, []).append(utt)
    views = [
        Utterance(
            group[0].key, source, tuple(t for u in group for t in u.texts), group[0].num_samples, group[0].duration
        )
        for source, group in clips.items()
    ]
    write_data_dir(views, out_dir, references=True)
    return len(views)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("in_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()
    try:
        n = references_view(args.in_dir, args.out_dir)
    except SlamAACError as e:
        sys.exit(f"references_view.py: error: {e}")
    print(f"{args.out_dir}: {n} clips", file=sys.stderr)


if __name__ == "__main__":
    main()
