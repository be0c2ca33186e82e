"""Pack a trained SLAM-AAC model into a folder that loads anywhere, and upload it to the Hugging Face Hub.

A packed folder (what ``espnet-slam-aac pack`` writes and ``Speech2Caption.from_pretrained`` reads)::

    config.yaml          the training config (ESPnet's exp/<dir>/config.yaml); frozen sources that were local
                         paths now point into sources/, relative to the folder
    model.safetensors    the trained weights only (projector + LoRA): the frozen EAT and LLM are not in it
    decode.yaml          the decoding settings the scores were made with (optional)
    refine.yaml          the CLAP-Refine settings (optional); a local CLAP is copied to sources/ too
    sources/<name>/      frozen sources that were local paths (a converted EAT, the mini recipe's tiny models)
    RESULTS.md, images/  scores and training curves (optional)
    meta.yaml            the index espnet_model_zoo reads, versions, and the base models' references
    README.md            the model card
    app.py, requirements.txt, examples/   the demo page as a Hugging Face Space (``packaging/space.py``)

**Frozen sources.** The config names its frozen parts by path or Hub id (``encoder_conf.checkpoint``,
``decoder_conf.model_name_or_path``, ``decoder_conf.tokenizer_name_or_path``, refine.yaml's ``clap``,
``clap_config`` and ``tokenizer``). A Hub id stays as it is; its current revision is recorded in meta.yaml
(``references``) when the Hub is reachable. A local path is copied into ``sources/`` and the packed config
rewritten to point at the copy, relative to the folder: ``Speech2Caption`` resolves such paths against the
folder, and ``espnet_model_zoo`` rewrites them to absolute paths after download. A local source larger
than ``max_source_bytes`` is refused with a message that says what to do: a 13 GB Vicuna copy belongs on
the Hub, named by its id.

**espnet_model_zoo.** ``meta.yaml`` lists ``yaml_files`` (``train_config`` and, when packed,
``decode_config``/``refine_config``) and ``files`` (``model_file``), keys named after ``Speech2Caption``'s
arguments, so ``Speech2Caption(**ModelDownloader().download_and_unpack("org/repo"))`` works.

**Upload** pushes the folder with ``huggingface_hub`` (``HF_TOKEN`` or ``hf auth login``); ``dry_run`` lists
what would be sent without touching the network.
"""

import datetime
import logging
import os
import platform
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Union

import yaml

from espnet_slam_aac import __version__
from espnet_slam_aac.errors import CheckpointError, ConfigError
from espnet_slam_aac.model.decoder import DEFAULT_LLM
from espnet_slam_aac.packaging.layout import CARD, CONFIG, IMAGES, META, RESULTS, SOURCES, WEIGHTS, human, size_of
from espnet_slam_aac.packaging.model_card import model_card
from espnet_slam_aac.packaging.space import write_space
from espnet_slam_aac.utils.checkpoint import is_hub_id, read_state_dict
from espnet_slam_aac.utils.config import read_yaml

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
DEFAULT_MAX_SOURCE_BYTES = 2 * 1024**3
# (file, section, key, name under sources/): config values that may name frozen sources
SOURCE_KEYS = (
    (CONFIG, "encoder_conf", "checkpoint", "encoder"),
    (CONFIG, "decoder_conf", "model_name_or_path", "llm"),
    (CONFIG, "decoder_conf", "tokenizer_name_or_path", "tokenizer"),
    ("refine.yaml", None, "clap", "clap"),
    ("refine.yaml", None, "clap_config", "clap_config"),
    ("refine.yaml", None, "tokenizer", "clap_tokenizer"),
)


@dataclass
class Reference:
    """A frozen part of the model as the packed config names it."""

    key: str  # e.g. decoder_conf.model_name_or_path
    value: str  # what the packed config holds: a Hub id, or sources/<name>
    origin: str  # the Hub id, or the local path it was copied from
    revision: Optional[str] = None  # the Hub commit at packing time, when known
    bytes: int = 0  # size of the copy in sources/


@dataclass
class PackReport:
    out_dir: Path
    references: List[Reference] = field(default_factory=list)
    trainable_parameters: int = 0


# ----------------------------------------------------------------------------------------------- helpers
def hub_revision(repo_id: str) -> Optional[str]:
    """The current commit of a Hub model, or None when the Hub cannot be asked (offline, private, gone)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return None
    try:
        from huggingface_hub import HfApi

        return HfApi().model_info(repo_id).sha
    except Exception as err:  # network, auth, missing repo: the reference is recorded without a revision
        logger.warning("cannot resolve the revision of %s on the Hub (%s); recorded without one", repo_id, err)
        return None


def load_trainable(model_file: PathLike):
    """The trained tensors of an ESPnet ``.pth`` or a ``.safetensors`` file, contiguous and unshared."""
    state = read_state_dict(Path(model_file))
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{model_file}: no tensors in it")
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


# ------------------------------------------------------------------------------------------------- pack
def collect_sources(
    configs: Dict[str, dict], base_dirs: Dict[str, Path], stage: Path, max_source_bytes: int, resolve_revisions: bool
) -> List[Reference]:
    """Copy local frozen sources into ``stage/sources`` and rewrite ``configs`` in place; returns references."""
    defaults = {("decoder_conf", "model_name_or_path"): DEFAULT_LLM}  # what the decoder loads when unset
    references: List[Reference] = []
    copied: Dict[Path, str] = {}  # one copy per local path, however many keys name it
    for file, section, key, name in SOURCE_KEYS:
        conf = configs.get(file)
        if conf is None:
            continue
        holder = conf if section is None else (conf.get(section) or {})
        value = holder.get(key)
        label = f"{section}.{key}" if section else f"{file}:{key}"
        if value is None and file == CONFIG:
            value = defaults.get((section, key))
        if not isinstance(value, str) or not value:
            continue
        local = Path(value).expanduser()
        if not local.is_absolute():
            local = base_dirs[file] / local if (base_dirs[file] / local).exists() else local
        if local.exists():
            local = local.resolve()
            if local not in copied:
                nbytes = size_of(local)
                if nbytes > max_source_bytes:
                    raise ConfigError(
                        f"{label} is a local path ({local}, {human(nbytes)}), above the packing limit of "
                        f"{human(max_source_bytes)}. Put it on the Hugging Face Hub and name it by its id in the "
                        f"config, or raise the limit (--max_source_size) to copy it into the packed model"
                    )
                target = Path(SOURCES) / name
                if local.is_file():
                    target = target / local.name
                (stage / target).parent.mkdir(parents=True, exist_ok=True)
                if local.is_dir():
                    shutil.copytree(local, stage / target, ignore=shutil.ignore_patterns(".*"))
                else:
                    shutil.copy2(local, stage / target)
                copied[local] = target.as_posix()
                references.append(Reference(label, target.as_posix(), str(local), None, nbytes))
            else:
                references.append(Reference(label, copied[local], str(local)))
            holder[key] = copied[local]
        elif is_hub_id(value):
            revision = hub_revision(value) if resolve_revisions else None
            references.append(Reference(label, value, value, revision))
        else:
            raise ConfigError(f"{label} = {value!r} is neither an existing path nor a Hugging Face Hub id")
    return references


def pack(
    train_config: PathLike,
    model_file: PathLike,
    out_dir: PathLike,
    *,
    decode_config: Optional[PathLike] = None,
    refine_config: Optional[PathLike] = None,
    clap: Optional[str] = None,
    results: Optional[PathLike] = None,
    images: Optional[PathLike] = None,
    extra_files: Sequence[PathLike] = (),
    name: Optional[str] = None,
    datasets: Sequence[str] = (),
    license: str = "other",
    max_source_bytes: int = DEFAULT_MAX_SOURCE_BYTES,
    resolve_revisions: bool = True,
    examples: Sequence[PathLike] = (),
) -> PackReport:
    """Write the packed folder ``out_dir`` (see the module doc); it replaces an earlier pack there.
    ``clap`` overrides the refine config's ``clap`` (a refine.yaml holding only it is written without one).
    The folder is also a Hugging Face Space of the demo (``space.write_space``), ``examples`` its clips."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not (out_dir / META).is_file() and any(out_dir.iterdir()):
        raise ConfigError(f"refusing to replace {out_dir}: it exists and is not a packed model (no {META})")
    for path in [train_config, model_file] + [p for p in (decode_config, refine_config, results, images) if p]:
        if not Path(path).exists():
            raise ConfigError(f"no such file or folder: {path}")
    configs = {CONFIG: read_yaml(train_config)}
    base_dirs = {CONFIG: Path(train_config).resolve().parent}
    if refine_config or clap:
        configs["refine.yaml"] = read_yaml(refine_config) if refine_config else {}
        base_dirs["refine.yaml"] = Path(refine_config).resolve().parent if refine_config else Path.cwd()
        if clap:
            configs["refine.yaml"]["clap"] = clap
    state = load_trainable(model_file)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = out_dir.with_name(f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}")
    stage.mkdir()
    try:
        references = collect_sources(configs, base_dirs, stage, max_source_bytes, resolve_revisions)
        from safetensors.torch import save_file

        save_file(state, str(stage / WEIGHTS), metadata={"format": "pt", "espnet_slam_aac": __version__})
        yaml_files = {"train_config": CONFIG}
        for file, conf in configs.items():
            (stage / file).write_text(yaml.safe_dump(conf, sort_keys=False, allow_unicode=True), encoding="utf-8")
        if "refine.yaml" in configs:
            yaml_files["refine_config"] = "refine.yaml"
        if decode_config:
            shutil.copy2(decode_config, stage / "decode.yaml")
            yaml_files["decode_config"] = "decode.yaml"
        if results:
            shutil.copy2(results, stage / RESULTS)
        if images:
            shutil.copytree(images, stage / IMAGES)
        for extra in extra_files:
            extra = Path(extra)
            if extra.name in {CONFIG, WEIGHTS, META, CARD, SOURCES}:
                raise ConfigError(f"extra file {extra} would overwrite the pack's own {extra.name}")
            (shutil.copytree if extra.is_dir() else shutil.copy2)(extra, stage / extra.name)
        n_params = sum(v.numel() for v in state.values())
        meta = build_meta(yaml_files, references, n_params, name, datasets)
        (stage / META).write_text(yaml.safe_dump(meta, sort_keys=False), encoding="utf-8")
        (stage / CARD).write_text(model_card(stage, meta, license), encoding="utf-8")
        write_space(stage, name or "", bool(configs.get("refine.yaml", {}).get("clap")), examples)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        stage.rename(out_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return PackReport(out_dir, references, n_params)


def build_meta(
    yaml_files: Dict[str, str],
    references: Iterable[Reference],
    n_params: int,
    name: Optional[str],
    datasets: Sequence[str],
) -> dict:
    import torch

    versions = {"python": platform.python_version(), "torch": str(torch.__version__), "espnet_slam_aac": __version__}
    for module in ("espnet", "transformers", "peft"):
        try:
            versions[module] = str(__import__(module).__version__)
        except ImportError:
            pass
    return {
        # espnet_model_zoo's keys: yaml_files are rewritten to absolute paths after download
        "files": {"model_file": WEIGHTS},
        "yaml_files": yaml_files,
        "timestamp": datetime.datetime.now().timestamp(),
        "name": name,
        "datasets": list(datasets),
        "trainable_parameters": n_params,
        "references": [ref.__dict__ for ref in references],
        **versions,
    }
