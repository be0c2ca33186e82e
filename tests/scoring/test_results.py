"""RESULTS.md, score files and the plot, from reports made without Java (no PTB, Python metrics only)."""

import json
from pathlib import Path

import pytest

from espnet_slam_aac.errors import SlamAACError
from espnet_slam_aac.scoring import resources as mr
from espnet_slam_aac.scoring import results
from espnet_slam_aac.scoring.metrics import ALL_METRICS, TextNormalization, score_decodes

REFS = {
    "a": ["a man speaks", "someone speaks", "a man is speaking while a bird chirps"],
    "b": ["rain is falling hard on a surface", "heavy rain falls"],
    "c": ["a dog barks twice"],
}
DECODES = {
    f"beam{n}": {"a": "a man is speaking", "b": "rain falls" + " hard" * (n % 2), "c": "a dog barks"}
    for n in range(2, 9)
}
DECODES["1best"] = DECODES["beam2"]
DECODES["clap_refine"] = {"a": "a man speaks", "b": "heavy rain falls", "c": ""}


@pytest.fixture(scope="module")
def report():
    no_java = mr.MetricResources(
        Path("/nonexistent"),
        None,
        {
            name: mr.Component(
                name, missing=["absent"], fetch=f"espnet-slam-aac fetch-metric-resources --metrics {name}"
            )
            for name in ("java",) + mr.FETCHABLE
        },
    )
    return score_decodes(REFS, DECODES, no_java, metrics=ALL_METRICS, normalization=TextNormalization(False))


@pytest.fixture(scope="module")
def summary(report):
    settings = {"decode (conf/decode.yaml)": {"beam_sizes": "[2, 3, 4, 5, 6, 7, 8]"}, "note": "toy"}
    return results.summarize(report, "test_clotho", {"1best": "exp/d/text"}, "data/test_clotho", "17.0.15", settings)


def test_results_md_has_environment_settings_table_x100_and_missing_metrics_with_fetch_command(summary):
    images = {"test_clotho": "images/scores_test_clotho.png"}
    md = results.render_results_md([summary], title="exp/aac_toy", images=images)
    lines = md.splitlines()
    assert lines[1] == "# RESULTS" and "## Environments" in lines
    assert "- java version: `17.0.15`" in lines and "- aac-metrics version: `0.5.4`" in lines
    assert "## exp/aac_toy" in lines and "- note: `toy`" in lines and "  - beam_sizes: `[2, 3, 4, 5, 6, 7, 8]`" in lines
    assert "- clips: 3; references per clip: 3 (1 clips), 2 (1 clips), 1 (1 clips)" in lines
    header = "|decode|BLEU-1|BLEU-2|BLEU-3|BLEU-4|METEOR|ROUGE-L|CIDEr-D|SPICE|SPIDEr|SPIDEr-FL|FENSE|SBERT-sim|FER|"
    header += "vocab|"
    assert header in lines
    rows = [line for line in lines if line.startswith("|beam") or line.startswith("|1best") or line.startswith("|clap")]
    assert [r.split("|")[1] for r in rows] == [f"beam{n}" for n in range(2, 9)] + ["1best", "clap_refine"]
    bleu_1 = 100 * summary["decodes"]["1best"]["corpus"]["bleu_1"]
    assert rows[7].split("|")[2] == f"{bleu_1:.2f}"
    assert rows[7].split("|")[6] == "missing"  # METEOR: shown as missing, never as 0
    assert "**Missing metrics** (not computed, not zero):" in lines
    meteor_line = next(line for line in lines if line.startswith("- METEOR"))
    assert "Fetch with `espnet-slam-aac fetch-metric-resources --metrics java" in meteor_line
    assert "![scores on test_clotho](images/scores_test_clotho.png)" in lines


def test_write_scores_writes_one_line_per_decode_and_clip_with_nulls_for_missing(tmp_path, report, summary):
    results.write_scores(tmp_path, report, DECODES, summary)
    lines = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert len(lines) == len(DECODES) * len(REFS)
    last = lines[-1]
    assert (last["decode"], last["key"], last["hyp"]) == ("clap_refine", "c", "")
    assert last["scores"]["meteor"] is None and isinstance(last["scores"]["cider_d"], float)
    assert results.find_summaries([tmp_path]) == [json.loads((tmp_path / "scores.json").read_text())]


def test_write_results_gathers_sets_and_saves_a_plot_per_set(tmp_path, summary):
    other = dict(summary, set="test/audiocaps", n_clips=3)
    written = results.write_results(tmp_path / "RESULTS.md", [summary, other], title="exp/x")
    assert [p.name for p in written] == ["RESULTS.md", "scores_test_clotho.png", "scores_test_audiocaps.png"]
    assert all(p.stat().st_size > 10000 for p in written[1:])
    assert (tmp_path / "images" / "scores_test_clotho.png").is_file()
    md = (tmp_path / "RESULTS.md").read_text()
    assert "### test_clotho" in md and "### test/audiocaps" in md and "(images/scores_test_audiocaps.png)" in md


def test_find_summaries_rejects_other_json(tmp_path):
    (tmp_path / "scores.json").write_text('{"other": 1}')
    with pytest.raises(SlamAACError, match="not a scores.json written by espnet-slam-aac score"):
        results.find_summaries([tmp_path / "scores.json"])
    with pytest.raises(SlamAACError, match="no scores.json of espnet-slam-aac score"):
        results.find_summaries([tmp_path])


def test_summarize_config_keeps_model_keys_and_flattens(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(
        "encoder: eat\nencoder_conf:\n  checkpoint: eat.pt\n  freeze: true\noptim: adamw\n"
        "decoder_conf:\n  lora: {r: 8, alpha: 32}\n  target_modules: [q_proj, v_proj]\n"
    )
    assert results.summarize_config(config, results.MODEL_KEYS) == {
        "encoder": "eat",
        "encoder_conf.checkpoint": "eat.pt",
        "encoder_conf.freeze": True,
        "decoder_conf.lora.r": 8,
        "decoder_conf.lora.alpha": 32,
        "decoder_conf.target_modules": ["q_proj", "v_proj"],
    }
    assert results.summarize_config(config)["optim"] == "adamw"


def test_a_sets_figure_shows_every_decode_and_the_untrained_baseline_in_one_order(tmp_path, report, summary):
    from espnet_slam_aac.scoring.plots import set_figure_inputs

    baseline = dict(summary, model="untrained")
    baseline["decodes"] = {"1best": {"hyp": "", "corpus": {"bleu_1": 0.05, "cider_d": 0.01, "vocab": 3.0}}}
    written = results.write_results(tmp_path / "RESULTS.md", [summary, baseline], title="exp/x")
    assert [p.name for p in written] == ["RESULTS.md", "scores_test_clotho.png"]  # one figure for the set
    assert written[1].stat().st_size > 10000
    md = (tmp_path / "RESULTS.md").read_text()
    assert "### test_clotho\n" in md and "### test_clotho (untrained model)\n" in md
    assert md.count("![scores on test_clotho](images/scores_test_clotho.png)") == 1

    inputs = set_figure_inputs(summary, baseline)
    assert list(inputs["decodes"]) == list(summary["decodes"]) + ["untrained 1best"]
    refs = summary["reference_vocab"]["one_per_clip"]
    assert inputs["marks"]["vocab"] == (refs, f"refs, 1 per clip: {refs:.0f}")
    assert "meteor" not in inputs["metrics"] and "meteor" in inputs["missing"]


def test_results_md_compares_the_picks_with_what_the_candidates_could_reach():
    refs = {"a": ["a dog barks", "a dog is barking"], "b": ["rain falls", "heavy rain"], "c": ["a bell rings"]}
    cands = {"a": ["a cat", "a dog barks"], "b": ["rain falls", "rain"], "c": ["a bell", "a bell rings"]}
    decodes = {"1best": {k: c[0] for k, c in cands.items()}, "clap_refine": {k: c[1] for k, c in cands.items()}}
    no_java = mr.MetricResources(
        Path("/nonexistent"), None, {name: mr.Component(name, missing=["absent"]) for name in ("java",) + mr.FETCHABLE}
    )
    report = score_decodes(
        refs,
        decodes,
        no_java,
        metrics=["cider_d", "spider", "vocab"],
        normalization=TextNormalization(False),
        candidates=cands,
        oracle_metrics=["cider_d", "spider_fl"],
    )
    summary = results.summarize(report, "test", {}, "data/test", candidates_path="decode/candidates.jsonl")
    md = results.render_results_md([summary])
    reach = md[md.index("#### What the candidates could reach (candidates per clip: 2 (3 clips))") :].splitlines()
    assert reach[2] == "|pick|CIDEr-D|vocab|"
    oracle = 100 * report.decodes["oracle_cider_d"].corpus["cider_d"]
    assert (
        reach[6] == f"|oracle_cider_d (best candidate by CIDEr-D)|{oracle:.2f}|7|"
    )  # a dog barks, rain falls, a bell rings
    assert "- spider_max: not computed (spider is missing here (see the missing metrics))" in reach
    assert summary["reach"]["oracles"] == {"oracle_cider_d": "cider_d"} and summary["reach"]["spider_max"] is None
