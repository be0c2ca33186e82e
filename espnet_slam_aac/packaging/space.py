"""What makes a packed model a Hugging Face Space: the demo page of the model in its own folder.

``pack`` calls ``write_space`` on the folder it is writing, which adds::

    app.py               runs ``espnet-slam-aac demo --model <this folder>`` (with ``--refine`` when the pack has
                         a CLAP); a Space starts it with ``python app.py``, and so can anyone who downloads it
    requirements.txt     espnet-slam-aac with its ``demo`` extra, the verified stack and Gradio, pinned
    examples/            example clips shown on the page (``pack --example``), checked readable
    README.md            the model card's front matter gains the Space keys (``sdk: gradio``, ``sdk_version``,
                         ``app_file``, ``python_version``, ...) and the card a "Demo" section

so the same folder uploads as a model repository and as a Space
(``espnet-slam-aac upload DIR --hf_repo me/name-demo --space``). A model repository ignores the Space keys.
"""

import importlib.metadata
import os
import shutil
from pathlib import Path
from typing import Dict, Sequence

import yaml

from espnet_slam_aac import __version__
from espnet_slam_aac.data.audio import load_audio
from espnet_slam_aac.errors import ConfigError
from espnet_slam_aac.packaging.layout import CARD

APP, REQUIREMENTS, EXAMPLES = "app.py", "requirements.txt", "examples"
GRADIO_PIN = "6.31.0"  # the demo extra's pin in setup.py (a test keeps them equal)
PYTHON = "3.11"  # setup.py's python_requires
STACK = ("espnet", "torch", "torchaudio", "transformers", "peft", "sentencepiece")  # pinned as installed

APP_TEMPLATE = '''"""The demo page of the model in this folder, as a Hugging Face Space (written by `pack`).

A Space runs it with `python app.py`; so can you, after `pip install -r requirements.txt`: open the URL it logs.
It is `espnet-slam-aac demo --model <this folder>{refine_doc}` (`espnet-slam-aac demo --help`).
"""

from pathlib import Path

from espnet_slam_aac.bin import demo

demo.main(["--model", str(Path(__file__).resolve().parent){refine_arg}])
'''

DEMO_SECTION = """
## Demo

`espnet-slam-aac demo --model {repo}{refine}` (`pip install "espnet-slam-aac[demo]"`) serves a page where you
drop or record a clip and see its caption, every candidate with its beam size and log-probability{clap}, the
log-mel fbank the model hears and the time taken. This folder is also a Hugging Face Space (`app.py`,
`requirements.txt`, the Space keys above{examples}): `espnet-slam-aac upload <this folder> --hf_repo
<org>/<name>-demo --space` puts the demo online (a GPU Space for a 7B LLM).
"""


def check_examples(examples: Sequence[os.PathLike]) -> None:
    """``AudioError`` for a clip the demo could not caption, ``ConfigError`` for two clips of one name."""
    names: Dict[str, Path] = {}
    for path in map(Path, examples):
        load_audio(path)
        if path.name in names:
            raise ConfigError(f"example clips {names[path.name]} and {path} have the same name; rename one")
        names[path.name] = path


def requirements() -> str:
    pins = [f"espnet-slam-aac[demo]=={__version__}", f"gradio=={GRADIO_PIN}"]
    for name in STACK:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return "# the Space's environment (espnet-slam-aac pack): the stack this model was packed with\n" + "\n".join(
        pins + [""]
    )


def space_front_matter(name: str) -> dict:
    title = name.split("/")[-1] if name else "SLAM-AAC audio captioning"
    keys = {
        "title": title[:30],  # the Hub's limit
        "emoji": "🔊",
        "colorFrom": "indigo",
        "colorTo": "gray",
        "sdk": "gradio",
        "sdk_version": GRADIO_PIN,
        "python_version": PYTHON,
        "app_file": APP,
        "pinned": False,
    }
    if name and "/" in name:
        keys["models"] = [name]  # links the Space to the model repository
    return keys


def add_to_card(card: Path, name: str, refine: bool, examples: int) -> None:
    """Add the Space keys to the card's YAML front matter and a "Demo" section to its text."""
    text = card.read_text(encoding="utf-8")
    if not text.startswith("---\n") or "\n---\n" not in text[3:]:
        raise ConfigError(f"{card}: the model card has no YAML front matter to add the Space keys to")
    end = text.index("\n---\n", 3)
    meta = yaml.safe_load(text[4:end]) or {}
    meta.update(space_front_matter(name))
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    repo = name if name and "/" in name else "<org>/<repo>"
    section = DEMO_SECTION.format(
        repo=repo,
        refine=" --refine" if refine else "",
        clap=", its CLAP similarity and which one CLAP-Refine picked" if refine else "",
        examples=f", and {examples} example clips in `examples/`" if examples else "",
    )
    card.write_text(f"---\n{front}---\n{text[end + 5 :].rstrip()}\n{section}", encoding="utf-8")


def write_space(folder: Path, name: str = "", refine: bool = False, examples: Sequence[os.PathLike] = ()) -> None:
    """Make the packed ``folder`` (with its model card written) a Space; ``refine``: the pack has a CLAP."""
    check_examples(examples)
    if examples:
        (folder / EXAMPLES).mkdir()
        for path in examples:
            shutil.copy2(path, folder / EXAMPLES / Path(path).name)
    refine_doc, refine_arg = (" --refine", ', "--refine"') if refine else ("", "")
    (folder / APP).write_text(APP_TEMPLATE.format(refine_doc=refine_doc, refine_arg=refine_arg), encoding="utf-8")
    (folder / REQUIREMENTS).write_text(requirements(), encoding="utf-8")
    add_to_card(folder / CARD, name or "", refine, len(examples))
