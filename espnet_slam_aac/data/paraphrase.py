"""Paraphrase augmentation: more training captions for the same clips (SLAM-AAC pre-training data).

Two sources of paraphrases:

- **back-translation** (what SLAM-AAC did to Clotho): every caption goes through a chain of translation
  models, by default MarianMT English -> Chinese -> English (``Helsinki-NLP/opus-mt-en-zh`` then
  ``Helsinki-NLP/opus-mt-zh-en``). Each hop is a seq2seq model loaded with ``AutoModelForSeq2SeqLM`` (any
  hub id or local folder, at a pinned ``revision`` if given) and decoded by beam search, batched; a hop with
  ``num_return_sequences: k`` keeps its k best translations, so the chain gives up to
  k1 x k2 x ... paraphrases per caption. Beam search is deterministic; with ``sample: true`` a hop samples
  (top-p), seeded per batch from ``seed``, so reruns give the same output for the same batches.
- **a user file** (``--paraphrases FILE``): jsonl lines ``{"text": caption, "paraphrases": [str, ...]}``;
  a caption of the data dir takes the paraphrases of the line whose text matches it (compared as the
  duplicate rule below compares).

**Cache.** Every translation is stored in a jsonl cache, one line per (model, settings, source text):
``{"model": id, "text": source, "out": [translations]}``, appended batch by batch. A rerun (or another set
with the same captions) translates only what the cache lacks; an interrupted run resumes. Change the
model, revision or decoding settings and the key changes, so stale entries are never used.

**Output.** A new data dir holding every original utterance plus, for each caption, up to
``max_per_caption`` paraphrases as utterances of the same clip (same audio, key ``<key>_para<N>``).
``paraphrases.jsonl`` in it records the provenance of each added utterance: ``key``, ``source_key`` and
``source_text`` (the caption it came from), ``text`` and ``method``.

**Duplicates.** Two captions are the same when they are equal after lower-casing, collapsing white space
and dropping final ``.``, ``!`` or ``?`` (``dedup_key``). A paraphrase equal to any caption of its clip
(original or already added) is dropped, and counted. Original captions are never changed or removed.
A paraphrase that cannot be a caption (empty, control characters) is dropped and counted too.
"""

import json
import logging
import zlib
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Protocol, Sequence, Tuple

from espnet_slam_aac.data.datadir import read_data_dir, write_data_dir
from espnet_slam_aac.data.records import Utterance, caption_problem, normalize_caption
from espnet_slam_aac.errors import ConfigError, DataError
from espnet_slam_aac.utils.config import check_keys, resolve_device
from espnet_slam_aac.utils.fileio import write_atomically

logger = logging.getLogger(__name__)

PROVENANCE_FILE = "paraphrases.jsonl"


def dedup_key(text: str) -> str:
    """What two captions must share to count as the same: case, white space and final . ! ? ignored."""
    return " ".join(text.lower().split()).rstrip(".!? ")


# ------------------------------------------------------------------------------------------- config
@dataclass
class Hop:
    """One translation step of the chain."""

    model: str
    revision: Optional[str] = None
    num_beams: int = 4
    num_return_sequences: int = 1
    max_new_tokens: int = 128
    sample: bool = False
    top_p: float = 0.9

    def cache_id(self) -> str:
        """The model and every setting that changes its output."""
        decoding = f"sample,top_p={self.top_p}" if self.sample else f"beams={self.num_beams}"
        return (
            f"{self.model}@{self.revision or 'default'}|{decoding}|n={self.num_return_sequences}"
            f"|max_new_tokens={self.max_new_tokens}"
        )


@dataclass
class BackTranslationConfig:
    chain: List[Hop] = field(
        default_factory=lambda: [
            Hop("Helsinki-NLP/opus-mt-en-zh", num_return_sequences=2),
            Hop("Helsinki-NLP/opus-mt-zh-en"),
        ]
    )
    batch_size: int = 32
    device: str = "auto"  # "auto": cuda if available, else cpu
    seed: int = 0

    @classmethod
    def from_dict(cls, conf: Mapping, where: str = "backtranslation") -> "BackTranslationConfig":
        conf = dict(conf)
        check_keys(conf, ["chain", "batch_size", "device", "seed"], where)
        hops = conf.pop("chain", None)
        out = cls(**conf)
        if hops is not None:
            if not isinstance(hops, list) or not hops:
                raise ConfigError("chain must be a non-empty list of {model: ..., ...} hops")
            for i, hop in enumerate(hops):
                if not isinstance(hop, Mapping) or "model" not in hop:
                    raise ConfigError(f"{where}.chain[{i}]: a hop is a mapping {{model: ..., ...}}, got {hop!r}")
                check_keys(hop, Hop.__dataclass_fields__, f"{where}.chain[{i}]")
            out.chain = [Hop(**hop) for hop in hops]
        for hop in out.chain:
            if hop.num_return_sequences < 1 or (not hop.sample and hop.num_return_sequences > hop.num_beams):
                raise ConfigError(f"hop {hop.model}: num_return_sequences must be 1..num_beams")
        return out


# --------------------------------------------------------------------------------------- translation
class Translator(Protocol):
    cache_id: str

    def translate(self, texts: Sequence[str]) -> List[List[str]]:
        """For each text, its translations (best first)."""


class Seq2SeqTranslator:
    """A hugging face seq2seq translation model (MarianMT by default), batched, deterministic."""

    def __init__(self, hop: Hop, batch_size: int = 32, device: str = "auto", seed: int = 0):
        self.hop, self.batch_size, self.device, self.seed = hop, batch_size, device, seed
        self.cache_id = hop.cache_id()
        self.model = self.tokenizer = None  # loaded on first use: a full cache needs no model

    def _load(self) -> None:
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        hop = self.hop
        self.device = resolve_device(self.device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(hop.model, revision=hop.revision)
            self.model = AutoModelForSeq2SeqLM.from_pretrained(hop.model, revision=hop.revision)
        except OSError as e:
            raise ConfigError(
                f"cannot load translation model {hop.model} (revision {hop.revision}): {e}. "
                "Is the hub reachable (HF_HUB_OFFLINE unset), or is it in the HF cache?"
            ) from e
        self.model.to(self.device).eval()

    def translate(self, texts: Sequence[str]) -> List[List[str]]:
        import torch

        if self.model is None:
            self._load()
        hop, n = self.hop, self.hop.num_return_sequences
        out: List[List[str]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            inputs = self.tokenizer(batch, return_tensors="pt", padding=True, truncation=True).to(self.device)
            kwargs = dict(max_new_tokens=hop.max_new_tokens, num_return_sequences=n)
            if hop.sample:
                # Seeded by the batch's own texts: the same batch samples the same paraphrases on every run.
                torch.manual_seed(self.seed + zlib.crc32("\n".join(batch).encode("utf-8")))
                kwargs.update(do_sample=True, top_p=hop.top_p)
            else:
                kwargs.update(num_beams=hop.num_beams, do_sample=False)
            with torch.inference_mode():
                generated = self.model.generate(**inputs, **kwargs)
            decoded = [" ".join(t.split()) for t in self.tokenizer.batch_decode(generated, skip_special_tokens=True)]
            out += [decoded[i * n : (i + 1) * n] for i in range(len(batch))]
        return out


class TranslationCache:
    """Translations already made, in an append-only jsonl file (see the module doc)."""

    def __init__(self, path: Optional[Path]):
        self.path = Path(path) if path else None
        self.entries: Dict[Tuple[str, str], List[str]] = {}
        if self.path and self.path.is_file():
            lines = self.path.read_text(encoding="utf-8").splitlines()
            for lineno, line in enumerate(lines, 1):
                try:
                    obj = json.loads(line)
                    self.entries[(obj["model"], obj["text"])] = [str(t) for t in obj["out"]]
                except (ValueError, KeyError, TypeError) as e:
                    if lineno == len(lines):  # an interrupted append: that batch is translated again
                        logger.warning("%s:%d: incomplete last line ignored", self.path, lineno)
                    else:
                        raise DataError(
                            f"{self.path}:{lineno}: not a cache entry ({e}); delete the cache file to translate again"
                        ) from e

    def get(self, model: str, text: str) -> Optional[List[str]]:
        return self.entries.get((model, text))

    def put_many(self, model: str, pairs: Iterable[Tuple[str, List[str]]]) -> None:
        lines = []
        for text, out in pairs:
            self.entries[(model, text)] = out
            lines.append(json.dumps({"model": model, "text": text, "out": out}, ensure_ascii=False) + "\n")
        if self.path and lines:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.writelines(lines)


def translate_cached(
    translator: Translator, texts: Iterable[str], cache: TranslationCache, batch_size: int = 32
) -> Dict[str, List[str]]:
    """text -> translations for every distinct text; only what the cache lacks reaches the model."""
    texts = sorted(set(texts))
    todo = [t for t in texts if cache.get(translator.cache_id, t) is None]
    if todo:
        logger.info("%s: translating %d texts (%d cached)", translator.cache_id, len(todo), len(texts) - len(todo))
    todo.sort(key=len)  # similar lengths batch with less padding
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        cache.put_many(translator.cache_id, zip(batch, translator.translate(batch)))
    return {t: cache.get(translator.cache_id, t) for t in texts}


def back_translate(
    captions: Iterable[str], chain: Sequence[Translator], cache: TranslationCache, batch_size: int = 32
) -> Dict[str, List[str]]:
    """dedup_key(caption) -> its paraphrases through the chain, in order, duplicates removed."""
    current = {c: [c] for c in set(captions)}
    for translator in chain:
        table = translate_cached(translator, (t for texts in current.values() for t in texts), cache, batch_size)
        current = {c: [out for t in texts for out in table[t]] for c, texts in current.items()}
    result: Dict[str, List[str]] = defaultdict(list)
    for caption in sorted(current):
        seen = {dedup_key(caption)} | {dedup_key(t) for t in result[dedup_key(caption)]}
        for text in current[caption]:
            if dedup_key(text) not in seen:
                seen.add(dedup_key(text))
                result[dedup_key(caption)].append(text)
    return dict(result)


def load_chain(config: BackTranslationConfig) -> List[Translator]:
    return [Seq2SeqTranslator(hop, config.batch_size, config.device, config.seed) for hop in config.chain]


def read_paraphrase_file(path: Path) -> Dict[str, List[str]]:
    """The user's jsonl (``{"text": ..., "paraphrases": [...]}`` per line) as dedup_key(text) -> paraphrases."""
    table: Dict[str, List[str]] = defaultdict(list)
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                raise DataError(f"{path}:{lineno}: not JSON ({e})") from e
            if (
                not isinstance(obj, dict)
                or not isinstance(obj.get("text"), str)
                or not isinstance(obj.get("paraphrases"), list)
                or not all(isinstance(p, str) for p in obj["paraphrases"])
            ):
                raise DataError(f'{path}:{lineno}: expected {{"text": str, "paraphrases": [str, ...]}}')
            table[dedup_key(obj["text"])] += obj["paraphrases"]
    return dict(table)


# --------------------------------------------------------------------------------------- augmentation
@dataclass
class AugmentReport:
    utterances: int = 0  # original utterances
    with_paraphrases: int = 0  # utterances whose caption had at least one paraphrase
    added: int = 0
    duplicates: int = 0  # paraphrases dropped as equal to a caption of their clip
    invalid: int = 0  # paraphrases dropped as unusable captions

    def __str__(self) -> str:
        return ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in asdict(self).items())


def augment(
    utterances: Sequence[Utterance], paraphrases: Mapping[str, Sequence[str]], max_per_caption: int, method: str
) -> Tuple[List[Utterance], List[dict], AugmentReport]:
    """Add up to ``max_per_caption`` paraphrases of each caption as utterances of the same clip.

    ``paraphrases`` maps ``dedup_key(caption)`` to candidate paraphrases. Returns the added utterances,
    their provenance records and the counts."""
    report = AugmentReport(utterances=len(utterances))
    by_clip: Dict[str, List[Utterance]] = defaultdict(list)
    for utt in utterances:
        if len(utt.texts) > 1:
            raise DataError(
                f"utterance {utt.key!r} has {len(utt.texts)} references: paraphrase augmentation "
                "is for training sets (one caption per utterance), not evaluation sets"
            )
        by_clip[utt.source].append(utt)
    added, provenance = [], []
    for clip in by_clip.values():
        seen = {dedup_key(u.text) for u in clip}
        for utt in sorted(clip, key=lambda u: u.key):
            count = 0
            candidates = paraphrases.get(dedup_key(utt.text), ())
            report.with_paraphrases += bool(candidates)
            for candidate in candidates:
                if count == max_per_caption:
                    break
                text = normalize_caption(candidate)
                if caption_problem(text):
                    report.invalid += 1
                elif dedup_key(text) in seen:
                    report.duplicates += 1
                else:
                    seen.add(dedup_key(text))
                    count += 1
                    key = f"{utt.key}_para{count}"
                    added.append(Utterance(key, utt.source, (text,), utt.num_samples, utt.duration))
                    provenance.append(
                        {"key": key, "source_key": utt.key, "source_text": utt.text, "text": text, "method": method}
                    )
    report.added = len(added)
    return added, provenance, report


def paraphrase_data_dir(
    in_dir: Path,
    out_dir: Path,
    make_paraphrases: Callable[[List[str]], Mapping[str, Sequence[str]]],
    max_per_caption: int,
    method: str,
) -> AugmentReport:
    """``in_dir`` + paraphrases -> ``out_dir`` (a data dir) with ``paraphrases.jsonl`` provenance.

    ``make_paraphrases(captions)`` returns ``dedup_key(caption) -> paraphrases`` (``back_translate`` or a
    table from ``read_paraphrase_file``)."""
    utterances = read_data_dir(in_dir)
    paraphrases = make_paraphrases(sorted({u.text for u in utterances}))
    added, provenance, report = augment(utterances, paraphrases, max_per_caption, method)
    write_data_dir(list(utterances) + added, out_dir)
    write_atomically(Path(out_dir) / PROVENANCE_FILE, (json.dumps(r, ensure_ascii=False) for r in provenance))
    return report
