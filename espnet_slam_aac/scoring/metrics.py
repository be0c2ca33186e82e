"""Scoring captions with the standard AAC metrics (aac-metrics 0.5.4), every decode of a set in one run.

``score_decodes(references, {decode_name: hypotheses}, ...)`` returns corpus and per-clip scores of
BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, SPICE, SPIDEr, SPIDEr-FL, FENSE, SBERT-sim and FER for every decode.
A metric whose resources are missing (see ``metric_resources``) is reported in ``ScoreReport.missing``
with the command that fetches them; every other metric is computed. Nothing is downloaded here.

Text normalization (``TextNormalization``):
- always: newlines, tabs and repeated spaces become one space (aac-metrics rejects ``\\n``), ends stripped;
- ``ptb_tokenize=True`` (default, as aac-metrics' ``evaluate``): the Stanford PTB tokenizer
  (``-preserveLines -lowerCase``) lower-cases and splits punctuation, then aac-metrics' PTB punctuation
  tokens (``. , ? ! : ; - -- ... ' '' ` `` -LRB- -RRB- -LCB- -RCB-``) are dropped; every metric sees that text;
- ``strip_punctuation=True`` (off by default): lower-case and delete ASCII punctuation before everything
  else, as ESPnet's clotho_v2 ``evaluation.py`` does. Off by default so numbers compare with the literature.

Batching, without changing any score compared with scoring each decode alone:
- one PTB tokenizer call for the unique sentences of all references and all decodes;
- one METEOR process: a ``SCORE`` line per unique (clip, hypothesis), then one ``EVAL`` line per decode
  (METEOR's corpus score comes from the summed statistics of that decode only);
- one SPICE call and one FENSE/FER/SBERT call on the unique (clip, hypothesis) pairs: their per-clip
  scores do not depend on other clips, and a decode's corpus score is the mean of its clips;
- BLEU, ROUGE-L and CIDEr-D (pure Python) run per decode: BLEU's corpus score and CIDEr-D's IDF depend
  on the whole call, so each decode gets its own call on the same references.
"""

import contextlib
import importlib
import logging
import string
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from espnet_slam_aac.data.datadir import read_data_dir
from espnet_slam_aac.data.records import normalize_caption
from espnet_slam_aac.errors import DataError, MetricResourceError
from espnet_slam_aac.scoring.resources import METEOR_JAR, MetricResources, write_java_wrapper

logger = logging.getLogger(__name__)

ALL_METRICS = (
    "bleu_1",
    "bleu_2",
    "bleu_3",
    "bleu_4",
    "meteor",
    "rouge_l",
    "cider_d",
    "spice",
    "spider",
    "spider_fl",
    "fense",
    "sbert_sim",
    "fer",
)
CIDER_BASED = ("cider_d", "spider", "spider_fl")
SPICE_BASED = ("spice", "spider", "spider_fl")
FENSE_BASED = ("fense", "sbert_sim", "fer", "spider_fl")
FLUENCY_PENALTY = 0.9  # SPIDEr-FL and FENSE: score * (1 - 0.9 * fer)
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


@dataclass(frozen=True)
class MissingMetric:
    reason: str
    fetch: str  # command(s) that make it computable; empty when no resource is missing


@dataclass
class DecodeScores:
    name: str
    corpus: Dict[str, float] = field(default_factory=dict)
    sentences: Dict[str, List[float]] = field(default_factory=dict)  # per clip, in ScoreReport.keys order


@dataclass
class ScoreReport:
    keys: List[str]
    references_per_clip: Dict[int, int]  # number of references -> number of clips
    metrics: Tuple[str, ...]
    normalization: TextNormalization
    decodes: Dict[str, DecodeScores]
    missing: Dict[str, MissingMetric]


@dataclass
class FenseModels:
    """FENSE/FER/SBERT models: aac-metrics names (default) or loaded objects (tests, custom checkpoints)."""

    sbert: Any = "paraphrase-TinyBERT-L6-v2"
    echecker: Any = "echecker_clotho_audiocaps_base"
    echecker_tokenizer: Any = None

    @property
    def injected(self) -> bool:
        return not isinstance(self.sbert, str) and not isinstance(self.echecker, str)


def read_hypotheses(path: Path) -> Dict[str, str]:
    """A decode's ``key caption`` lines (split at the first whitespace); a key alone is an empty caption
    (a decoder may emit nothing). Duplicate keys are an error naming the line."""
    path = Path(path)
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
    return texts


def read_references(data_dir: Path, min_refs: int = 1) -> Dict[str, List[str]]:
    """All references of each clip (key -> captions) from an evaluation data dir's ``text_spk1..N``.

    The data dir is read and checked by ``espnet_slam_aac.data.datadir.read_data_dir``. A clip absent from some
    ``text_spk<i>`` has fewer references; that is logged (counts and first keys) and scored with the
    references it has, down to ``min_refs``, below which it is an error.
    """
    data_dir = Path(data_dir)
    if not any(p.name[len("text_spk") :].isdigit() for p in data_dir.glob("text_spk*")):
        raise DataError(
            f"{data_dir}: no text_spk1..N files. Scoring needs all references of each clip as text_spk1..N "
            "(prepare-data writes them for evaluation sets)."
        )
    references = {u.key: list(u.texts) for u in read_data_dir(data_dir)}
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
    return references


def clean_text(text: str, strip_punctuation: bool = False) -> str:
    """Whitespace runs (newlines included) to one space; optionally lower-case and delete ASCII punctuation."""
    if strip_punctuation:
        text = text.lower().translate(_PUNCT_TABLE)
    return normalize_caption(text)


def check_keys(references: Mapping[str, Sequence[str]], hypotheses: Mapping[str, Mapping[str, str]]) -> None:
    """Every hypothesis key must have references and every reference clip a hypothesis, in every decode."""
    problems = []
    for name, hyps in hypotheses.items():
        for what, keys in (
            ("hypotheses without references", sorted(set(hyps) - set(references))),
            ("reference clips without a hypothesis", sorted(set(references) - set(hyps))),
        ):
            if keys:
                shown = ", ".join(keys[:5]) + (", ..." if len(keys) > 5 else "")
                problems.append(f"decode {name!r}: {len(keys)} {what} ({shown})")
    empty = sorted(k for k, refs in references.items() if not refs)
    if empty:
        problems.append(f"{len(empty)} clips have no reference ({', '.join(empty[:5])})")
    if problems:
        raise DataError("hypotheses and references do not match: " + "; ".join(problems))


def spider_from(cider_d: np.ndarray, spice: np.ndarray) -> np.ndarray:
    """SPIDEr = (CIDEr-D + SPICE) / 2, per clip (aac-metrics ``functional/spider.py``)."""
    return (np.asarray(cider_d) + np.asarray(spice)) / 2.0


def fluency_penalized(scores: np.ndarray, fer: np.ndarray, penalty: float = FLUENCY_PENALTY) -> np.ndarray:
    """SPIDEr-FL = SPIDEr * (1 - 0.9 fer), FENSE = SBERT-sim * (1 - 0.9 fer), per clip (fer is 0 or 1)."""
    return np.asarray(scores) * (1.0 - penalty * np.asarray(fer))


@contextlib.contextmanager
def _java_accepted() -> Iterator[None]:
    """Let aac-metrics' PTB tokenizer and SPICE run on the Java we resolved (8+, any version format).

    aac-metrics 0.5.4 re-runs ``java -version`` before each call and accepts only 8-13 in the
    ``MAJOR.MINOR`` format (Java 8's ``1.8.0_392`` raises). Our own check (``metric_resources.find_java``)
    has already accepted the runtime, so the name those modules call is replaced for the duration.
    """
    # import_module: ``aac_metrics.functional.spice`` the attribute is the function, not the module
    spice_module = importlib.import_module("aac_metrics.functional.spice")
    tokenization = importlib.import_module("aac_metrics.utils.tokenization")
    saved = tokenization.check_java_path, spice_module.check_java_path
    tokenization.check_java_path = spice_module.check_java_path = lambda java_path: True
    try:
        yield
    finally:
        tokenization.check_java_path, spice_module.check_java_path = saved


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    import huggingface_hub.constants as hub_constants

    saved = hub_constants.HF_HUB_OFFLINE
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = saved


def _ptb_tokenize(sentences: List[str], resources: MetricResources) -> Dict[str, str]:
    from aac_metrics.utils.tokenization import preprocess_mono_sents

    unique = list(dict.fromkeys(sentences))
    with _java_accepted():
        tokenized = preprocess_mono_sents(unique, cache_path=str(resources.cache_dir), java_path=resources.java.path)
    return dict(zip(unique, tokenized))


def _meteor(
    cands: List[str], mrefs: List[List[str]], per_decode: Dict[str, List[int]], resources: MetricResources
) -> Dict[str, Tuple[float, List[float]]]:
    """METEOR 1.5 as aac-metrics runs it (same command and line encoding), in one process for all decodes."""
    from aac_metrics.functional.meteor import _encode_cand_and_refs

    command = [
        resources.java.path,
        "-Duser.country=US",
        "-Duser.language=en",
        "-jar",
        "-Xmx2G",
        str(resources.cache_dir / METEOR_JAR),
        "-",
        "-",
        "-stdio",
        "-l",
        "en",
        "-norm",
    ]
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr)

        def stopped() -> MetricResourceError:
            stderr.seek(0)
            return MetricResourceError(
                f"METEOR ({' '.join(command)}) stopped: {stderr.read().decode(errors='replace')[-2000:]}"
            )

        def ask(lines: List[bytes], answers: int) -> List[str]:
            """Write all lines from a thread while reading the answers here: no round trip per line, and
            neither side blocks on a full pipe."""

            def write() -> None:
                try:
                    for line in lines:
                        process.stdin.write(line)
                    process.stdin.flush()
                except BrokenPipeError:
                    pass  # the reader below sees the process end

            writer = threading.Thread(target=write, daemon=True)
            writer.start()
            out = [process.stdout.readline().decode().strip() for _ in range(answers)]
            writer.join()
            if not all(out):
                raise stopped()
            return out

        try:
            stats = ask([_encode_cand_and_refs(cand, refs) for cand, refs in zip(cands, mrefs)], len(cands))
            evals = [f"EVAL ||| {' ||| '.join(stats[i] for i in index)}\n".encode() for index in per_decode.values()]
            out = iter(ask(evals, sum(len(index) + 1 for index in per_decode.values())))
            results = {}
            for name, index in per_decode.items():
                sentences = [float(next(out)) for _ in index]
                results[name] = (float(next(out)), sentences)
        finally:
            with contextlib.suppress(BrokenPipeError):  # unsent lines of a process that already ended
                process.stdin.close()
            process.kill()
            process.wait()
    return results


def _spice(cands: List[str], mrefs: List[List[str]], resources: MetricResources) -> np.ndarray:
    from aac_metrics.functional.spice import spice

    with tempfile.TemporaryDirectory() as tmp, _java_accepted():
        java = write_java_wrapper(resources.java, Path(tmp))
        _, sents = spice(cands, mrefs, cache_path=str(resources.cache_dir), java_path=java, tmp_path=tmp)
    return sents["spice"].numpy()


def _fense(
    cands: List[str], mrefs: List[List[str]], wanted: set, models: FenseModels, device: str
) -> Dict[str, np.ndarray]:
    """Per-clip sbert_sim / fer / fense, loading each model once for all decodes."""
    from aac_metrics.functional.fense import fense
    from aac_metrics.functional.fer import fer
    from aac_metrics.functional.sbert_sim import sbert_sim

    common = dict(device=device, return_all_scores=True)
    echecker = dict(echecker=models.echecker, echecker_tokenizer=models.echecker_tokenizer)
    with _hub_offline():
        if "sbert_sim" in wanted and "fer" in wanted:
            _, sents = fense(cands, mrefs, sbert_model=models.sbert, **echecker, **common)
        elif "fer" in wanted:
            _, sents = fer(cands, **echecker, **common)
        else:
            _, sents = sbert_sim(cands, mrefs, sbert_model=models.sbert, **common)
    return {k: v.cpu().numpy() for k, v in sents.items() if k in ("sbert_sim", "fer", "fense")}


def _missing_metrics(
    metrics: Sequence[str],
    resources: MetricResources,
    normalization: TextNormalization,
    fense_models: FenseModels,
    n_clips: int,
) -> Dict[str, MissingMetric]:
    missing = {}
    for metric in metrics:
        blocking = resources.blocking(metric, normalization.ptb_tokenize)
        if fense_models.injected:
            blocking = [c for c in blocking if c.name not in ("sbert", "echecker")]
        if blocking:
            reason = "; ".join(f"{c.name}: missing " + ", ".join(c.missing) for c in blocking)
            fetch = "; ".join(dict.fromkeys(c.fetch for c in blocking))
            missing[metric] = MissingMetric(reason, fetch)
        elif metric in CIDER_BASED and n_clips < 2:
            missing[metric] = MissingMetric("CIDEr-D needs at least 2 clips (its IDF comes from the corpus)", "")
    return missing


def score_decodes(
    references: Mapping[str, Sequence[str]],
    hypotheses: Mapping[str, Mapping[str, str]],
    resources: MetricResources,
    metrics: Sequence[str] = ALL_METRICS,
    normalization: TextNormalization = TextNormalization(),
    device: str = "cuda_if_available",
    fense_models: Optional[FenseModels] = None,
) -> ScoreReport:
    """Score every decode in ``hypotheses`` (name -> {key: caption}) against ``references`` (key -> captions)."""
    unknown = sorted(set(metrics) - set(ALL_METRICS))
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {', '.join(ALL_METRICS)}")
    metrics = tuple(m for m in ALL_METRICS if m in metrics)
    check_keys(references, hypotheses)
    fense_models = fense_models or FenseModels()
    keys = sorted(references)
    missing = _missing_metrics(metrics, resources, normalization, fense_models, len(keys))
    todo = [m for m in metrics if m not in missing]

    import aac_metrics  # noqa: F401  (here, not first in the worker threads: concurrent first imports race)

    strip = normalization.strip_punctuation
    mrefs = [[clean_text(r, strip) for r in references[k]] for k in keys]
    cands = {name: [clean_text(hyps[k], strip) for k in keys] for name, hyps in hypotheses.items()}
    if normalization.ptb_tokenize and todo:
        table = _ptb_tokenize([s for refs in mrefs for s in refs] + [s for c in cands.values() for s in c], resources)
        mrefs = [[table[r] for r in refs] for refs in mrefs]
        cands = {name: [table[c] for c in cs] for name, cs in cands.items()}

    # unique (clip, hypothesis) pairs for the metrics whose per-clip score ignores the other clips
    pair_index: Dict[Tuple[int, str], int] = {}
    per_decode = {
        name: [pair_index.setdefault((i, c), len(pair_index)) for i, c in enumerate(cs)] for name, cs in cands.items()
    }
    pair_cands = [c for _, c in pair_index]
    pair_refs = [mrefs[i] for i, _ in pair_index]
    logger.info(
        "scoring %d decodes x %d clips (%d unique clip-hypothesis pairs)", len(cands), len(keys), len(pair_cands)
    )

    def outcome(job: Any, affected: Sequence[str]) -> Any:
        """A Java or model job's result; a crash is reported for the metrics built on it, the rest goes on."""
        try:
            return job.result()
        except Exception as exc:  # whatever the external program or model raised
            logger.exception("computing %s failed", "/".join(affected))
            for metric in affected:
                if metric in todo:
                    missing[metric] = MissingMetric(f"failed: {type(exc).__name__}: {exc}", "")
            return None

    wanted = {"sbert_sim"} if any(m in todo for m in ("fense", "sbert_sim")) else set()
    wanted |= {"fer"} if any(m in todo for m in ("fense", "fer", "spider_fl")) else set()
    with ThreadPoolExecutor(max_workers=3) as pool:  # Java programs and models run while Python scores
        meteor_job = pool.submit(_meteor, pair_cands, pair_refs, per_decode, resources) if "meteor" in todo else None
        spice_job = (
            pool.submit(_spice, pair_cands, pair_refs, resources) if any(m in todo for m in SPICE_BASED) else None
        )
        fense_job = pool.submit(_fense, pair_cands, pair_refs, wanted, fense_models, device) if wanted else None
        decodes = {name: _python_metrics(name, cs, mrefs, todo) for name, cs in cands.items()}
        meteor = outcome(meteor_job, ["meteor"]) if meteor_job else None
        spice_pairs = outcome(spice_job, SPICE_BASED) if spice_job else None
        fense_pairs = (outcome(fense_job, FENSE_BASED) if fense_job else None) or {}

    computed = [m for m in todo if m not in missing]
    for name, scores in decodes.items():
        index = per_decode[name]
        if meteor:
            scores.corpus["meteor"], scores.sentences["meteor"] = meteor[name]
        per_clip = {k: v[index] for k, v in fense_pairs.items()}
        if spice_pairs is not None:
            per_clip["spice"] = spice_pairs[index]
            if "cider_d" in scores.sentences:
                per_clip["spider"] = spider_from(scores.sentences["cider_d"], per_clip["spice"])
            if "spider" in per_clip and "fer" in per_clip:
                per_clip["spider_fl"] = fluency_penalized(per_clip["spider"], per_clip["fer"])
        for metric, values in per_clip.items():
            scores.sentences[metric] = [float(v) for v in values]
            scores.corpus[metric] = float(np.mean(values))
        if "spider" in computed:  # corpus SPIDEr is built from the corpus scores, as aac-metrics does
            scores.corpus["spider"] = (scores.corpus["cider_d"] + scores.corpus["spice"]) / 2.0
        scores.corpus = {m: scores.corpus[m] for m in computed}
        scores.sentences = {m: scores.sentences[m] for m in computed}

    counts: Dict[int, int] = {}
    for refs in mrefs:
        counts[len(refs)] = counts.get(len(refs), 0) + 1
    return ScoreReport(keys, dict(sorted(counts.items())), metrics, normalization, decodes, missing)


def _python_metrics(name: str, cands: List[str], mrefs: List[List[str]], todo: Sequence[str]) -> DecodeScores:
    """BLEU-1..4, ROUGE-L and CIDEr-D of one decode (one call each: their corpus scores need the whole decode).

    CIDEr-D is also computed when only SPIDEr(-FL) is asked for, since they are built from it.
    """
    from aac_metrics.functional.bleu import bleu
    from aac_metrics.functional.cider_d import cider_d
    from aac_metrics.functional.rouge_l import rouge_l

    scores = DecodeScores(name)
    if any(m.startswith("bleu_") for m in todo):
        corpus, sents = bleu(cands, mrefs, n=4, return_1_to_n=True)
        for n in range(1, 5):
            scores.corpus[f"bleu_{n}"] = float(corpus["bleu_1_to_4"][n - 1])
            scores.sentences[f"bleu_{n}"] = sents["bleu_1_to_4"][n - 1].tolist()
    if "rouge_l" in todo:
        corpus, sents = rouge_l(cands, mrefs)
        scores.corpus["rouge_l"], scores.sentences["rouge_l"] = float(corpus["rouge_l"]), sents["rouge_l"].tolist()
    if any(m in todo for m in CIDER_BASED):
        corpus, sents = cider_d(cands, mrefs)
        scores.corpus["cider_d"], scores.sentences["cider_d"] = float(corpus["cider_d"]), sents["cider_d"].tolist()
    return scores
