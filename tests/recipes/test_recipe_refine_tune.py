"""aac.sh stages 8-10 with CLAP-Refine tuned on a validation set (--refine_tune_set), as the mini recipe
runs them: the validation set (one utterance per caption) is decoded once per clip, the LM weight chosen
by CIDEr-D and recorded with its curve, applied to the test set, and RESULTS.md shows every decode, the
oracle and the figure. Tiny packed model and tiny random CLAP; synthesized data."""

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from espnet_slam_aac.data.manifest import prepare_data_dir
from espnet_slam_aac.testing import synth


@pytest.fixture(scope="module")
def recipe(toy_recipe) -> Path:
    from espnet_slam_aac.testing.tiny_clap import build_tiny_clap

    recipe = toy_recipe("refine_tune")
    root = recipe.parents[2]
    clap = build_tiny_clap(root / "clap", "ase")
    (recipe / "conf" / "refine.yaml").write_text(f"clap: {clap}\nlm_weight: 0.0\n")
    test = synth.write_corpus(root / "test", n_clips=3, captions_per_clip=2, seed=5, seconds=2.0)
    prepare_data_dir(test, recipe / "data" / "test", references=True)
    valid = synth.write_corpus(root / "valid", n_clips=2, captions_per_clip=2, seed=6, seconds=2.0, prefix="val")
    prepare_data_dir(valid, recipe / "data" / "valid")  # training layout: one utterance per caption
    return recipe


def test_lm_weight_tuned_on_validation_applied_to_the_test_set_and_reported(recipe):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "AAC_METRICS_CACHE_PATH": str(recipe / "aac_cache")}
    args = ["--download_model", recipe.parents[2] / "tiny" / "packed", "--valid_set", "valid", "--test_sets", "test"]
    args += ["--ngpu", "0", "--gpu_inference", "false", "--inference_nj", "1", "--nj", "1"]
    args += ["--decode_config", "conf/decode.yaml", "--refine_config", "conf/refine.yaml"]
    args += ["--refine_tune_set", "valid", "--refine_tune_metric", "cider_d", "--refine_lm_weights", "0 0.5 5"]
    args += ["--score_args", "--metrics bleu_1 cider_d vocab --oracle_metrics cider_d"]
    done = subprocess.run(
        ["./aac.sh", "--stage", "3", "--stop_stage", "10", *map(str, args)],
        cwd=recipe,
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    exp = recipe / "exp" / "download_tiny_packed"
    view = recipe / "dump" / "raw" / "valid_refs"
    assert len((view / "wav.scp").read_text().splitlines()) == 2 and (view / "text_spk2").is_file()
    assert len((exp / "decode_decode_packed" / "valid_refs" / "text").read_text().splitlines()) == 2

    tuned = yaml.safe_load((exp / "refine_tune_valid" / "lm_weight.yaml").read_text())
    assert tuned["metric"] == "cider_d" and [row["lm_weight"] for row in tuned["curve"]] == [0.0, 0.5, 5.0]
    assert tuned["lm_weight"] in (0.0, 0.5, 5.0) and (exp / "refine_tune_valid" / "curve.png").is_file()
    refined = yaml.safe_load((exp / "decode_decode_packed" / "test" / "clap_refine" / "refine.yaml").read_text())
    assert refined["lm_weight"] == tuned["lm_weight"]
    assert f"LM weight {tuned['lm_weight']}, tuned on valid" in done.stdout

    results = (exp / "RESULTS.md").read_text()
    assert f"- clap_refine lm_weight: `{tuned['lm_weight']} (tuned: refine_tune_valid/)`" in results
    assert "|oracle_cider_d|" in results and "|clap_refine|" in results and "|beam1|" in results
    assert "#### What the candidates could reach" in results and "![scores on test](images/scores_test.png)" in results
    assert (exp / "images" / "scores_test.png").stat().st_size > 10000
