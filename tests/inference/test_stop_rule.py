"""stop_rule: ``slam_aac`` decodes as transformers 4.35.2 did for SLAM-AAC, ``transformers`` as 5.x generate does.

The expected ids of 4.35.2 come from ``tests/fixtures/beam_4352.json``, made once under transformers 4.35.2 by
``tests/fixtures/make_beam_4352_fixture.py`` on tiny numpy-drawn Llamas that this test rebuilds bit-exact.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from espnet_slam_aac.inference.decoding import DecodingOptions, decode
from espnet_slam_aac.testing.numpy_llama import (
    BOS_ID,
    EOS_ID,
    build_inputs,
    build_weights,
    load_llama,
    weights_sha256,
)

FIXTURE = json.loads((Path(__file__).resolve().parents[1] / "fixtures/beam_4352.json").read_text(encoding="utf-8"))
GROUPS = {g["id"]: g for g in FIXTURE["groups"]}


@pytest.fixture(scope="module")
def models():
    out = {}
    for name, m in FIXTURE["models"].items():
        assert weights_sha256(build_weights(m)) == m["weights_sha256"], f"{name}: the rebuilt weights differ"
        out[name] = load_llama(m)
    return out


def inputs(group):
    m = FIXTURE["models"][group["model"]]
    embeds, mask = build_inputs(FIXTURE["inputs"][group["inputs"]], m["hidden_size"])
    return torch.from_numpy(embeds), torch.from_numpy(mask)


def options_of(group, **changes) -> DecodingOptions:
    s = group["settings"]
    return DecodingOptions(
        beam_sizes=tuple(group["beams"]),
        nbest=s["nbest"],
        max_new_tokens=s["max_new_tokens"],
        min_new_tokens=s["min_new_tokens"],
        length_penalty=s["length_penalty"],
        repetition_penalty=s["repetition_penalty"],
        early_stopping=s["early_stopping"],
        **changes,
    )


def ours(models, group, **changes):
    """Our decode of a fixture group -> {beam: per clip [(tokens, ended with EOS, score)]}."""
    embeds, mask = inputs(group)
    hyps = decode(models[group["model"]], embeds, mask, options_of(group, **changes), group["settings"]["eos_token_id"])
    out = {str(b): [] for b in group["beams"]}
    for clip in hyps:
        for b in group["beams"]:
            out[str(b)].append([(h.tokens, h.length == len(h.tokens) + 1, h.score) for h in clip if h.beam_size == b])
    return out


def expected(group):
    return {b: [[(h["tokens"], h["eos"], h["score"]) for h in clip] for clip in r] for b, r in group["results"].items()}


def tokens(result):
    return {b: [[(t, e) for t, e, _ in clip] for clip in r] for b, r in result.items()}


def test_rebuilt_models_give_the_prefill_logits_of_4352(models):
    for key, rows in FIXTURE["forward_probe"].items():
        model, inp = key.split("/")
        embeds, mask = inputs({"model": model, "inputs": inp})
        with torch.no_grad():
            logits = models[model](inputs_embeds=embeds, attention_mask=mask).logits[:, -1, :6]
        np.testing.assert_allclose(logits.numpy(), np.array(rows), atol=2e-5, err_msg=key)


@pytest.mark.parametrize("gid", sorted(GROUPS))
def test_slam_aac_rule_gives_the_ids_and_scores_of_transformers_4352(models, gid):
    group = GROUPS[gid]
    mine, theirs = ours(models, group, stop_rule="slam_aac"), expected(group)
    assert tokens(mine) == tokens(theirs)
    for b in group["beams"]:
        if b > 1:  # greedy search has no score
            got = [s for clip in mine[str(b)] for _, _, s in clip]
            want = [s for clip in theirs[str(b)] for _, _, s in clip]
            assert got == pytest.approx(want, rel=1e-5, abs=1e-6), f"beam {b}"


def test_the_two_rules_disagree_where_4352_stops_later(models):
    """The fixture pins what differs: today's rule decodes a fifth of its groups otherwise (max-length, length
    penalty, early_stopping True and "never", the seeded BOS under a repetition penalty, greedy search included,
    n-best, several EOS ids), and where caption lengths differ, 4.35.2's are the longer."""
    differ, longer, shorter = [], 0, 0
    for gid, group in GROUPS.items():
        mine, theirs = tokens(ours(models, group, stop_rule="transformers")), tokens(expected(group))
        if mine != theirs:
            differ.append(gid)
        for b in theirs:
            for a, c in zip(mine[b], theirs[b]):
                longer += len(c[0][0]) > len(a[0][0])
                shorter += len(c[0][0]) < len(a[0][0])
    assert len(differ) >= 10, differ
    for feature in ("early_stoppingTrue", "early_stoppingnever", "b1-3_repetition", "nbest4", "eos_token_id"):
        assert any(feature in gid for gid in differ), feature
    assert longer > shorter


@pytest.mark.parametrize(
    "gid",
    [
        "peaky_padded3_b1-2-3-4-5-6-7-8_max_new_tokens40",
        "long_padded3_b3-4-6_length_penalty0.5_early_stoppingnever_max_new_tokens25",
    ],
)
def test_sequential_schedule_honours_the_slam_aac_rule(models, gid):
    group = GROUPS[gid]
    assert tokens(ours(models, group, stop_rule="slam_aac", schedule="sequential")) == tokens(expected(group))


@pytest.mark.parametrize(
    "gid",
    [
        "long_padded3_b3-4-6_length_penalty0.5_max_new_tokens25",
        "peaky_padded3_b1-2-4-7_repetition_penalty1.3_max_new_tokens30",
        "long_padded3_b5_eos_token_id2-5_max_new_tokens30",
    ],
)
def test_transformers_rule_still_equals_generate_where_the_rules_disagree(models, gid):
    """On the fixture's models, ``stop_rule="transformers"`` keeps giving the installed (5.x) generate's ids."""
    group = GROUPS[gid]
    s, (embeds, mask) = group["settings"], inputs(group)
    llm, mine = models[group["model"]], tokens(ours(models, group, stop_rule="transformers"))
    assert mine != tokens(expected(group))
    eos = set(s["eos_token_id"]) if isinstance(s["eos_token_id"], list) else {s["eos_token_id"]}
    for b in group["beams"]:
        for clip in range(len(embeds)):
            keep = mask[clip].bool()
            out = llm.generate(
                inputs_embeds=embeds[clip : clip + 1, keep],
                attention_mask=mask[clip : clip + 1, keep],
                num_beams=b,
                max_new_tokens=s["max_new_tokens"],
                min_length=1,
                do_sample=False,
                length_penalty=s["length_penalty"],
                repetition_penalty=s["repetition_penalty"],
                bos_token_id=BOS_ID,
                eos_token_id=s["eos_token_id"],
                pad_token_id=EOS_ID,
            )
            row = out[0].tolist()
            end = next((i for i, t in enumerate(row) if t in eos), None)
            want = [(row if end is None else row[:end], end is not None)]
            assert mine[str(b)][clip] == want, f"beam {b} clip {clip}"
