"""`espnet-slam-aac score` and `fetch-metric-resources` from the command line (one Java run: the README example)."""

import json
from pathlib import Path

import pytest

from espnet_slam_aac import cli
from espnet_slam_aac.bin import aac_score, fetch_metric_resources
from espnet_slam_aac.data.datadir import write_data_dir
from espnet_slam_aac.data.records import Utterance
from espnet_slam_aac.errors import SlamAACError
from espnet_slam_aac.scoring import resources as mr

# aac-metrics' README example; clip2 has one reference where clip1 has three
REFS = {
    "clip1": ("a man speaks.", "someone speaks.", "a man is speaking while a bird is chirping in the background"),
    "clip2": ("rain is falling hard on a surface",),
}
# cross-checked values with PTB tokenization (metrics_clap.md 8.3)
README_GOLDEN = {
    "bleu_1": 0.427848,
    "bleu_2": 0.405892,
    "bleu_3": 0.438965,
    "bleu_4": 0.456500,
    "meteor": 0.263381,
    "rouge_l": 0.487069,
    "cider_d": 0.961355,
}


def make_set(root: Path) -> Path:
    utts = [Utterance(key, f"/audio/{key}.wav", refs, 16000, 1.0) for key, refs in REFS.items()]
    data = write_data_dir(utts, root / "data" / "test", references=True)
    decode = root / "decode" / "test"
    for sub, lines in {
        "": "clip1 a man is speaking\nclip2 rain falls\n",
        "beam2": "clip1 a man speaks\nclip2 rain falls hard\n",
        "clap_refine": "clip1 A man is speaking.\nclip2\n",
    }.items():
        (decode / sub).mkdir(parents=True, exist_ok=True)
        (decode / sub / "text").write_text(lines)
    return data


def test_score_readme_example_end_to_end(tmp_path, capsys):
    data = make_set(tmp_path)
    cache = tmp_path / "cache"
    found = mr.resolve(cache)  # links the pycocoevalcap jars into the fresh cache
    if not found.components["java"].ok:
        pytest.skip("no Java runtime")
    decode = tmp_path / "decode" / "test"
    aac_score.main(
        [
            "--ref_dir",
            str(data),
            "--decode_dir",
            str(decode),
            "--cache_dir",
            str(cache),
            "--title",
            "exp/toy",
            "--info",
            "model=toy",
        ]
    )

    out = decode / "score"
    summary = json.loads((out / "scores.json").read_text())
    assert list(summary["decodes"]) == ["1best", "beam2", "clap_refine"]
    assert summary["references_per_clip"] == {"3": 1, "1": 1}
    for metric, value in README_GOLDEN.items():
        assert summary["decodes"]["1best"]["corpus"][metric] == pytest.approx(value, abs=1e-6), metric
    # PTB lower-cases and drops the period: the CLAP-refined "A man is speaking." scores like "a man is speaking"
    lines = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    by = {(line["decode"], line["key"]): line for line in lines}
    assert by[("clap_refine", "clip1")]["scores"]["meteor"] == by[("1best", "clip1")]["scores"]["meteor"]
    assert by[("1best", "clip1")]["scores"]["cider_d"] == pytest.approx(1.364055, abs=1e-6)
    assert by[("1best", "clip2")]["scores"]["cider_d"] == pytest.approx(0.558655, abs=1e-6)
    assert by[("clap_refine", "clip2")]["hyp"] == ""

    md = (out / "RESULTS.md").read_text()
    assert "## exp/toy" in md and "|1best|42.78|40.59|43.90|45.65|26.34|48.71|96.14|" in md
    for metric in ("spice", "fense"):  # where their resources are missing here, they say so and how to fetch
        if metric in summary["missing"]:
            assert f"espnet-slam-aac fetch-metric-resources --metrics {metric} --cache_dir {cache}" in md
    assert (out / "images" / "scores_test.png").stat().st_size > 10000
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split()[:2] == ["decode", "BLEU-1"] and printed[1].split()[:2] == ["1best", "42.78"]

    # gather the set's scores into an experiment-level RESULTS.md
    aac_score.main(["--collect", str(tmp_path / "decode"), "--results_md", str(tmp_path / "RESULTS.md")])
    assert "### test" in (tmp_path / "RESULTS.md").read_text()
    assert (tmp_path / "images" / "scores_test.png").is_file()


def test_missing_hypotheses_stop_before_any_scoring(tmp_path, capsys):
    data = make_set(tmp_path)
    (tmp_path / "partial").write_text("clip1 a man\nclip9 rain\n")
    with pytest.raises(SystemExit) as error:
        aac_score.main(
            ["--ref_dir", str(data), "--hyp", f"partial={tmp_path / 'partial'}", "--cache_dir", "/nonexistent"]
        )
    assert error.value.code == 1
    message = capsys.readouterr().err
    assert message.startswith("error: ")
    assert "decode 'partial': 1 hypotheses without references (clip9)" in message
    assert "1 reference clips without a hypothesis (clip2)" in message
    assert not Path("/nonexistent").exists()


def test_references_alone_are_scored_with_candidates_oracles_and_a_figure(tmp_path, capsys):
    """--ref_dir holding only text_spk1..N (no wav.scp, utt2num_samples or utt2dur); --decode_dir's
    candidates.jsonl gives the oracle rows; no Java needed without PTB tokenization."""
    refs = tmp_path / "refs"
    refs.mkdir()
    (refs / "text_spk1").write_text("clip1 a man speaks\nclip2 rain is falling hard on a surface\n")
    (refs / "text_spk2").write_text("clip1 someone speaks\n")
    decode = tmp_path / "decode"
    (decode / "beam2").mkdir(parents=True)
    (decode / "text").write_text("clip1 a man is speaking\nclip2 rain falls\n")
    (decode / "beam2" / "text").write_text("clip1 someone speaks\nclip2 heavy rain falls hard\n")
    cands = {"clip1": ["a man is speaking", "someone speaks"], "clip2": ["rain falls", "heavy rain falls hard"]}
    (decode / "candidates.jsonl").write_text(
        "".join(json.dumps({"key": k, "candidates": [{"text": t} for t in c]}) + "\n" for k, c in cands.items())
    )
    aac_score.main(
        ["--ref_dir", str(refs), "--decode_dir", str(decode), "--no_ptb_tokenize", "--cache_dir", str(tmp_path / "c")]
        + ["--metrics", "bleu_1", "cider_d", "spider", "vocab", "--oracle_metrics", "cider_d", "spider_fl"]
    )
    summary = json.loads((decode / "score" / "scores.json").read_text())
    assert list(summary["decodes"]) == ["1best", "beam2", "oracle_cider_d"]
    assert summary["reach"]["oracles"] == {"oracle_cider_d": "cider_d"}
    assert "spider_fl is not among the metrics scored" in summary["reach"]["missing"]["oracle_spider_fl"]
    lines = [json.loads(line) for line in (decode / "score" / "scores.jsonl").read_text().splitlines()]
    oracle = {line["key"]: line["hyp"] for line in lines if line["decode"] == "oracle_cider_d"}
    assert oracle == {"clip1": "someone speaks", "clip2": "heavy rain falls hard"}
    md = (decode / "score" / "RESULTS.md").read_text()
    assert "#### What the candidates could reach (candidates per clip: 2 (2 clips))" in md
    assert "|oracle_cider_d (best candidate by CIDEr-D)|" in md
    assert (decode / "score" / "images" / "scores_refs.png").stat().st_size > 10000
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split() == ["decode", "BLEU-1", "CIDEr-D", "vocab"] and printed[3].startswith("oracle_cider_d")


def test_hypothesis_names_and_decode_dir_discovery(tmp_path):
    for sub in ("", "beam10", "beam2", "beam3", "clap_refine", "logdir"):
        (tmp_path / sub).mkdir(exist_ok=True)
        if sub != "logdir":
            (tmp_path / sub / "text").write_text("k a\n")
    found = aac_score.hypothesis_files([f"refined={tmp_path / 'x' / 'text'}", str(tmp_path / "y" / "text")], tmp_path)
    assert list(found) == ["1best", "beam2", "beam3", "beam10", "clap_refine", "refined", "y"]
    assert found["beam10"] == tmp_path / "beam10" / "text"
    with pytest.raises(SlamAACError, match="two decodes are named 'beam2'"):
        aac_score.hypothesis_files([str(tmp_path / "beam2" / "text")], tmp_path)


def test_cli_lists_the_score_commands(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    assert "score " in text and "fetch-metric-resources" in text
    with pytest.raises(SystemExit):
        cli.main(["score", "--help"])
    assert "--decode_dir" in capsys.readouterr().out


def test_fetch_metric_resources_dry_run_plans_and_changes_nothing(tmp_path, capsys):
    if mr.pycocoevalcap_dir() is None:
        pytest.skip("pycocoevalcap is not installed")
    cache = tmp_path / "cache"
    fetch_metric_resources.main(["--dry_run", "--cache_dir", str(cache), "--metrics", "meteor", "spice"])  # exit 0
    out = capsys.readouterr().out
    assert f"would link {cache / mr.METEOR_JAR} -> " in out
    assert "  meteor    ok" in out and "  ptb       ok" in out
    if "spice     MISSING" in out:
        assert "stanford-corenlp-3.6.0-models.jar" in out
        assert "would download for spice: https://panderson.me/images/SPICE-1.0.zip" in out
    assert "sbert" not in out  # not needed by METEOR or SPICE
    assert not cache.exists()


def test_fetch_metric_resources_links_offline_and_downloads_nothing_when_complete(tmp_path, capsys):
    if mr.pycocoevalcap_dir() is None:
        pytest.skip("pycocoevalcap is not installed")
    cache = tmp_path / "cache"
    code = 0
    try:
        fetch_metric_resources.main(["--cache_dir", str(cache), "--metrics", "meteor", "bleu_4"])
    except SystemExit as done:
        code = done.code
    out = capsys.readouterr().out
    if "  java      MISSING" in out:
        assert code == 1 and "still missing: java" in out
    else:
        assert code == 0 and "would download" not in out and "status after downloading" not in out
    assert (cache / mr.METEOR_JAR).is_symlink() and (cache / mr.PTB_JAR).is_symlink()
    assert fetch_metric_resources.components_for(["spider_fl"]) == ["java", "ptb", "spice", "echecker"]
