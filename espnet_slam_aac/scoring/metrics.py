"""Scoring captions with the standard AAC metrics (aac-metrics 0.5.4), every decode of a set in one run.

``score_decodes(references, {decode_name: hypotheses}, ...)`` returns corpus and per-clip scores of
BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, SPICE, SPIDEr, SPIDEr-FL, FENSE, SBERT-sim and FER for every decode,
and its vocabulary size (``vocab``: distinct words after the text normalization, aac-metrics' ``vocab``)
beside the references'. A metric whose resources are missing (see ``metric_resources``) is reported in
``ScoreReport.missing`` with the command that fetches them; every other metric is computed. Nothing is
downloaded here.

What the candidates could reach (``candidates``: each clip's n-best captions, from ``candidates.jsonl``):
- SPIDEr-max: per clip the best SPIDEr among its candidates, averaged (aac-metrics' ``spider_max``: each
  candidate index scored as one decode against the same references, then the maximum per clip);
- an oracle decode per metric of ``oracle_metrics`` (``oracle_<metric>``): each clip's candidate with the
  best score by that metric (ties to the first candidate), then scored with every metric like any decode.
Clips with fewer candidates than others are padded with their own first candidate (it cannot change a
maximum). Only metrics among ``metrics`` are used; a missing one is reported in ``CandidateReach.missing``.

Text normalization (``TextNormalization``, see ``texts.py``):
- always: newlines, tabs and repeated spaces become one space (aac-metrics rejects ``\\n``), ends stripped;
- ``ptb_tokenize=True`` (default, as aac-metrics' ``evaluate``): the Stanford PTB tokenizer
  (``-preserveLines -lowerCase``) lower-cases and splits punctuation, then aac-metrics' PTB punctuation
  tokens (``. , ? ! : ; - -- ... ' '' ` `` -LRB- -RRB- -LCB- -RCB-``) are dropped; every metric sees that text;
- ``strip_punctuation=True`` (off by default): lower-case and delete ASCII punctuation before everything
  else, as ESPnet's clotho_v2 ``evaluation.py`` does. Off by default so numbers compare with the literature.

Batching, without changing any score compared with scoring each decode alone (``backends.py``):
- one PTB tokenizer call for the unique sentences of all references, decodes and candidates;
- one METEOR process: a ``SCORE`` line per unique (clip, hypothesis), then one ``EVAL`` line per decode
  (METEOR's corpus score comes from the summed statistics of that decode only);
- one SPICE call and one FENSE/FER/SBERT call on the unique (clip, hypothesis) pairs: their per-clip
  scores do not depend on other clips, and a decode's corpus score is the mean of its clips;
- BLEU, ROUGE-L and CIDEr-D (pure Python) run per decode: BLEU's corpus score and CIDEr-D's IDF depend
  on the whole call, so each decode gets its own call on the same references.
"""

import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from espnet_slam_aac.scoring import backends
from espnet_slam_aac.scoring.backends import FenseModels
from espnet_slam_aac.scoring.resources import MetricResources
from espnet_slam_aac.scoring.texts import (  # noqa: F401  (re-exported: the scoring API in one place)
    TextNormalization,
    check_candidates,
    check_keys,
    clean_text,
    read_candidate_sets,
    read_hypotheses,
    read_references,
)

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
    "vocab",
)
CIDER_BASED = ("cider_d", "spider", "spider_fl")
SPICE_BASED = ("spice", "spider", "spider_fl")
FENSE_BASED = ("fense", "sbert_sim", "fer", "spider_fl")
PER_CLIP = tuple(m for m in ALL_METRICS if m != "vocab")  # vocab is a corpus count
ORACLE_METRICS = ("spider_fl", "fense")  # the default oracle picks
NOT_ORACLE = ("fer", "vocab")  # lower is better / no per-clip score
FLUENCY_PENALTY = 0.9  # SPIDEr-FL and FENSE: score * (1 - 0.9 * fer)


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
class CandidateReach:
    """What each clip's candidate set could reach; the oracle decodes are in ``ScoreReport.decodes``."""

    candidates_per_clip: Dict[int, int]  # number of candidates -> number of clips
    spider_max: Optional[float] = None  # mean over clips of the best candidate's SPIDEr; None: not computed
    spider_max_sentences: List[float] = field(default_factory=list)
    oracles: Dict[str, str] = field(default_factory=dict)  # oracle decode name -> the metric it maximizes
    picks: Dict[str, Dict[str, str]] = field(default_factory=dict)  # oracle decode -> {key: chosen caption}
    missing: Dict[str, str] = field(default_factory=dict)  # "spider_max" / oracle name -> why not computed


@dataclass
class ScoreReport:
    keys: List[str]
    references_per_clip: Dict[int, int]  # number of references -> number of clips
    metrics: Tuple[str, ...]
    normalization: TextNormalization
    decodes: Dict[str, DecodeScores]
    missing: Dict[str, MissingMetric]
    reference_vocab: Dict[str, float] = field(default_factory=dict)  # "all", "one_per_clip" (aac-metrics vocab)
    reach: Optional[CandidateReach] = None


def spider_from(cider_d: np.ndarray, spice: np.ndarray) -> np.ndarray:
    """SPIDEr = (CIDEr-D + SPICE) / 2, per clip (aac-metrics ``functional/spider.py``)."""
    return (np.asarray(cider_d) + np.asarray(spice)) / 2.0


def fluency_penalized(scores: np.ndarray, fer: np.ndarray, penalty: float = FLUENCY_PENALTY) -> np.ndarray:
    """SPIDEr-FL = SPIDEr * (1 - 0.9 fer), FENSE = SBERT-sim * (1 - 0.9 fer), per clip (fer is 0 or 1)."""
    return np.asarray(scores) * (1.0 - penalty * np.asarray(fer))


def best_candidates(scores: np.ndarray) -> np.ndarray:
    """Per clip (column of a candidates x clips matrix) the index of the best candidate, ties to the first
    (as ``torch.argmax`` in aac-metrics' ``mult_cands_metric``)."""
    return np.argmax(np.asarray(scores), axis=0)


def oracle_name(metric: str) -> str:
    return f"oracle_{metric}"


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


class _PairScores:
    """Per-pair results of the Java programs and models for the unique (clip, hypothesis) pairs."""

    def __init__(self) -> None:
        self.index: Dict[Tuple[int, str], int] = {}
        self.meteor_stats: Optional[List[str]] = None
        self.spice: Optional[np.ndarray] = None
        self.fense: Dict[str, np.ndarray] = {}

    def add(self, texts: Sequence[str]) -> List[int]:
        return [self.index.setdefault((i, t), len(self.index)) for i, t in enumerate(texts)]


def score_decodes(
    references: Mapping[str, Sequence[str]],
    hypotheses: Mapping[str, Mapping[str, str]],
    resources: MetricResources,
    metrics: Sequence[str] = ALL_METRICS,
    normalization: TextNormalization = TextNormalization(),
    device: str = "cuda_if_available",
    fense_models: Optional[FenseModels] = None,
    candidates: Optional[Mapping[str, Sequence[str]]] = None,
    oracle_metrics: Sequence[str] = ORACLE_METRICS,
) -> ScoreReport:
    """Score every decode in ``hypotheses`` (name -> {key: caption}) against ``references`` (key -> captions);
    with ``candidates`` (key -> captions), also what the candidates could reach (module docstring)."""
    unknown = sorted(set(metrics) - set(ALL_METRICS))
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {', '.join(ALL_METRICS)}")
    bad_oracles = sorted(set(oracle_metrics) - (set(ALL_METRICS) - set(NOT_ORACLE)))
    if bad_oracles:
        raise ValueError(f"no oracle by {bad_oracles}: choose from {', '.join(m for m in PER_CLIP if m != 'fer')}")
    metrics = tuple(m for m in ALL_METRICS if m in metrics)
    check_keys(references, hypotheses)
    if candidates is not None:
        check_candidates(references, candidates)
    fense_models = fense_models or FenseModels()
    keys = sorted(references)
    missing = _missing_metrics(metrics, resources, normalization, fense_models, len(keys))
    todo = [m for m in metrics if m not in missing]

    import aac_metrics  # noqa: F401  (here, not first in the worker threads: concurrent first imports race)

    strip = normalization.strip_punctuation
    mrefs = [[clean_text(r, strip) for r in references[k]] for k in keys]
    cands = {name: [clean_text(hyps[k], strip) for k in keys] for name, hyps in hypotheses.items()}
    # candidate index j as a decode: each clip's j-th candidate (padded with its first)
    width = max((len(c) for c in candidates.values()), default=0) if candidates is not None else 0
    padded = [[(list(candidates[k]) + [candidates[k][0]] * width)[j] for k in keys] for j in range(width)]
    cand_sets = [[clean_text(t, strip) for t in texts] for texts in padded]
    reach_todo = _reach_metrics(todo, oracle_metrics) if candidates is not None else []
    if normalization.ptb_tokenize and todo:
        every = [s for refs in mrefs for s in refs] + [s for c in cands.values() for s in c]
        table = backends.ptb_tokenize(every + ([s for c in cand_sets for s in c] if reach_todo else []), resources)
        mrefs = [[table[r] for r in refs] for refs in mrefs]
        cands = {name: [table[c] for c in cs] for name, cs in cands.items()}
        cand_sets = [[table[c] for c in cs] for cs in cand_sets] if reach_todo else cand_sets

    pairs = _PairScores()
    per_decode = {name: pairs.add(cs) for name, cs in cands.items()}
    per_cand = [pairs.add(cs) for cs in cand_sets] if reach_todo else []
    pair_cands = [c for _, c in pairs.index]
    pair_refs = [mrefs[i] for i, _ in pairs.index]
    logger.info(
        "scoring %d decodes%s x %d clips (%d unique clip-hypothesis pairs)",
        len(cands),
        f" and {width} candidates per clip" if per_cand else "",
        len(keys),
        len(pair_cands),
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
    with contextlib.ExitStack() as stack:
        meteor = None
        if "meteor" in todo:
            try:
                meteor = stack.enter_context(backends.Meteor(resources))
            except OSError as exc:
                missing["meteor"] = MissingMetric(f"failed: cannot start METEOR: {exc}", "")
        with ThreadPoolExecutor(max_workers=3) as pool:  # Java programs and models run while Python scores
            meteor_job = pool.submit(meteor.stats, pair_cands, pair_refs) if meteor else None
            spice_job = (
                pool.submit(backends.spice, pair_cands, pair_refs, resources)
                if any(m in todo for m in SPICE_BASED)
                else None
            )
            fense_job = (
                pool.submit(backends.fense, pair_cands, pair_refs, wanted, fense_models, device) if wanted else None
            )
            python = {name: _python_metrics(name, cs, mrefs, todo) for name, cs in cands.items()}
            python_cands = [_python_metrics(f"candidate {j}", cs, mrefs, reach_todo) for j, cs in enumerate(cand_sets)]
            pairs.meteor_stats = outcome(meteor_job, ["meteor"]) if meteor_job else None
            pairs.spice = outcome(spice_job, SPICE_BASED) if spice_job else None
            pairs.fense = (outcome(fense_job, FENSE_BASED) if fense_job else None) or {}

        def assemble(scores: DecodeScores, index: List[int], wanted_metrics: Sequence[str]) -> DecodeScores:
            return _assemble(scores, index, wanted_metrics, pairs, missing, meteor)

        decodes = {name: assemble(python[name], per_decode[name], todo) for name, cs in cands.items()}
        reach = None
        if candidates is not None:
            per_candidate = [assemble(python_cands[j], per_cand[j], reach_todo) for j in range(len(per_cand))]
            reach, oracle_texts = _reach(
                keys, candidates, padded, cand_sets, per_candidate, todo, missing, oracle_metrics, list(decodes)
            )
            for name, (texts, index) in oracle_texts.items():
                decodes[name] = assemble(
                    _python_metrics(name, texts, mrefs, todo), [per_cand[j][i] for i, j in enumerate(index)], todo
                )

    counts: Dict[int, int] = {}
    for refs in mrefs:
        counts[len(refs)] = counts.get(len(refs), 0) + 1
    reference_vocab = _reference_vocab(mrefs) if "vocab" in todo and "vocab" not in missing else {}
    return ScoreReport(
        keys, dict(sorted(counts.items())), metrics, normalization, decodes, missing, reference_vocab, reach
    )


def _reach_metrics(todo: Sequence[str], oracle_metrics: Sequence[str]) -> List[str]:
    """The metrics every candidate is scored with: SPIDEr for SPIDEr-max, and each oracle's metric."""
    return [m for m in todo if m == "spider" or m in oracle_metrics]


def _assemble(
    scores: DecodeScores,
    index: List[int],
    wanted: Sequence[str],
    pairs: _PairScores,
    missing: Dict[str, MissingMetric],
    meteor: Optional["backends.Meteor"],
) -> DecodeScores:
    """A decode's scores: its Python metrics plus its pairs' METEOR, SPICE and FENSE, and the combinations."""
    if "meteor" in wanted and pairs.meteor_stats is not None and "meteor" not in missing:
        try:
            (scores.corpus["meteor"], scores.sentences["meteor"]) = meteor.evaluate(
                {scores.name: [pairs.meteor_stats[i] for i in index]}
            )[scores.name]
        except Exception as exc:  # the METEOR process
            logger.exception("METEOR corpus score of %s failed", scores.name)
            missing["meteor"] = MissingMetric(f"failed: {type(exc).__name__}: {exc}", "")
    per_clip = {k: v[index] for k, v in pairs.fense.items()}
    if pairs.spice is not None:
        per_clip["spice"] = pairs.spice[index]
        if "cider_d" in scores.sentences:
            per_clip["spider"] = spider_from(scores.sentences["cider_d"], per_clip["spice"])
        if "spider" in per_clip and "fer" in per_clip:
            per_clip["spider_fl"] = fluency_penalized(per_clip["spider"], per_clip["fer"])
    for metric, values in per_clip.items():
        scores.sentences[metric] = [float(v) for v in values]
        scores.corpus[metric] = float(np.mean(values))
    computed = [m for m in wanted if m not in missing]
    if "spider" in computed:  # corpus SPIDEr is built from the corpus scores, as aac-metrics does
        scores.corpus["spider"] = (scores.corpus["cider_d"] + scores.corpus["spice"]) / 2.0
    scores.corpus = {m: scores.corpus[m] for m in computed}
    scores.sentences = {m: scores.sentences[m] for m in computed if m in scores.sentences}
    return scores


def _reach(
    keys: List[str],
    candidates: Mapping[str, Sequence[str]],
    padded: List[List[str]],
    cand_sets: List[List[str]],
    per_candidate: List[DecodeScores],
    todo: Sequence[str],
    missing: Mapping[str, MissingMetric],
    oracle_metrics: Sequence[str],
    taken: Sequence[str],
) -> Tuple[CandidateReach, Dict[str, Tuple[List[str], List[int]]]]:
    """SPIDEr-max and the oracle picks from every candidate's per-clip scores; returns the reach and, per
    oracle decode, its normalized texts and the chosen candidate index of each clip."""
    counts: Dict[int, int] = {}
    for key in keys:
        counts[len(candidates[key])] = counts.get(len(candidates[key]), 0) + 1
    reach = CandidateReach(dict(sorted(counts.items())))

    def why(metric: str) -> Optional[str]:
        if metric not in todo and metric not in missing:
            return f"{metric} is not among the metrics scored"
        if metric in missing:
            return f"{metric} is missing here (see the missing metrics)"
        return None

    if why("spider"):
        reach.missing["spider_max"] = why("spider")
    else:
        matrix = np.array([c.sentences["spider"] for c in per_candidate])
        reach.spider_max_sentences = [float(v) for v in matrix.max(axis=0)]
        reach.spider_max = float(np.mean(reach.spider_max_sentences))
    oracles = {}
    taken_names = set(taken)
    for metric in oracle_metrics:
        name = oracle_name(metric)
        if why(metric) or name in taken_names:
            reach.missing[name] = why(metric) or f"a decode is already named {name!r}"
            continue
        best = best_candidates(np.array([c.sentences[metric] for c in per_candidate]))
        reach.oracles[name] = metric
        reach.picks[name] = {k: padded[j][i] for i, (k, j) in enumerate(zip(keys, best))}
        oracles[name] = ([cand_sets[j][i] for i, j in enumerate(best)], [int(j) for j in best])
    return reach, oracles


def _reference_vocab(mrefs: List[List[str]]) -> Dict[str, float]:
    """The references' vocabulary: all of them, and one per clip (aac-metrics' seeded average) for scale."""
    from aac_metrics.functional.vocab import vocab

    corpus, _ = vocab([refs[0] for refs in mrefs], mrefs)
    return {"all": float(corpus["vocab.mrefs_full"]), "one_per_clip": float(corpus["vocab.mrefs_avg"])}


def _python_metrics(name: str, cands: List[str], mrefs: List[List[str]], todo: Sequence[str]) -> DecodeScores:
    """BLEU-1..4, ROUGE-L, CIDEr-D and vocab of one decode (one call each: their corpus scores need the whole
    decode). CIDEr-D is also computed when only SPIDEr(-FL) is asked for, since they are built from it."""
    from aac_metrics.functional.bleu import bleu
    from aac_metrics.functional.cider_d import cider_d
    from aac_metrics.functional.rouge_l import rouge_l
    from aac_metrics.functional.vocab import vocab

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
    if "vocab" in todo:
        scores.corpus["vocab"] = float(vocab(cands, None, return_all_scores=False))
    return scores
