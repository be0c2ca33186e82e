"""Scoring: golden values, batching equal to per-decode scoring, resources found offline, clear errors.

Java-based tests (PTB tokenizer, METEOR) take seconds each; there are few of them. SPICE and FENSE with
the real models run where their resources are present and are skipped with the reason otherwise.
"""

import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from espnet_slam_aac.errors import DataError, MetricResourceError
from espnet_slam_aac.scoring import resources as mr
from espnet_slam_aac.scoring.metrics import (
    ALL_METRICS,
    FenseModels,
    TextNormalization,
    check_keys,
    clean_text,
    fluency_penalized,
    read_hypotheses,
    read_references,
    score_decodes,
    spider_from,
)
from espnet_slam_aac.testing import synth

# aac-metrics' README example (its tests/test_doc_examples.py): candidates "a man is speaking", "rain falls"
README_REFS = {
    "a": ["a man speaks.", "someone speaks.", "a man is speaking while a bird is chirping in the background"],
    "b": ["rain is falling hard on a surface"],
}
PYTHON_METRICS = ["bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider_d"]
CLASSIC = ["bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider_d"]


@pytest.fixture(scope="module")
def resources(tmp_path_factory):
    """A fresh aac-metrics cache laid out by our resolver from the installed pycocoevalcap wheel."""
    found = mr.resolve(tmp_path_factory.mktemp("aac_cache"))
    if not found.components["java"].ok:
        pytest.skip("no Java runtime: " + "; ".join(found.components["java"].missing))
    return found


def synthesized_set(n_clips: int = 60):
    """Five references per clip from synth's wordings; the prediction describes the clip or a neighbour."""
    rng = np.random.default_rng(0)
    events = [synth.random_events(rng) for _ in range(n_clips)]
    refs = {f"clip{i:03d}": synth.captions_for(e, 5) for i, e in enumerate(events)}
    predicted = {
        f"clip{i:03d}": synth.captions_for(events[i] if i % 3 else events[(i + 1) % n_clips], 2)[i % 2]
        for i in range(n_clips)
    }
    return refs, predicted


# ----------------------------------------------------------------------------------------------- Java


def test_batched_decodes_equal_scoring_each_decode_alone_with_aac_metrics(resources):
    import aac_metrics.utils.checks as checks
    from aac_metrics import evaluate

    refs, predicted = synthesized_set()
    keys = sorted(refs)
    shifted = {k: predicted[keys[(i + 1) % len(keys)]] for i, k in enumerate(keys)}
    # half the clips identical to `predicted` (beam sizes often agree), one empty caption
    mixed = {k: (predicted[k] if i % 2 else shifted[k]) for i, k in enumerate(keys)}
    mixed[keys[3]] = ""
    decodes = {"predicted": predicted, "shifted": shifted, "mixed": mixed}

    report = score_decodes(refs, decodes, resources, metrics=CLASSIC)

    assert report.missing == {}
    assert report.references_per_clip == {5: len(refs)}

    old_max = checks.MAX_JAVA_MAJOR_VERSION
    checks.MAX_JAVA_MAJOR_VERSION = max(old_max, resources.java.major)  # aac-metrics refuses Java > 13
    try:
        for name in ("mixed",):  # shares captions with both other decodes, and has an empty one
            corpus, sents = evaluate(
                [decodes[name][k] for k in keys],
                [refs[k] for k in keys],
                metrics=CLASSIC,
                cache_path=str(resources.cache_dir),
                java_path=resources.java.path,
            )
            ours = report.decodes[name]
            for metric in CLASSIC:
                assert ours.corpus[metric] == pytest.approx(float(corpus[metric]), rel=1e-12, abs=1e-12), (name, metric)
                np.testing.assert_allclose(ours.sentences[metric], sents[metric].numpy(), rtol=1e-12, atol=1e-12)
    finally:
        checks.MAX_JAVA_MAJOR_VERSION = old_max


@pytest.mark.skipif(
    not os.environ.get("COCO_FAKECAP_RESULTS"),
    reason=(
        "set COCO_FAKECAP_RESULTS to tylin/coco-caption's results/captions_val2014_fakecap_results.json "
        "(83,956 bytes; not on PyPI) to check the published coco-caption demo values"
    ),
)
def test_coco_caption_demo_published_values(resources):
    jar = mr.pycocoevalcap_dir() / "spice" / "spice-1.0.jar"  # it bundles captions_val2014.json
    annotations = json.loads(zipfile.ZipFile(jar).read("coco/annotations/captions_val2014.json"))
    results = json.loads(Path(os.environ["COCO_FAKECAP_RESULTS"]).read_text())
    refs = {}
    for ann in annotations["annotations"]:
        refs.setdefault(str(ann["image_id"]), []).append(ann["caption"])
    hyps = {str(r["image_id"]): r["caption"] for r in results}
    report = score_decodes({k: refs[k] for k in hyps}, {"fakecap": hyps}, resources, metrics=CLASSIC)
    published = {
        "bleu_1": 0.579,
        "bleu_2": 0.404,
        "bleu_3": 0.279,
        "bleu_4": 0.191,
        "meteor": 0.195,
        "rouge_l": 0.396,
        "cider_d": 0.600,
    }
    for metric, value in published.items():
        assert report.decodes["fakecap"].corpus[metric] == pytest.approx(value, abs=5e-4), metric


def _default_resources():
    """The user's own cache (not written to): the SPICE and FENSE tests run where those are installed."""
    return mr.resolve(link=False)


def test_spice_batched_equals_aac_metrics_per_decode_and_spider_formula(tmp_path):
    found = _default_resources()
    blocking = found.blocking("spider")
    if blocking:
        pytest.skip("SPICE resources missing: " + "; ".join(", ".join(c.missing) for c in blocking))
    from aac_metrics.functional.spice import spice

    from espnet_slam_aac.scoring.backends import java_accepted

    refs = {"a": ["a man speaks", "someone speaks"], "b": ["rain is falling hard on a surface"]}
    decodes = {"one": {"a": "a man is speaking", "b": "rain falls"}, "two": {"a": "a man is speaking", "b": "a dog"}}
    report = score_decodes(
        refs, decodes, found, metrics=["cider_d", "spice", "spider"], normalization=TextNormalization(False)
    )
    for name, hyps in decodes.items():
        with java_accepted():
            _, sents = spice(
                [hyps["a"], hyps["b"]],
                [refs["a"], refs["b"]],
                cache_path=str(found.cache_dir),
                java_path=mr.write_java_wrapper(found.java, tmp_path),
            )
        assert report.decodes[name].sentences["spice"] == pytest.approx(sents["spice"].tolist())
        corpus = report.decodes[name].corpus
        assert corpus["spider"] == pytest.approx((corpus["cider_d"] + corpus["spice"]) / 2)


def test_fense_with_the_real_models_when_installed():
    found = _default_resources()
    blocking = found.blocking("fense", ptb_tokenize=False)
    if blocking:
        pytest.skip("FENSE models missing: " + "; ".join(", ".join(c.missing) for c in blocking))
    refs = {"a": ["a man speaks", "someone speaks"], "b": ["rain is falling hard on a surface"]}
    report = score_decodes(
        refs,
        {"x": {"a": "a man is speaking", "b": "rain rain rain falls falls"}},
        found,
        metrics=["fense", "sbert_sim", "fer"],
        normalization=TextNormalization(False),
        device="cpu",
    )
    corpus = report.decodes["x"].corpus
    assert 0 < corpus["sbert_sim"] <= 1 and corpus["fense"] <= corpus["sbert_sim"]


# ------------------------------------------------------------------------------- FENSE plumbing (no Java)


FENSE_CAPTIONS = ["a man speaks", "rain falls", "a cat", "the car engine runs", "a dog barks the dog barks"]


@pytest.fixture(scope="module")
def tiny_fense_models(tmp_path_factory):
    """Random tiny BERT models in the shapes aac-metrics' FENSE uses (SBERT + 6-way error checker)."""
    from aac_metrics.functional.fer import BERTFlatClassifier
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_bert")
    words = "a the man woman dog cat rain falls is speaking speaks barks bird chirps car engine runs water".split()
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=5 + len(words),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    sbert = SentenceTransformer(modules=[models.Transformer(str(folder)), models.Pooling(16)], device="cpu")
    echecker = BERTFlatClassifier(str(folder), num_classes=6).eval()
    with torch.no_grad():  # put the 0.9 threshold of the "error" output inside the range of FENSE_CAPTIONS
        batch = tokenizer(FENSE_CAPTIONS, padding="max_length", max_length=64, truncation=True, return_tensors="pt")
        logits = echecker(**batch)[:, 5]
        echecker.clf.bias[5] += float(np.log(9.0) - logits.median())
    return FenseModels(sbert=sbert, echecker=echecker, echecker_tokenizer=tokenizer)


def test_fense_fer_sbert_batched_over_decodes_equal_aac_metrics_per_decode(tiny_fense_models):
    from aac_metrics.functional.fense import fense

    refs = {"a": ["a man speaks", "the man is speaking"], "b": ["rain falls"], "c": ["a dog barks", "a cat"]}
    decodes = {
        "one": {"a": "a man speaks", "b": "rain falls", "c": "a cat"},
        "two": {"a": "a man speaks", "b": "the car engine runs", "c": "a dog barks the dog barks"},
    }
    no_resources = mr.MetricResources(
        Path("/nonexistent"), None, {name: mr.Component(name, missing=["absent"]) for name in ("java",) + mr.FETCHABLE}
    )
    report = score_decodes(
        refs,
        decodes,
        no_resources,
        metrics=ALL_METRICS,
        normalization=TextNormalization(ptb_tokenize=False),
        device="cpu",
        fense_models=tiny_fense_models,
    )
    # the models were given: FENSE, SBERT-sim and FER are computed although no cache exists
    assert sorted(report.missing) == ["meteor", "spice", "spider", "spider_fl"]
    fers = []
    for name, hyps in decodes.items():
        _, sents = fense(
            [hyps[k] for k in sorted(refs)],
            [refs[k] for k in sorted(refs)],
            sbert_model=tiny_fense_models.sbert,
            echecker=tiny_fense_models.echecker,
            echecker_tokenizer=tiny_fense_models.echecker_tokenizer,
            device="cpu",
        )
        ours = report.decodes[name]
        for metric in ("sbert_sim", "fer", "fense"):
            np.testing.assert_allclose(ours.sentences[metric], sents[metric].numpy(), rtol=1e-5, atol=1e-6)
            assert ours.corpus[metric] == pytest.approx(float(sents[metric].mean()), abs=1e-6)
        fers += ours.sentences["fer"]
    assert 0 < sum(fers) < len(fers), "the test echecker should flag some captions, not all"


# ------------------------------------------------------------------------------- formulas (no Java)


def test_spider_and_fluency_penalty_match_aac_metrics_combination():
    from aac_metrics.functional.fense import _fense_from_outputs
    from aac_metrics.functional.spider import _spider_from_outputs
    from aac_metrics.functional.spider_fl import _spider_fl_from_outputs

    cider = torch.tensor([1.2, 0.4, 0.0, 2.5], dtype=torch.float64)
    spice = torch.tensor([0.3, 0.1, 0.05, 0.2], dtype=torch.float64)
    fer = torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    sbert = torch.tensor([0.8, 0.6, 0.3, 0.9], dtype=torch.float64)
    spider_outs = _spider_from_outputs(
        ({"cider_d": cider.mean()}, {"cider_d": cider}), ({"spice": spice.mean()}, {"spice": spice})
    )
    fer_outs = ({"fer": fer.mean()}, {"fer": fer})
    spider_fl_outs = _spider_fl_from_outputs(spider_outs, fer_outs)
    fense_outs = _fense_from_outputs(({"sbert_sim": sbert.mean()}, {"sbert_sim": sbert}), fer_outs)

    spider = spider_from(cider.numpy(), spice.numpy())
    np.testing.assert_allclose(spider, spider_outs[1]["spider"].numpy())
    np.testing.assert_allclose(fluency_penalized(spider, fer.numpy()), spider_fl_outs[1]["spider_fl"].numpy())
    np.testing.assert_allclose(fluency_penalized(sbert.numpy(), fer.numpy()), fense_outs[1]["fense"].numpy())
    assert fluency_penalized(np.array([1.0]), np.array([1.0]))[0] == pytest.approx(0.1)  # divided by 10


def test_python_metrics_need_no_java_without_ptb_and_cider_needs_two_clips():
    no_java = mr.MetricResources(
        Path("/nonexistent"),
        None,
        {name: mr.Component(name, missing=["absent"], fetch=f"fetch {name}") for name in ("java",) + mr.FETCHABLE},
    )
    refs = README_REFS
    hyps = {"x": {"a": "a man is speaking", "b": "rain falls"}}
    report = score_decodes(
        refs, hyps, no_java, metrics=PYTHON_METRICS + ["meteor"], normalization=TextNormalization(ptb_tokenize=False)
    )
    # README example without PTB: the tokenization does not change these values (metrics_clap.md 8.3)
    assert report.decodes["x"].corpus["bleu_1"] == pytest.approx(0.4278, abs=1e-4)
    assert report.decodes["x"].sentences["cider_d"] == pytest.approx([1.3641, 0.5587], abs=1e-4)
    assert list(report.missing) == ["meteor"]  # reported, never a zero score
    assert "meteor" not in report.decodes["x"].corpus and "meteor" not in report.decodes["x"].sentences
    assert "java: missing absent" in report.missing["meteor"].reason
    assert report.missing["meteor"].fetch == "fetch java; fetch meteor"

    one_clip = score_decodes(
        {"a": refs["a"]},
        {"x": {"a": "a man"}},
        no_java,
        metrics=PYTHON_METRICS + ["spider"],
        normalization=TextNormalization(ptb_tokenize=False),
    )
    assert "at least 2 clips" in one_clip.missing["cider_d"].reason
    assert one_clip.decodes["x"].corpus["bleu_1"] > 0

    with_ptb = score_decodes(refs, hyps, no_java, metrics=["bleu_1"])
    assert "ptb" in with_ptb.missing["bleu_1"].reason and with_ptb.decodes["x"].corpus == {}

    with pytest.raises(ValueError, match="unknown metrics"):
        score_decodes(refs, hyps, no_java, metrics=["bleu"])


def test_a_crashing_java_program_is_reported_and_the_other_metrics_still_computed(tmp_path):
    java = tmp_path / "java"
    java.write_text("#!/bin/sh\necho 'Error: Unable to access jarfile' >&2\nexit 1\n")
    java.chmod(0o755)
    found = mr.MetricResources(
        tmp_path, mr.JavaInfo(str(java), "17.0.15", 17), {name: mr.Component(name) for name in ("java",) + mr.FETCHABLE}
    )
    report = score_decodes(
        README_REFS,
        {"x": {"a": "a man is speaking", "b": "rain falls"}},
        found,
        metrics=["bleu_1", "meteor"],
        normalization=TextNormalization(ptb_tokenize=False),
    )
    assert report.missing["meteor"].reason.startswith("failed: MetricResourceError: METEOR (")
    assert "Unable to access jarfile" in report.missing["meteor"].reason
    assert list(report.decodes["x"].corpus) == ["bleu_1"]


def test_strip_punctuation_option_and_whitespace_cleaning():
    assert clean_text("  A man\nspeaks,\tloudly. ") == "A man speaks, loudly."
    assert clean_text("A man's dog barks! (twice)", strip_punctuation=True) == "a mans dog barks twice"
    assert "ESPnet clotho_v2" in TextNormalization(strip_punctuation=True).describe()
    assert "PTB" in TextNormalization().describe()


# ------------------------------------------------------------------------------- inputs


def test_check_keys_names_the_first_missing_keys_and_counts():
    refs = {f"k{i}": ["ref"] for i in range(10)}
    hyps = {"beam2": {f"k{i}": "h" for i in range(3)}, "1best": {**{f"k{i}": "h" for i in range(10)}, "extra": "h"}}
    with pytest.raises(DataError) as error:
        check_keys(refs, hyps)
    message = str(error.value)
    assert "decode 'beam2': 7 reference clips without a hypothesis (k3, k4, k5, k6, k7, ...)" in message
    assert "decode '1best': 1 hypotheses without references (extra)" in message


def test_read_hypotheses_keeps_empty_captions_and_names_duplicate_lines(tmp_path):
    path = tmp_path / "text"
    path.write_text("k1 a man speaks\nk2\nk3\ta\ttab\n")
    assert read_hypotheses(path) == {"k1": "a man speaks", "k2": "", "k3": "a\ttab"}
    path.write_text("k1 a\nk1 b\n")
    with pytest.raises(DataError, match=r"text:2: duplicate key 'k1'"):
        read_hypotheses(path)
    with pytest.raises(DataError, match="no such file"):
        read_hypotheses(tmp_path / "absent")


def _data_dir(path, clips):
    from espnet_slam_aac.data.datadir import write_data_dir
    from espnet_slam_aac.data.records import Utterance

    utts = [Utterance(key, f"/audio/{key}.wav", tuple(texts), 16000, 1.0) for key, texts in clips.items()]
    return write_data_dir(utts, path, references=True)


def test_read_references_handles_clips_with_fewer_references(tmp_path, caplog):
    data = _data_dir(tmp_path / "eval", {"a": ["r1", "r2", "r3"], "b": ["r1"], "c": ["r1", "r2"]})
    refs = read_references(data)
    assert refs == {"a": ["r1", "r2", "r3"], "b": ["r1"], "c": ["r1", "r2"]}
    assert "2 of 3 clips have fewer than 3 references (b: 1, c: 2)" in caplog.text
    with pytest.raises(DataError, match=r"1 clips have fewer than 2 references \(b\)"):
        read_references(data, min_refs=2)


def test_read_references_needs_text_spk_files(tmp_path):
    from espnet_slam_aac.data.datadir import write_data_dir
    from espnet_slam_aac.data.records import Utterance

    data = write_data_dir([Utterance("a", "/audio/a.wav", ("r1",), 16000, 1.0)], tmp_path / "train")
    with pytest.raises(DataError, match="no text_spk1..N files"):
        read_references(data)


def test_read_references_needs_only_the_text_spk_files(tmp_path):
    refs = tmp_path / "refs"
    refs.mkdir()
    (refs / "text_spk1").write_text("b rain falls\na a man speaks\n")  # unsorted, no wav.scp or utt2dur
    (refs / "text_spk2").write_text("a someone speaks\n")
    assert read_references(refs) == {"a": ["a man speaks", "someone speaks"], "b": ["rain falls"]}
    (refs / "text_spk3").write_text("c a bell\n")
    with pytest.raises(DataError, match=r"text_spk3: 1 key\(s\) not in text_spk1 \(c\)"):
        read_references(refs)
    (refs / "text_spk3").unlink()
    (refs / "text_spk4").write_text("a x\n")
    with pytest.raises(DataError, match="not numbered 1..3 without gaps"):
        read_references(refs)
    (refs / "text_spk4").unlink()
    (refs / "text_spk2").write_text("a someone speaks\nb\n")
    with pytest.raises(DataError, match=r"text_spk2:2: key 'b' has no caption"):
        read_references(refs)
    with pytest.raises(DataError, match="not a folder"):
        read_references(tmp_path / "absent")


# ------------------------------------------------------------------------------- resources (no network)


def test_installed_jars_are_linked_into_a_fresh_cache_and_spice_lists_what_is_missing(tmp_path):
    if mr.pycocoevalcap_dir() is None:
        pytest.skip("pycocoevalcap is not installed")
    linked = mr.link_installed(tmp_path)
    targets = {t.relative_to(tmp_path).as_posix() for t, _ in linked}
    assert {mr.PTB_JAR, mr.METEOR_JAR, mr.METEOR_PARAPHRASE, mr.SPICE_JAR} <= targets
    assert all(t.is_symlink() and t.resolve() == s.resolve() for t, s in linked)
    assert mr.link_installed(tmp_path) == []  # nothing twice

    # a dangling link (e.g. a moved venv) is replaced; an existing file is kept
    ptb = tmp_path / mr.PTB_JAR
    ptb.unlink()
    ptb.symlink_to(tmp_path / "gone.jar")
    (tmp_path / mr.METEOR_JAR).unlink()
    (tmp_path / mr.METEOR_JAR).write_bytes(b"user's own jar")
    assert [t for t, _ in mr.link_installed(tmp_path)] == [ptb]
    assert (tmp_path / mr.METEOR_JAR).read_bytes() == b"user's own jar"

    found = mr.resolve(tmp_path, java="/nonexistent/java")
    assert found.components["ptb"].ok and found.components["meteor"].ok
    assert (tmp_path / mr.SPICE_CACHE).is_dir()
    absent = [n for n in mr.SPICE_LIB_JARS if not (mr.pycocoevalcap_dir() / "spice" / "lib" / n).is_file()]
    assert found.components["spice"].missing == [str(tmp_path / mr.SPICE_LIB / n) for n in absent]
    assert not found.components["java"].ok and "/nonexistent/java (not found)" in found.components["java"].missing[0]
    assert [c.name for c in found.blocking("meteor")] == ["java"]
    assert found.blocking("bleu_1", ptb_tokenize=False) == []
    fetch = f"espnet-slam-aac fetch-metric-resources --metrics spice --cache_dir {tmp_path}"
    assert found.components["spice"].fetch == fetch


@pytest.mark.parametrize(
    "output, version, major",
    [
        ('openjdk version "1.8.0_392"\nOpenJDK Runtime Environment (build 1.8.0_392-b08)', "1.8.0_392", 8),
        ('java version "1.8.0_202"', "1.8.0_202", 8),
        ('openjdk version "11.0.21" 2023-10-17', "11.0.21", 11),
        ('openjdk version "17.0.15" 2025-04-15', "17.0.15", 17),
        ('NOTE: Picked up JDK_JAVA_OPTIONS: -Xmx1g\nopenjdk version "21" 2023-09-19', "21", 21),
        ('openjdk version "25-ea" 2025-09-16', "25-ea", 25),
    ],
)
def test_java_versions_8_to_25_are_parsed(output, version, major):
    assert mr.parse_java_version(output) == (version, major)


def _fake_java(tmp_path, version):
    script = tmp_path / "java"
    script.write_text(f"#!/bin/sh\necho 'openjdk version \"{version}\" 2024-01-16' >&2\n")
    script.chmod(0o755)
    return str(script)


def test_find_java_accepts_8_and_newer_and_rejects_older(tmp_path):
    assert mr.find_java(_fake_java(tmp_path, "21.0.2")).major == 21
    assert mr.find_java(_fake_java(tmp_path, "1.8.0_392")).major == 8
    with pytest.raises(MetricResourceError, match=r"Java 1.7.0_80; 8 or newer is needed"):
        mr.find_java(_fake_java(tmp_path, "1.7.0_80"))
    with pytest.raises(MetricResourceError, match="cannot read a Java version"):
        mr.parse_java_version("command not found")


def test_spice_java_wrapper_adds_the_add_opens_flags_and_runs(tmp_path):
    assert mr.write_java_wrapper(mr.JavaInfo("/usr/bin/java8", "1.8.0_392", 8), tmp_path) == "/usr/bin/java8"
    wrapper = mr.write_java_wrapper(mr.JavaInfo("/opt/jdk/bin/java", "17.0.15", 17), tmp_path)
    text = Path(wrapper).read_text()
    assert text.startswith('#!/bin/sh\nexec "/opt/jdk/bin/java" --add-opens=java.base/java.lang=ALL-UNNAMED')
    assert text.rstrip().endswith('"$@"') and os.access(wrapper, os.X_OK)
    assert "JDK_JAVA_OPTIONS" not in text
    java = shutil.which("java")
    if java is None:
        pytest.skip("no Java to run the wrapper with")
    real = mr.find_java(java)
    if real.major >= 9:  # the wrapped runtime still reports its version, so aac-metrics-style checks pass
        assert mr.find_java(mr.write_java_wrapper(real, tmp_path)).version == real.version
