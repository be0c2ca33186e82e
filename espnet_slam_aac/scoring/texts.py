"""What is scored: hypotheses, references, candidate sets, and the text normalization applied to all of them.

References are a data dir's ``text_spk1..N`` alone (``key caption`` lines): scoring never needs audio, so
``wav.scp``, ``utt2num_samples`` and the other files of a data dir are neither required nor read.
"""

import logging
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Sequence

from espnet_slam_aac.data.candidates import read_candidates
from espnet_slam_aac.data.records import normalize_caption
from espnet_slam_aac.errors import DataError

logger = logging.getLogger(__name__)

_PUNCT_TABLE = str.maketrans("", "", string.punctuation)


@dataclass(frozen=True)
class TextNormalization:
    ptb_tokenize: bool = True
    strip_punctuation: bool = False

    def describe(self) -> str:
        steps = ["whitespace collapsed"]
        if self.strip_punctuation:
            steps.append("lower-cased and ASCII punctuation deleted (ESPnet clotho_v2 style)")
        if self.ptb_tokenize:
            steps.append("PTB-tokenized and lower-cased, PTB punctuation tokens dropped (aac-metrics default)")
        else:
            steps.append("no PTB tokenization (split on spaces)")
        return "; ".join(steps)


def clean_text(text: str, strip_punctuation: bool = False) -> str:
    """Whitespace runs (newlines included) to one space; optionally lower-case and delete ASCII punctuation."""
    if strip_punctuation:
        text = text.lower().translate(_PUNCT_TABLE)
    return normalize_caption(text)


def _read_kaldi_text(path: Path, allow_empty: bool) -> Dict[str, str]:
    """``key caption`` lines split at the first whitespace; blank lines skipped; a duplicate key (or, unless
    ``allow_empty``, a key without caption) is an error naming the line."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    texts: Dict[str, str] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        key, *rest = line.split(maxsplit=1)
        if key in texts:
            raise DataError(f"{path}:{lineno}: duplicate key {key!r}")
        texts[key] = rest[0].strip() if rest else ""
        if not texts[key] and not allow_empty:
            raise DataError(f"{path}:{lineno}: key {key!r} has no caption; a reference must not be empty")
    return texts


def read_hypotheses(path: Path) -> Dict[str, str]:
    """A decode's ``key caption`` lines (split at the first whitespace); a key alone is an empty caption
    (a decoder may emit nothing). Duplicate keys are an error naming the line."""
    return _read_kaldi_text(Path(path), allow_empty=True)


def reference_files(data_dir: Path) -> List[Path]:
    """``text_spk1..N`` of ``data_dir`` in order; DataError when there are none or the numbering has gaps."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: not a folder; give the data dir holding text_spk1..N")
    found = sorted(
        (p for p in data_dir.iterdir() if re.fullmatch(r"text_spk[0-9]+", p.name)),
        key=lambda p: int(p.name[len("text_spk") :]),
    )
    if not found:
        raise DataError(
            f"{data_dir}: no text_spk1..N files. Scoring needs all references of each clip as text_spk1..N "
            "(prepare-data --eval writes them for evaluation sets)."
        )
    names = [p.name for p in found]
    if names != [f"text_spk{k}" for k in range(1, len(found) + 1)]:
        raise DataError(f"{data_dir}: reference files {', '.join(names)} are not numbered 1..{len(found)} without gaps")
    return found


def read_references(data_dir: Path, min_refs: int = 1) -> Dict[str, List[str]]:
    """All references of each clip (key -> captions) from ``text_spk1..N`` of ``data_dir``, nothing else.

    The clips are those of ``text_spk1``; ``text_spkK`` may leave out clips that have fewer than K
    references (as ``prepare-data --eval`` writes them). Such clips are logged (counts and first keys) and
    scored with the references they have, down to ``min_refs``, below which it is an error.
    """
    files = reference_files(data_dir)
    tables = [_read_kaldi_text(path, allow_empty=False) for path in files]
    references = {key: [text] for key, text in tables[0].items()}
    for path, table in zip(files[1:], tables[1:]):
        extra = sorted(set(table) - set(tables[0]))
        if extra:
            raise DataError(
                f"{path}: {len(extra)} key(s) not in {files[0].name} ({', '.join(extra[:5])}); "
                "every clip's first reference goes into text_spk1"
            )
        for key, text in table.items():
            references[key].append(text)
    if not references:
        raise DataError(f"{files[0]}: no references")
    most = max(len(refs) for refs in references.values())
    fewer = sorted(k for k, refs in references.items() if len(refs) < most)
    if fewer:
        logger.warning(
            "%s: %d of %d clips have fewer than %d references (%s); they are scored with the references they have",
            data_dir,
            len(fewer),
            len(references),
            most,
            ", ".join(f"{k}: {len(references[k])}" for k in fewer[:5]),
        )
    too_few = [k for k in fewer if len(references[k]) < min_refs]
    if too_few:
        raise DataError(
            f"{data_dir}: {len(too_few)} clips have fewer than {min_refs} references "
            f"({', '.join(too_few[:5])}{', ...' if len(too_few) > 5 else ''}); fix the data or lower --min_refs"
        )
    return dict(sorted(references.items()))


def read_candidate_sets(path: Path) -> Dict[str, List[str]]:
    """Each clip's candidate captions (key -> texts, in file order) from a decode's ``candidates.jsonl``."""
    return {key: [c["text"] for c in cands] for key, cands in read_candidates(path)}


def _shown(keys: Sequence[str]) -> str:
    return ", ".join(keys[:5]) + (", ..." if len(keys) > 5 else "")


def check_keys(references: Mapping[str, Sequence[str]], hypotheses: Mapping[str, Mapping[str, str]]) -> None:
    """Every hypothesis key must have references and every reference clip a hypothesis, in every decode."""
    problems = []
    for name, hyps in hypotheses.items():
        for what, keys in (
            ("hypotheses without references", sorted(set(hyps) - set(references))),
            ("reference clips without a hypothesis", sorted(set(references) - set(hyps))),
        ):
            if keys:
                problems.append(f"decode {name!r}: {len(keys)} {what} ({_shown(keys)})")
    empty = sorted(k for k, refs in references.items() if not refs)
    if empty:
        problems.append(f"{len(empty)} clips have no reference ({', '.join(empty[:5])})")
    if problems:
        raise DataError("hypotheses and references do not match: " + "; ".join(problems))


def check_candidates(references: Mapping[str, Sequence[str]], candidates: Mapping[str, Sequence[str]]) -> None:
    """The candidate sets must cover exactly the reference clips, each with at least one candidate."""
    problems = []
    for what, keys in (
        ("clips without references", sorted(set(candidates) - set(references))),
        ("reference clips without candidates", sorted(set(references) - set(candidates))),
        ("clips with an empty candidate list", sorted(k for k, c in candidates.items() if not c)),
    ):
        if keys:
            problems.append(f"{len(keys)} {what} ({_shown(keys)})")
    if problems:
        raise DataError("candidates and references do not match: " + "; ".join(problems))
