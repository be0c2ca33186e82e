"""What the candidates could reach: SPIDEr-max, oracle picks and vocab equal aac-metrics' own on the same
input (its ``mult_cands_metric`` / ``spider_max`` / ``vocab``), on a small synthesized set."""

from pathlib import Path

import numpy as np
import pytest
import torch

from espnet_slam_aac.errors import DataError
from espnet_slam_aac.scoring import resources as mr
from espnet_slam_aac.scoring.metrics import (
    ALL_METRICS,
    TextNormalization,
    best_candidates,
    score_decodes,
    spider_from,
)
from espnet_slam_aac.testing import synth

NO_PTB = TextNormalization(ptb_tokenize=False)


def no_resources() -> mr.MetricResources:
    return mr.MetricResources(
        Path("/nonexistent"),
        None,
        {name: mr.Component(name, missing=["absent"], fetch=f"fetch {name}") for name in ("java",) + mr.FETCHABLE},
    )


def candidate_set(n_clips: int = 12, n_cands: int = 4, seed: int = 3):
    """References from synth's wordings; each clip's candidates describe it, a neighbour, or part of it."""
    rng = np.random.default_rng(seed)
    events = [synth.random_events(rng) for _ in range(n_clips)]
    refs = {f"clip{i:02d}": synth.captions_for(e, 5) for i, e in enumerate(events)}
    cands = {}
    for i, key in enumerate(sorted(refs)):
        own = synth.captions_for(events[i], n_cands)
        other = synth.captions_for(events[(i + 1) % n_clips], n_cands)
        cands[key] = [own[j] if (i + j) % 3 else other[j] for j in range(n_cands)]
    return refs, cands


def test_oracle_picks_equal_aac_metrics_mult_cands_max_per_metric():
    from aac_metrics.functional.bleu import bleu_1
    from aac_metrics.functional.cider_d import cider_d
    from aac_metrics.functional.mult_cands import mult_cands_metric
    from aac_metrics.functional.rouge_l import rouge_l

    refs, cands = candidate_set()
    keys = sorted(refs)
    hyps = {"1best": {k: c[0] for k, c in cands.items()}}
    report = score_decodes(
        refs,
        hyps,
        no_resources(),
        metrics=["bleu_1", "rouge_l", "cider_d", "vocab"],
        normalization=NO_PTB,
        candidates=cands,
        oracle_metrics=["cider_d", "bleu_1", "rouge_l", "fense"],
    )
    reach = report.reach
    assert reach.candidates_per_clip == {4: len(keys)}
    assert list(report.decodes) == ["1best", "oracle_cider_d", "oracle_bleu_1", "oracle_rouge_l"]
    assert reach.missing["oracle_fense"] == "fense is not among the metrics scored"
    assert reach.missing["spider_max"] == "spider is not among the metrics scored"
    for metric, function in (("cider_d", cider_d), ("bleu_1", bleu_1), ("rouge_l", rouge_l)):
        corpus, sents = mult_cands_metric(
            function, metric, [cands[k] for k in keys], [refs[k] for k in keys], return_all_cands_scores=True
        )
        oracle = report.decodes[f"oracle_{metric}"]
        np.testing.assert_allclose(oracle.sentences[metric], sents[f"{metric}_max"].numpy(), rtol=1e-12)
        if metric != "bleu_1":  # corpus BLEU is not the mean of the sentence scores
            assert oracle.corpus[metric] == pytest.approx(float(corpus[f"{metric}_max"]), rel=1e-12)
        picked = sents[f"{metric}_all"].argmax(dim=1).tolist()
        assert reach.picks[f"oracle_{metric}"] == {k: cands[k][j] for k, j in zip(keys, picked)}
    # the oracle by CIDEr-D is at least as good as every single candidate index, and than the 1-best
    assert report.decodes["oracle_cider_d"].corpus["cider_d"] >= report.decodes["1best"].corpus["cider_d"]


def test_vocab_per_decode_and_the_references_equal_aac_metrics_vocab():
    from aac_metrics.functional.vocab import vocab

    refs, cands = candidate_set()
    keys = sorted(refs)
    hyps = {"first": {k: c[0] for k, c in cands.items()}, "last": {k: c[-1] for k, c in cands.items()}}
    report = score_decodes(refs, hyps, no_resources(), metrics=["vocab"], normalization=NO_PTB)
    for name, texts in hyps.items():
        corpus, _ = vocab([texts[k] for k in keys], [refs[k] for k in keys])
        assert report.decodes[name].corpus == {"vocab": float(corpus["vocab.cands"])}
        assert report.decodes[name].sentences == {}
    assert report.reference_vocab == {
        "all": float(corpus["vocab.mrefs_full"]),
        "one_per_clip": pytest.approx(float(corpus["vocab.mrefs_avg"])),
    }


def test_uneven_candidate_lists_are_padded_with_the_clips_first_candidate():
    refs = {"a": ["a dog barks", "a dog is barking"], "b": ["rain falls", "heavy rain"], "c": ["a bell rings"]}
    cands = {"a": ["a cat", "a dog barks"], "b": ["rain falls"], "c": ["a bell", "bells", "a bell rings"]}
    report = score_decodes(
        refs,
        {},
        no_resources(),
        metrics=["cider_d"],
        normalization=NO_PTB,
        candidates=cands,
        oracle_metrics=["cider_d"],
    )
    assert report.reach.candidates_per_clip == {1: 1, 2: 1, 3: 1}
    assert report.reach.picks["oracle_cider_d"] == {"a": "a dog barks", "b": "rain falls", "c": "a bell rings"}


def test_candidates_must_cover_the_reference_clips():
    refs = {"a": ["x y"], "b": ["y z"]}
    with pytest.raises(DataError, match=r"1 reference clips without candidates \(b\)"):
        score_decodes(refs, {}, no_resources(), metrics=["bleu_1"], normalization=NO_PTB, candidates={"a": ["x"]})
    with pytest.raises(ValueError, match="no oracle by"):
        score_decodes(refs, {}, no_resources(), normalization=NO_PTB, candidates={}, oracle_metrics=["fer"])


def test_spider_max_selection_matches_aac_metrics_mult_cands_with_given_spice():
    """SPICE cannot run without CoreNLP 3.6.0: its per-clip values are given, and the combination and the
    per-clip selection are checked against aac-metrics' own (``_spider_from_outputs``, ``mult_cands_metric``)."""
    from aac_metrics.functional.cider_d import cider_d
    from aac_metrics.functional.mult_cands import mult_cands_metric
    from aac_metrics.functional.spider import _spider_from_outputs

    refs, cands = candidate_set(n_clips=6, n_cands=3)
    keys = sorted(refs)
    rng = np.random.default_rng(0)
    given_spice = rng.uniform(0, 0.3, size=(3, len(keys)))
    given_spice[:, 0] = 0.1  # a clip whose candidates tie on SPICE

    def spider_with_given_spice(candidates, mult_references, return_all_scores=True):
        j = next(j for j in range(3) if candidates == [cands[k][j] for k in keys])
        spice = torch.as_tensor(given_spice[j], dtype=torch.float64)
        return _spider_from_outputs(cider_d(candidates, mult_references), ({"spice": spice.mean()}, {"spice": spice}))

    corpus, sents = mult_cands_metric(
        spider_with_given_spice, "spider", [cands[k] for k in keys], [refs[k] for k in keys]
    )
    ours = np.array(
        [
            spider_from(cider_d([cands[k][j] for k in keys], [refs[k] for k in keys])[1]["cider_d"], given_spice[j])
            for j in range(3)
        ]
    )
    np.testing.assert_allclose(ours.max(axis=0), sents["spider_max"].numpy(), rtol=1e-12)
    assert float(ours.max(axis=0).mean()) == pytest.approx(float(corpus["spider_max"]), rel=1e-12)
    tied = np.array([[0.5, 0.2], [0.5, 0.9], [0.1, 0.9]])
    assert best_candidates(tied).tolist() == [0, 1]  # ties to the first, as torch.argmax


# ----------------------------------------------------------------------------------------------- Java


@pytest.fixture(scope="module")
def resources(tmp_path_factory):
    found = mr.resolve(tmp_path_factory.mktemp("aac_cache"))
    if not found.components["java"].ok:
        pytest.skip("no Java runtime: " + "; ".join(found.components["java"].missing))
    return found


def test_ptb_tokenized_meteor_oracle_equals_aac_metrics_on_the_same_input(resources):
    import aac_metrics.utils.checks as checks
    from aac_metrics.functional.meteor import meteor
    from aac_metrics.functional.mult_cands import mult_cands_metric
    from aac_metrics.utils.tokenization import preprocess_mult_sents

    from espnet_slam_aac.scoring.backends import java_accepted

    refs, cands = candidate_set(n_clips=8, n_cands=3)
    cands["clip01"][1] = "A Dog, barking!"  # PTB lower-cases and drops the punctuation
    keys = sorted(refs)
    report = score_decodes(
        refs,
        {"1best": {k: c[0] for k, c in cands.items()}},
        resources,
        metrics=["meteor", "cider_d", "vocab"],
        candidates=cands,
        oracle_metrics=["meteor"],
    )
    assert report.missing == {}
    old_max = checks.MAX_JAVA_MAJOR_VERSION
    checks.MAX_JAVA_MAJOR_VERSION = max(old_max, resources.java.major)  # aac-metrics refuses Java > 13
    try:
        common = dict(cache_path=str(resources.cache_dir), java_path=resources.java.path)
        with java_accepted():
            mcands = preprocess_mult_sents([cands[k] for k in keys], **common)
            mrefs = preprocess_mult_sents([refs[k] for k in keys], **common)
        corpus, sents = mult_cands_metric(meteor, "meteor", mcands, mrefs, return_all_cands_scores=True, **common)
    finally:
        checks.MAX_JAVA_MAJOR_VERSION = old_max
    oracle = report.decodes["oracle_meteor"]
    np.testing.assert_allclose(oracle.sentences["meteor"], sents["meteor_max"].numpy(), rtol=1e-12)
    picked = sents["meteor_all"].argmax(dim=1).tolist()
    assert report.reach.picks["oracle_meteor"] == {k: cands[k][j] for k, j in zip(keys, picked)}
    assert set(oracle.corpus) == {"meteor", "cider_d", "vocab"}


def test_spider_max_equals_aac_metrics_spider_max_where_spice_is_installed(tmp_path):
    found = mr.resolve(link=False)
    blocking = found.blocking("spider")
    if blocking:
        pytest.skip("SPICE resources missing: " + "; ".join(", ".join(c.missing) for c in blocking))
    from aac_metrics.functional.spider_max import spider_max

    from espnet_slam_aac.scoring.backends import java_accepted

    refs, cands = candidate_set(n_clips=5, n_cands=3)
    keys = sorted(refs)
    report = score_decodes(
        refs, {}, found, metrics=["cider_d", "spice", "spider"], normalization=NO_PTB, candidates=cands
    )
    with java_accepted():
        corpus, sents = spider_max(
            [cands[k] for k in keys],
            [refs[k] for k in keys],
            cache_path=str(found.cache_dir),
            java_path=mr.write_java_wrapper(found.java, tmp_path),
        )
    assert report.reach.spider_max == pytest.approx(float(corpus["spider_max"]))
    np.testing.assert_allclose(report.reach.spider_max_sentences, sents["spider_max"].numpy(), rtol=1e-9)


def test_all_metrics_with_candidates_report_what_is_missing_and_compute_the_rest():
    refs, cands = candidate_set(n_clips=4, n_cands=2)
    report = score_decodes(
        refs,
        {"1best": {k: c[0] for k, c in cands.items()}},
        no_resources(),
        metrics=ALL_METRICS,
        normalization=NO_PTB,
        candidates=cands,
    )
    assert set(report.reach.missing) == {"spider_max", "oracle_spider_fl", "oracle_fense"}
    assert "spider is missing here" in report.reach.missing["spider_max"]
    assert list(report.decodes) == ["1best"]
    assert report.decodes["1best"].corpus["vocab"] > 0 and "meteor" in report.missing
