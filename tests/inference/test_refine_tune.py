"""CLAP-Refine's LM weight tuned on a set: the picks of each weight agree with clap-refine run at that
weight, the best weight by the metric wins, and the curve is written (yaml, tsv, png). Tiny random CLAP."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import yaml

from espnet_slam_aac.bin import refine_tune
from espnet_slam_aac.clap.model import load_clap
from espnet_slam_aac.clap.refine import RefineConfig, read_candidates, refine
from espnet_slam_aac.data.datadir import read_wav_scp
from espnet_slam_aac.errors import MetricResourceError
from espnet_slam_aac.inference.refine_tune import choose, picks_at, tune_lm_weight
from espnet_slam_aac.scoring import resources as mr
from espnet_slam_aac.scoring.metrics import TextNormalization, score_decodes
from espnet_slam_aac.testing import synth

WEIGHTS = [0.0, 0.05, 0.2, 1.0, 5.0]
NO_PTB = TextNormalization(ptb_tokenize=False)


def no_java() -> mr.MetricResources:
    return mr.MetricResources(
        Path("/nonexistent"),
        None,
        {name: mr.Component(name, missing=["absent"], fetch=f"fetch {name}") for name in ("java",) + mr.FETCHABLE},
    )


@pytest.fixture(scope="module")
def tuning_set(tmp_path_factory):
    """Six synthesized clips with references (text_spk1..3) and 4 candidates each: the clip's own captions
    and a neighbour's, with log-probabilities that favour different candidates than the random CLAP."""
    root = tmp_path_factory.mktemp("tune")
    rng = np.random.default_rng(7)
    events = [synth.random_events(rng) for _ in range(6)]
    data = root / "data"
    data.mkdir()
    wav, refs, lines = [], {1: [], 2: [], 3: []}, []
    for i, ev in enumerate(events):
        key = f"clip{i}"
        wave, _ = synth.synthesize_clip(rng, 16000, 2.0, 1)
        soundfile.write(root / f"{key}.wav", wave, 16000, subtype="PCM_16")
        wav.append(f"{key} {root / f'{key}.wav'}\n")
        for n, caption in enumerate(synth.captions_for(ev, 3), 1):
            refs[n].append(f"{key} {caption}\n")
        own, other = synth.captions_for(ev, 2), synth.captions_for(events[(i + 1) % 6], 2)
        texts = [other[0], own[0], other[1], own[1]]
        logprobs = [-1.0, -2.0 - i % 2, -9.0, -4.0]
        cands = [
            {"text": t, "beam_size": b, "logprob": lp, "length": 4} for b, t, lp in zip((2, 3, 4, 5), texts, logprobs)
        ]
        lines.append(json.dumps({"key": key, "candidates": cands}) + "\n")
    (data / "wav.scp").write_text("".join(wav))
    for n, rows in refs.items():
        (data / f"text_spk{n}").write_text("".join(rows))
    (root / "candidates.jsonl").write_text("".join(lines))
    return root


@pytest.fixture(scope="module")
def refined(tuning_set, tiny_claps):
    """clap-refine's own records at every weight of the grid."""
    clap = load_clap(str(tiny_claps["ase"]))
    clips = read_candidates(tuning_set / "candidates.jsonl")
    wav = dict(read_wav_scp(tuning_set / "data" / "wav.scp"))
    return {w: refine(clap, clips, wav, RefineConfig(clap="tiny", lm_weight=w)) for w in WEIGHTS}


def test_picks_from_one_embedding_pass_equal_clap_refine_at_each_weight(refined):
    once = refined[0.0]
    for w, at_w in refined.items():
        assert picks_at(once, w) == {r["key"]: r["best"] for r in at_w}, w
    assert len({tuple(picks_at(once, w).values()) for w in WEIGHTS}) > 1, "the set should make the weight matter"


def test_tuning_picks_the_best_weight_by_the_metric_and_writes_the_curve(tuning_set, tiny_claps, refined, capsys):
    out = tuning_set / "tuned"
    refine_tune.main(
        ["--candidates", str(tuning_set / "candidates.jsonl"), "--data_dir", str(tuning_set / "data")]
        + ["--ref_dir", str(tuning_set / "data"), "--out_dir", str(out), "--clap", str(tiny_claps["ase"])]
        + ["--metric", "cider_d", "--no_ptb_tokenize", "--cache_dir", str(tuning_set / "cache")]
        + ["--lm_weights", *map(str, WEIGHTS)]
    )
    chosen = yaml.safe_load((out / "lm_weight.yaml").read_text())
    assert capsys.readouterr().out.strip() == f"{chosen['lm_weight']:g}"

    # the same choice from clap-refine's own picks at every weight, scored independently
    refs = {}
    for n in (1, 2, 3):
        for line in (tuning_set / "data" / f"text_spk{n}").read_text().splitlines():
            key, text = line.split(maxsplit=1)
            refs.setdefault(key, []).append(text)
    texts = {w: {r["key"]: r["text"] for r in records} for w, records in refined.items()}
    report = score_decodes(
        refs, {str(w): t for w, t in texts.items()}, no_java(), metrics=["cider_d"], normalization=NO_PTB
    )
    scores = [report.decodes[str(w)].corpus["cider_d"] for w in WEIGHTS]
    assert [row["cider_d"] for row in chosen["curve"]] == pytest.approx(scores, rel=1e-12)
    assert chosen["lm_weight"] == WEIGHTS[int(np.argmax(scores))] and chosen["score"] == pytest.approx(max(scores))
    assert chosen["metric"] == "cider_d" and chosen["curve"][0]["clips_changed"] == 0
    tsv = (out / "curve.tsv").read_text().splitlines()
    assert tsv[0] == "lm_weight\tcider_d\tclips_changed" and len(tsv) == 1 + len(WEIGHTS)
    assert (out / "curve.png").stat().st_size > 10000


def test_ties_go_to_the_weight_listed_first_and_fer_is_minimized():
    assert choose("cider_d", [0.0, 0.1, 0.2], [0.5, 0.7, 0.7], [0, 1, 2]).lm_weight == 0.1
    assert choose("fer", [0.0, 0.1], [0.2, 0.1], [0, 1]).lm_weight == 0.1


def test_a_metric_missing_here_stops_the_tuning_with_the_fetch_command(tuning_set, tiny_claps):
    with pytest.raises(MetricResourceError, match=r"cannot tune the LM weight on meteor: .*fetch with `fetch java"):
        tune_lm_weight(
            RefineConfig(clap=str(tiny_claps["ase"])),
            tuning_set / "candidates.jsonl",
            tuning_set / "data",
            tuning_set / "data",
            tuning_set / "never",
            no_java(),
            metric="meteor",
            weights=[0.0, 1.0],
            normalization=NO_PTB,
        )
    assert not (tuning_set / "never").exists()
