"""CLAP-Refine's LM weight tuned on a validation set: the weight whose picks score best by a named metric.

CLAP-Refine ranks a clip's candidates by ``similarity + w * lm_score`` (``clap.model.rescore``; ``lm_score``
is the candidate's mean log-probability per token, w = ``lm_weight``; SLAM-AAC's rule is w = 0). Here:

1. ``refine.refine`` embeds every clip and candidate of the tuning set once (w = 0) and records each
   candidate's similarity and lm_score;
2. for each w of the grid, ``rescore`` picks every clip's caption again from those recorded similarities
   (a one-dimensional "embedding" whose product with 1 is the similarity, so its rule applies unchanged);
3. the picks of every w are scored in one ``score_decodes`` run against the set's references;
4. the best w by ``metric`` wins (ties: the weight listed first) and is written with the whole curve:
   ``lm_weight.yaml`` (the choice, the grid, the scores), ``curve.tsv`` and ``curve.png``.
"""

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

import torch
import yaml

from espnet_slam_aac.clap.model import load_clap, rescore
from espnet_slam_aac.clap.refine import RefineConfig, refine
from espnet_slam_aac.data.candidates import read_candidates
from espnet_slam_aac.data.datadir import read_wav_scp
from espnet_slam_aac.errors import ConfigError, DataError, MetricResourceError
from espnet_slam_aac.scoring import plots
from espnet_slam_aac.scoring.metrics import PER_CLIP, TextNormalization, read_references, score_decodes
from espnet_slam_aac.scoring.resources import MetricResources
from espnet_slam_aac.utils.fileio import write_atomically

logger = logging.getLogger(__name__)

DEFAULT_WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0)
OUTPUTS = ("lm_weight.yaml", "curve.tsv", "curve.png")


@dataclass
class FusionCurve:
    metric: str
    weights: List[float]
    scores: List[float]  # corpus score of the picks at each weight
    changed: List[int]  # clips whose pick differs from the w = 0 pick
    lm_weight: float  # the chosen weight

    @property
    def best(self) -> float:
        return self.scores[self.weights.index(self.lm_weight)]


def picks_at(records: Sequence[dict], lm_weight: float) -> Dict[str, int]:
    """Each clip's candidate index under ``lm_weight``, from ``refine`` records made at any weight."""
    picks = {}
    for rec in records:
        cands = rec["candidates"]
        if lm_weight and any(c.get("lm_score") is None for c in cands):
            raise DataError(
                f"key {rec['key']!r}: a candidate has no logprob/length in candidates.jsonl, so the LM weight "
                "cannot be tuned; decode again with this package's decode (it records them)"
            )
        sims = torch.tensor([[c["similarity"]] for c in cands], dtype=torch.float32)
        picks[rec["key"]], _ = rescore(cands, torch.ones(1), sims, lm_weight)
    return picks


def choose(metric: str, weights: Sequence[float], scores: Sequence[float], changed: Sequence[int]) -> FusionCurve:
    """The weight with the best score (FER: the lowest); ties go to the weight listed first."""
    sign = -1.0 if metric == "fer" else 1.0
    best = max(range(len(weights)), key=lambda i: (sign * scores[i], -i))
    return FusionCurve(metric, list(weights), list(scores), list(changed), weights[best])


def tune_lm_weight(
    config: RefineConfig,
    candidates: Path,
    data_dir: Path,
    ref_dir: Path,
    out_dir: Path,
    resources: MetricResources,
    metric: str = "spider_fl",
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    normalization: TextNormalization = TextNormalization(),
    metric_device: str = "cuda_if_available",
) -> FusionCurve:
    """Tune ``lm_weight`` on one set (module docstring); writes ``out_dir`` and returns the curve."""
    if metric not in PER_CLIP:
        raise ConfigError(f"cannot tune on {metric!r}: choose one of {', '.join(PER_CLIP)}")
    weights = [float(w) for w in weights]
    if not weights or len(set(weights)) != len(weights):
        raise ConfigError(f"the LM weights to try must be distinct numbers, got {weights}")
    if not config.clap:
        raise ConfigError("no CLAP given: set 'clap:' in the refine YAML or pass --clap")
    clips = read_candidates(candidates)
    references = read_references(ref_dir)
    unknown = sorted({key for key, _ in clips} ^ set(references))
    if unknown:
        raise DataError(
            f"{candidates} and {ref_dir} hold different clips ({len(unknown)}: {', '.join(unknown[:5])}); "
            "tune on the candidates of the set whose references you give"
        )
    clap = load_clap(config.clap, **config.clap_options())
    records = refine(
        clap, clips, dict(read_wav_scp(Path(data_dir) / "wav.scp")), dataclasses.replace(config, lm_weight=0.0)
    )

    picks = {w: picks_at(records, w) for w in weights}
    names = {w: f"lm_weight={w:g}" for w in weights}
    texts = {names[w]: {r["key"]: r["candidates"][picks[w][r["key"]]]["text"] for r in records} for w in weights}
    report = score_decodes(
        references, texts, resources, metrics=[metric], normalization=normalization, device=metric_device
    )
    if metric in report.missing:
        info = report.missing[metric]
        raise MetricResourceError(
            f"cannot tune the LM weight on {metric}: {info.reason}"
            + (f"; fetch with `{info.fetch}`" if info.fetch else "")
            + ", or tune on a metric computable here (e.g. cider_d)"
        )
    reference = picks_at(records, 0.0)
    curve = choose(
        metric,
        weights,
        [report.decodes[names[w]].corpus[metric] for w in weights],
        [sum(picks[w][k] != reference[k] for k in reference) for w in weights],
    )
    write_curve(out_dir, curve, candidates=str(candidates), ref_dir=str(ref_dir), clap=str(config.clap))
    logger.info("CLAP-Refine LM weight: %g (%s %.4f on %s)", curve.lm_weight, metric, curve.best, ref_dir)
    return curve


def write_curve(out_dir: Path, curve: FusionCurve, **provenance: str) -> None:
    """``lm_weight.yaml`` (the choice first, then the curve and where it came from), ``curve.tsv``, ``curve.png``."""
    out_dir = Path(out_dir)
    summary = {
        "lm_weight": curve.lm_weight,
        "metric": curve.metric,
        "score": curve.best,
        "curve": [
            {"lm_weight": w, curve.metric: s, "clips_changed": c}
            for w, s, c in zip(curve.weights, curve.scores, curve.changed)
        ],
        **provenance,
    }
    write_atomically(out_dir / "lm_weight.yaml", yaml.safe_dump(summary, sort_keys=False).splitlines())
    rows = [f"lm_weight\t{curve.metric}\tclips_changed"]
    rows += [f"{w:g}\t{s:.6f}\t{c}" for w, s, c in zip(curve.weights, curve.scores, curve.changed)]
    write_atomically(out_dir / "curve.tsv", rows)
    title = f"CLAP-Refine LM weight by {plots.DISPLAY[curve.metric]} ({provenance.get('ref_dir', '')})"
    plots.plot_curve(curve.weights, curve.scores, curve.lm_weight, curve.metric, title, out_dir / "curve.png")
