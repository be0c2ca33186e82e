"""The model card (README.md) of a packed model: what it is, how to load it, its sources and scores."""

from pathlib import Path

from espnet_slam_aac.packaging.layout import CONFIG, RESULTS, SOURCES
from espnet_slam_aac.utils.config import read_yaml

CARD_TEMPLATE = """---
tags:
- espnet
- audio
- audio-captioning
- slam-aac
library_name: espnet
license: {license}
{datasets_yaml}---

# {title}

SLAM-AAC automated audio captioning model trained with
[espnet-slam-aac](https://github.com/espnet/espnet) (an ESPnet plugin): a frozen EAT audio encoder, a linear
projector and an LLM decoder with LoRA; {n_params:,} trained parameters (projector + LoRA) are in
`model.safetensors`, the frozen parts are loaded from the sources below.

## Usage

```bash
pip install espnet-slam-aac
espnet-slam-aac caption --model {repo} clips/*.wav > captions.tsv
```

```python
from espnet_slam_aac import Speech2Caption, load_audio

s2c = Speech2Caption.from_pretrained("{repo}")      # add device="cuda" on a GPU
print(s2c(*load_audio("clip.wav")).caption)
```

With ESPnet's model zoo (`pip install espnet_model_zoo`):

```python
from espnet_model_zoo.downloader import ModelDownloader
s2c = Speech2Caption(**ModelDownloader().download_and_unpack("{repo}"))
```

In a recipe (`egs2/<corpus>/aac1`): `./run.sh --download_model {repo} --stage 8` decodes, refines and scores
the recipe's test sets with this model.

## Frozen sources

| config key | packed value | origin | revision |
|---|---|---|---|
{references}

## Training data

{data}

## Results

{results}

## Licenses

The trained weights are derived from the frozen models and the training data; each keeps its own terms,
which bind the use of this model: the base LLM's license (Vicuna v1.5: the Llama 2 Community License), EAT
(MIT), the datasets' licenses (Clotho captions: Tampere University, non-commercial; Clotho audio: per-clip
Freesound licenses; AudioCaps: academic use only; WavCaps: academic use only). The code is Apache-2.0.
Check every component before any commercial use.

## Citation

```bibtex
@inproceedings{{chen2025slamaac,
  title={{SLAM-AAC: Enhancing Audio Captioning with Paraphrasing Augmentation and CLAP-Refine through LLMs}},
  author={{Chen, Wenxi and Ma, Ziyang and Li, Xiquan and Xu, Xuenan and Liang, Yuzhe and Zheng, Zhisheng and
          Yu, Kai and Chen, Xie}},
  booktitle={{ICASSP}},
  year={{2025}}
}}
@inproceedings{{watanabe2018espnet,
  title={{ESPnet: End-to-End Speech Processing Toolkit}},
  author={{Watanabe, Shinji and others}},
  booktitle={{Interspeech}},
  year={{2018}}
}}
```

Versions: {versions}.
"""


def model_card(folder: Path, meta: dict, license: str) -> str:
    refs = [
        f"| `{r['key']}` | `{r['value']}` | {r['origin'] if r['value'] == r['origin'] else 'copied from a local path'}"
        f" | {r['revision'] or ('-' if r['value'].startswith(SOURCES) else 'not resolved')} |"
        for r in meta["references"]
    ]
    # ESPnet's config holds [path, name, type] triples; the sets are the folders of the paths
    entries = read_yaml(folder / CONFIG).get("train_data_path_and_name_and_type") or []
    train_sets = sorted({Path(str(e[0])).parent.name for e in entries if isinstance(e, (list, tuple)) and e})
    data = f"Fine-tuned on: {', '.join(f'`{s}`' for s in train_sets)}." if train_sets else "Not recorded."
    if meta["datasets"]:
        data += f" Corpora: {', '.join(meta['datasets'])}."
    results = (folder / RESULTS).read_text(encoding="utf-8") if (folder / RESULTS).is_file() else "Not scored."
    results = results.replace("\n# ", "\n### ").replace("\n## ", "\n### ")
    if results.startswith("# "):
        results = "###" + results[1:]
    datasets_yaml = "".join(f"- {d}\n" for d in meta["datasets"])
    versions = ", ".join(
        f"{k} {meta[k]}" for k in ("espnet_slam_aac", "espnet", "torch", "transformers", "peft", "python") if k in meta
    )
    return CARD_TEMPLATE.format(
        license=license,
        datasets_yaml=f"datasets:\n{datasets_yaml}" if datasets_yaml else "",
        title=meta["name"] or "SLAM-AAC audio captioning model",
        n_params=meta["trainable_parameters"],
        repo=meta["name"] if meta["name"] and "/" in meta["name"] else "<org>/<repo>",
        references="\n".join(refs) or "| - | - | - | - |",
        data=data,
        results=results.strip(),
        versions=versions,
    )
