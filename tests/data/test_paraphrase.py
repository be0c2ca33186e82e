"""Paraphrase augmentation: duplicate rule, provenance, cache, and back-translation with tiny random Marian models."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from espnet_slam_aac.data import paraphrase as P
from espnet_slam_aac.data.check import validate_data_dir
from espnet_slam_aac.data.datadir import read_data_dir
from espnet_slam_aac.data.manifest import prepare_data_dir
from espnet_slam_aac.data.records import Utterance
from espnet_slam_aac.errors import ConfigError, DataError
from espnet_slam_aac.testing.tiny_marian import build_tiny_marian, write_config


def utt(key, text, source="/a/clip1.wav"):
    return Utterance(key, source, (text,), 16000, 1.0)


class CountingTranslator:
    """Deterministic stand-in for a translation model: appends a marker, counts what it is asked."""

    def __init__(self, name, n=1):
        self.cache_id, self.n, self.calls = name, n, []

    def translate(self, texts):
        self.calls += list(texts)
        return [[f"{t} {self.cache_id}{i}" for i in range(self.n)] for t in texts]


def test_dedup_key_ignores_case_whitespace_and_final_punctuation():
    assert P.dedup_key("  A dog   barks.") == P.dedup_key("a dog barks") == P.dedup_key("A DOG BARKS!?")
    assert P.dedup_key("a dog barks, loudly") != P.dedup_key("a dog barks loudly")


def test_augment_adds_paraphrases_as_utterances_of_the_same_clip_with_provenance():
    utts = [utt("c1_1", "a dog barks"), utt("c1_2", "a dog is barking"), utt("c2_1", "rain falls", "/a/clip2.wav")]
    table = {
        "a dog barks": ["A dog is barking.", "a hound barks", "a  canine   barks", "a puppy barks"],  # 1st dup
        "rain falls": ["", "rain is falling"],
    }
    added, provenance, report = P.augment(utts, table, max_per_caption=2, method="test")
    assert [(u.key, u.text, u.source) for u in added] == [
        ("c1_1_para1", "a hound barks", "/a/clip1.wav"),
        ("c1_1_para2", "a canine barks", "/a/clip1.wav"),  # whitespace normalized
        ("c2_1_para1", "rain is falling", "/a/clip2.wav"),
    ]
    assert provenance[0] == {
        "key": "c1_1_para1",
        "source_key": "c1_1",
        "source_text": "a dog barks",
        "text": "a hound barks",
        "method": "test",
    }
    assert (report.utterances, report.with_paraphrases, report.added, report.duplicates, report.invalid) == (
        3,
        2,
        3,
        1,
        1,
    )


def test_augment_refuses_evaluation_sets():
    evaluation = Utterance("c1", "/a/c.wav", ("ref one", "ref two"), 16000, 1.0)
    with pytest.raises(DataError, match="not evaluation sets"):
        P.augment([evaluation], {}, 2, "test")


def test_read_paraphrase_file_keys_by_dedup_key_and_names_bad_lines(tmp_path):
    good = tmp_path / "p.jsonl"
    good.write_text('{"text": "A dog barks.", "paraphrases": ["x"]}\n\n{"text": "a dog barks", "paraphrases": ["y"]}\n')
    assert P.read_paraphrase_file(good) == {"a dog barks": ["x", "y"]}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "paraphrases": ["x"]}\n{"text": "b", "paraphrases": "y"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: expected"):
        P.read_paraphrase_file(bad)


def test_back_translate_chains_hops_dedups_and_uses_the_cache(tmp_path):
    cache_path = tmp_path / "cache.jsonl"
    fwd, bwd = CountingTranslator("zh", n=2), CountingTranslator("en")
    out = P.back_translate(["a dog barks", "A dog barks."], [fwd, bwd], P.TranslationCache(cache_path))
    assert out == {
        "a dog barks": ["A dog barks. zh0 en0", "A dog barks. zh1 en0", "a dog barks zh0 en0", "a dog barks zh1 en0"]
    }
    assert len(fwd.calls) == 2 and len(bwd.calls) == 4
    # A second run (fresh cache object, same file) asks the models nothing.
    fwd2, bwd2 = CountingTranslator("zh", n=2), CountingTranslator("en")
    assert P.back_translate(["a dog barks", "A dog barks."], [fwd2, bwd2], P.TranslationCache(cache_path)) == out
    assert fwd2.calls == [] and bwd2.calls == []


def test_cache_ignores_an_interrupted_last_line_and_rejects_corruption(tmp_path):
    path = tmp_path / "cache.jsonl"
    path.write_text('{"model": "m", "text": "a", "out": ["b"]}\n{"model": "m", "te')
    cache = P.TranslationCache(path)
    assert cache.get("m", "a") == ["b"] and cache.get("m", "x") is None
    path.write_text('garbage\n{"model": "m", "text": "a", "out": ["b"]}\n')
    with pytest.raises(DataError, match="cache.jsonl:1: not a cache entry"):
        P.TranslationCache(path)


def test_config_rejects_unknown_keys_and_impossible_beams():
    with pytest.raises(ConfigError, match=r"backtranslation: unknown key\(s\)"):
        P.BackTranslationConfig.from_dict({"beams": 3})
    with pytest.raises(ConfigError, match="num_return_sequences must be 1..num_beams"):
        P.BackTranslationConfig.from_dict({"chain": [{"model": "m", "num_beams": 2, "num_return_sequences": 3}]})
    conf = P.BackTranslationConfig.from_dict({"chain": [{"model": "m", "revision": "abc"}], "seed": 3})
    assert conf.chain[0].cache_id().startswith("m@abc|beams=4") and conf.seed == 3


# ------------------------------------------------------------------ tiny random Marian models, end to end


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory, synth_manifest) -> Path:
    return prepare_data_dir(synth_manifest, tmp_path_factory.mktemp("data") / "train").out_dir


@pytest.fixture(scope="module")
def marian_pair(tmp_path_factory, synth_manifest):
    texts = [json.loads(line)["target"] for line in synth_manifest.read_text().splitlines()]
    root = tmp_path_factory.mktemp("marian")
    return build_tiny_marian(root / "fwd", texts, 1), build_tiny_marian(root / "bwd", texts, 2)


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "espnet_slam_aac.bin.paraphrase", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def test_tiny_marian_back_translation_is_deterministic(tmp_path, marian_pair):
    captions = ["a low tone beeps twice", "soft static hisses then fast clicks", "a rising sweep"]
    conf = P.BackTranslationConfig(
        chain=[
            P.Hop(str(marian_pair[0]), num_beams=3, num_return_sequences=2, max_new_tokens=12),
            P.Hop(str(marian_pair[1]), num_beams=2, max_new_tokens=12),
        ],
        batch_size=2,
        device="cpu",
    )
    runs = [P.back_translate(captions, P.load_chain(conf), P.TranslationCache(None), conf.batch_size) for _ in range(2)]
    assert runs[0] == runs[1]
    assert set(runs[0]) == {P.dedup_key(c) for c in captions}
    assert all(isinstance(t, str) for texts in runs[0].values() for t in texts)


def test_cli_back_translation_writes_a_valid_data_dir_and_reruns_from_the_cache(tmp_path, train_dir, marian_pair):
    models = tmp_path / "models"
    shutil.copytree(marian_pair[0], models / "fwd")
    shutil.copytree(marian_pair[1], models / "bwd")
    config = write_config(tmp_path / "paraphrase.yaml", models / "fwd", models / "bwd")
    cache = tmp_path / "cache.jsonl"
    first = run_cli(train_dir, tmp_path / "out1", "--config", config, "--cache", cache)
    assert first.returncode == 0, first.stderr
    validate_data_dir(tmp_path / "out1")
    original = {u.key: u for u in read_data_dir(train_dir)}
    out = {u.key: u for u in read_data_dir(tmp_path / "out1")}
    provenance = [json.loads(line) for line in (tmp_path / "out1" / P.PROVENANCE_FILE).read_text().splitlines()]
    assert set(out) == set(original) | {p["key"] for p in provenance}
    for p in provenance:
        assert out[p["key"]].source == original[p["source_key"]].source
        assert p["source_text"] == original[p["source_key"]].text and p["method"].startswith("backtranslation:")
    # With the cache complete, a rerun needs no model at all, and gives the same data dir.
    shutil.rmtree(models)
    again = run_cli(train_dir, tmp_path / "out2", "--config", config, "--cache", cache)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "out2" / "text").read_text() == (tmp_path / "out1" / "text").read_text()


def test_cli_paraphrase_file_mode_and_its_errors(tmp_path, train_dir):
    caption = read_data_dir(train_dir)[0].text
    para = tmp_path / "p.jsonl"
    para.write_text(json.dumps({"text": caption, "paraphrases": ["a brand new wording", caption.upper()]}) + "\n")
    done = run_cli(train_dir, tmp_path / "out", "--paraphrases", para)
    assert done.returncode == 0, done.stderr
    added = [json.loads(line) for line in (tmp_path / "out" / P.PROVENANCE_FILE).read_text().splitlines()]
    assert {a["text"] for a in added} == {"a brand new wording"}
    assert "duplicates: " in done.stderr
    unrelated = tmp_path / "other.jsonl"
    unrelated.write_text(json.dumps({"text": "nothing like it", "paraphrases": ["x"]}) + "\n")
    failed = run_cli(train_dir, tmp_path / "out_bad", "--paraphrases", unrelated)
    assert failed.returncode == 1 and "no caption of" in failed.stderr
    assert not (tmp_path / "out_bad").exists()
    missing = run_cli(train_dir, tmp_path / "out_bad", "--config", tmp_path / "nope.yaml")
    assert missing.returncode == 1 and "nope.yaml" in missing.stderr
