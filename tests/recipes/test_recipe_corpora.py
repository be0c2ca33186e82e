"""The Clotho and AudioCaps recipes, stages 1-3 as a user runs them (./run.sh), on small stand-in corpora:
aac-datasets is replaced by a stub serving synthesized clips, MarianMT by tiny random models."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import soundfile

from espnet_slam_aac.data.datadir import read_data_dir
from espnet_slam_aac.testing import synth

REPO = Path(__file__).resolve().parents[2]

STUB = """
import json, os

class _Subset:
    def __init__(self, root, subset, download=False, **kwargs):
        corpus = type(self).__name__.lower()
        spec = json.load(open(os.path.join(os.environ["STUB_CORPORA"], corpus + ".json")))[subset]
        self.columns = spec
    def __len__(self):
        return len(self.columns["fpath"])
    def at(self, idx, column):
        return self.columns[column]

class Clotho(_Subset):
    pass

class AudioCaps(_Subset):
    pass
"""


def stand_in_corpora(root: Path) -> Path:
    """Synthesized clips as aac-datasets would list them (fpath, captions; AudioCaps: youtube ids, one clip
    gone from YouTube). Clotho clips are 44.1 kHz (as the real ones), AudioCaps 32 kHz."""
    import numpy as np

    rng = np.random.default_rng(0)
    specs = {
        "clotho": {"dev": (6, 5), "val": (3, 5), "eval": (3, 5)},
        "audiocaps": {"train": (6, 1), "val": (3, 5), "test": (4, 5)},
    }
    for corpus, subsets in specs.items():
        rate = 44100 if corpus == "clotho" else 32000
        out = {}
        for subset, (n, refs) in subsets.items():
            cols = {"fpath": [], "captions": [], "youtube_id": [], "start_time": []}
            for i in range(n):
                wave, events = synth.synthesize_clip(rng, rate, 2.0)
                path = root / corpus / subset / f"clip {i}.wav"  # Clotho file names have spaces
                path.parent.mkdir(parents=True, exist_ok=True)
                if not (corpus == "audiocaps" and subset == "test" and i == 2):  # a video that is gone
                    soundfile.write(path, wave, rate)
                cols["fpath"].append(str(path))
                cols["captions"].append(synth.captions_for(events, refs))
                cols["youtube_id"].append(f"yt{i}")
                cols["start_time"].append(10 * i)
            out[subset] = cols
        (root / f"{corpus}.json").write_text(json.dumps(out))
    stub = root / "stub" / "aac_datasets"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text(STUB)
    return root


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> Path:
    return stand_in_corpora(tmp_path_factory.mktemp("corpora"))


@pytest.fixture(scope="module")
def marian_config(tmp_path_factory, synth_manifest) -> Path:
    from espnet_slam_aac.testing.tiny_marian import build_tiny_marian, write_config

    texts = [json.loads(line)["target"] for line in synth_manifest.read_text().splitlines()]
    root = tmp_path_factory.mktemp("marian")
    fwd, bwd = build_tiny_marian(root / "fwd", texts, 1), build_tiny_marian(root / "bwd", texts, 2)
    return write_config(root / "paraphrase.yaml", fwd, bwd)


def recipe_copy(tmp_path: Path, corpus: str) -> Path:
    """The recipe in a tree of its own (its links into TEMPLATE resolve to the real one)."""
    shutil.copytree(REPO / "egs2" / corpus, tmp_path / "egs2" / corpus, symlinks=True)
    (tmp_path / "egs2" / "TEMPLATE").symlink_to(REPO / "egs2" / "TEMPLATE")
    return tmp_path / "egs2" / corpus / "aac1"


def run_recipe(recipe: Path, corpora: Path, *args, **env) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "STUB_CORPORA": str(corpora),
        "PYTHONPATH": str(corpora / "stub"),
        "HF_HUB_OFFLINE": "1",
        **env,
    }
    return subprocess.run(["./run.sh", *map(str, args)], cwd=recipe, capture_output=True, text=True, env=env)


def test_clotho_recipe_prepares_paraphrases_and_formats_its_sets(tmp_path, corpora, marian_config):
    recipe = recipe_copy(tmp_path, "clotho")
    done = run_recipe(
        recipe,
        corpora,
        "--stop_stage",
        "3",
        "--nj",
        "2",
        "--gpu_inference",
        "false",
        "--paraphrase_config",
        marian_config,
        CLOTHO=str(corpora),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "AUDIOCAPS is empty in db.sh: pre-training without AudioCaps" in done.stdout
    assert "CLAP is empty in db.sh: stage 9 (CLAP-Refine) is skipped" in done.stdout
    evaluation = read_data_dir(recipe / "dump/raw/clotho_eval")
    assert len(evaluation) == 3 and all(len(u.texts) == 5 for u in evaluation)
    dev = read_data_dir(recipe / "dump/raw/clotho_dev")
    assert len(dev) == 30 and all(soundfile.info(u.source).samplerate == 16000 for u in dev)
    paraphrased = read_data_dir(recipe / "dump/raw/clotho_dev_para")
    pretrain = read_data_dir(recipe / "dump/raw/pretrain")
    assert len(paraphrased) >= len(dev) and {u.key for u in pretrain} == {u.key for u in paraphrased}
    assert (recipe / "data/clotho_dev_para/paraphrases.jsonl").is_file()
    assert (recipe / "data/local/paraphrase_cache.jsonl").is_file()

    # Rerun: every stage finds its outputs complete.
    again = run_recipe(
        recipe, corpora, "--stop_stage", "3", "--nj", "2", "--paraphrase_config", marian_config, CLOTHO=str(corpora)
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Stage 2: data/clotho_dev_para is complete: skipped" in again.stdout
    assert again.stdout.count("is complete: skipped") == 6  # 2 (paraphrase) + 3: 5 sets + the merged one


def test_audiocaps_recipe_reports_missing_clips_and_pretrains_on_both_corpora(tmp_path, corpora):
    recipe = recipe_copy(tmp_path, "audiocaps")
    extra = corpora / "extra.jsonl"
    path = json.loads((corpora / "audiocaps.json").read_text())["train"]["fpath"][0]  # any clip on disk
    extra.write_text(json.dumps({"key": "extra_1", "source": path, "target": "a made up caption"}) + "\n")
    done = run_recipe(
        recipe,
        corpora,
        "--stop_stage",
        "3",
        "--nj",
        "2",
        "--skip_paraphrase",
        "true",
        AUDIOCAPS=str(corpora),
        CLOTHO=str(corpora),
        PRETRAIN_MANIFESTS=f"extra={extra}",
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "audiocaps test: 1 of 4 clips are not on disk" in done.stderr
    assert (recipe / "data/local/audiocaps_test.missing.tsv").read_text().splitlines()[1] == "2\tyt2\t20"
    test = read_data_dir(recipe / "dump/raw/audiocaps_test")
    assert len(test) == 3 and all(len(u.texts) == 5 for u in test)
    pretrain = {u.key.split("_")[0] for u in read_data_dir(recipe / "dump/raw/pretrain")}
    assert pretrain == {"audiocaps", "clotho", "extra"}
