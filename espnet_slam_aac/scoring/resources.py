"""Offline-first resources of the captioning metrics: Java, the jars and the models aac-metrics needs.

aac-metrics 0.5.4 looks for its jars under ``<cache>/aac-metrics/`` (``<cache>`` = ``--cache_dir``,
``$AAC_METRICS_CACHE_PATH`` or ``~/.cache``) and downloads them only through ``aac-metrics-download``.
This module finds what is there, links what is missing from other installed sources (the pycocoevalcap
1.2 wheel carries the PTB tokenizer, METEOR and SPICE jars, byte-identical to aac-metrics' downloads),
and says per component what is still missing and which command fetches it. It never downloads.

Java: any runtime from 8 up is accepted (aac-metrics itself refuses anything above 13 and cannot parse
Java 8's ``1.8.0_392``). From Java 9 on SPICE needs ``--add-opens`` flags; they go into a wrapper script
passed as the java executable, never into ``JDK_JAVA_OPTIONS`` (which breaks aac-metrics' version parser).
"""

import importlib.util
import os
import re
import shutil
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from espnet_slam_aac.errors import MetricResourceError

MIN_JAVA_MAJOR = 8
# Flags that let spice-1.0.jar (FST serialization in its LMDB cache) run on Java 9+.
SPICE_ADD_OPENS = tuple(
    f"--add-opens=java.base/{pkg}=ALL-UNNAMED"
    for pkg in ("java.lang", "java.util", "java.math", "java.net", "java.text", "java.util.concurrent")
)

PTB_JAR = "aac-metrics/stanford_nlp/stanford-corenlp-3.4.1.jar"
METEOR_JAR = "aac-metrics/meteor/meteor-1.5.jar"
METEOR_PARAPHRASE = "aac-metrics/meteor/data/paraphrase-en.gz"
SPICE_JAR = "aac-metrics/spice/spice-1.0.jar"
SPICE_LIB = "aac-metrics/spice/lib"
SPICE_CACHE = "aac-metrics/spice/cache"
# The jars aac-metrics' check_spice_install() requires in spice/lib; the pycocoevalcap wheel lacks the last two.
SPICE_LIB_JARS = (
    "ejml-0.23.jar",
    "fst-2.47.jar",
    "guava-19.0.jar",
    "hamcrest-core-1.3.jar",
    "jackson-core-2.5.3.jar",
    "javassist-3.19.0-GA.jar",
    "json-simple-1.1.1.jar",
    "junit-4.12.jar",
    "lmdbjni-0.4.6.jar",
    "lmdbjni-linux64-0.4.6.jar",
    "lmdbjni-osx64-0.4.6.jar",
    "lmdbjni-win64-0.4.6.jar",
    "Meteor-1.5.jar",
    "objenesis-2.4.jar",
    "SceneGraphParser-1.0.jar",
    "slf4j-api-1.7.12.jar",
    "slf4j-simple-1.7.21.jar",
    "stanford-corenlp-3.6.0.jar",
    "stanford-corenlp-3.6.0-models.jar",
)
# cache-relative target -> path inside the installed pycocoevalcap package
PYCOCOEVALCAP_FILES = {
    PTB_JAR: "tokenizer/stanford-corenlp-3.4.1.jar",
    METEOR_JAR: "meteor/meteor-1.5.jar",
    METEOR_PARAPHRASE: "meteor/data/paraphrase-en.gz",
    SPICE_JAR: "spice/spice-1.0.jar",
    **{f"{SPICE_LIB}/{name}": f"spice/lib/{name}" for name in SPICE_LIB_JARS},
}
SBERT_MODEL = "sentence-transformers/paraphrase-TinyBERT-L6-v2"  # aac-metrics' "paraphrase-TinyBERT-L6-v2"
ECHECKER_NAME = "echecker_clotho_audiocaps_base"
ECHECKER_BACKBONE = "bert-base-uncased"  # the model_type stored in the echecker checkpoint

# Resource components and the metrics that need them (the PTB tokenizer is added to every metric when
# the texts are PTB-tokenized, as aac-metrics does by default).
METRIC_COMPONENTS: Dict[str, Tuple[str, ...]] = {
    "bleu_1": (),
    "bleu_2": (),
    "bleu_3": (),
    "bleu_4": (),
    "rouge_l": (),
    "cider_d": (),
    "meteor": ("java", "meteor"),
    "spice": ("java", "spice"),
    "spider": ("java", "spice"),
    "spider_fl": ("java", "spice", "echecker"),
    "fense": ("sbert", "echecker"),
    "sbert_sim": ("sbert",),
    "fer": ("echecker",),
    "vocab": (),
}
FETCHABLE = ("ptb", "meteor", "spice", "sbert", "echecker")


@dataclass(frozen=True)
class JavaInfo:
    path: str  # the executable as found
    version: str  # as printed by ``java -version``
    major: int


@dataclass
class Component:
    """One resource group (``java``, ``ptb``, ``meteor``, ``spice``, ``sbert``, ``echecker``)."""

    name: str
    missing: List[str] = field(default_factory=list)  # what is absent, in words or paths
    fetch: str = ""  # the command that fetches it (needs network), or what to install

    @property
    def ok(self) -> bool:
        return not self.missing


@dataclass
class MetricResources:
    cache_dir: Path
    java: Optional[JavaInfo]
    components: Dict[str, Component]
    linked: List[Path] = field(default_factory=list)  # files this resolution linked into the cache

    def blocking(self, metric: str, ptb_tokenize: bool = True) -> List[Component]:
        """The missing components that keep ``metric`` from being computed."""
        names = list(METRIC_COMPONENTS[metric])
        if ptb_tokenize:
            names = ["java", "ptb"] + names
        return [self.components[n] for n in dict.fromkeys(names) if not self.components[n].ok]


def default_cache_dir() -> Path:
    """aac-metrics' cache root: ``$AAC_METRICS_CACHE_PATH`` or ``~/.cache``."""
    return Path(os.path.expanduser(os.environ.get("AAC_METRICS_CACHE_PATH") or "~/.cache"))


def parse_java_version(output: str) -> Tuple[str, int]:
    """(version string, major) from ``java -version`` output: ``1.8.0_392`` -> 8, ``17.0.15`` -> 17, ``21`` -> 21.

    Lines such as ``Picked up JDK_JAVA_OPTIONS: ...`` before the version line are skipped.
    """
    found = re.search(r'version "([^"]+)"', output)
    if not found:
        raise MetricResourceError(f"cannot read a Java version from `java -version` output: {output.strip()!r}")
    version = found.group(1)
    numbers = re.findall(r"\d+", version)
    if not numbers:
        raise MetricResourceError(f"cannot read a Java version from {version!r}")
    major = int(numbers[1]) if numbers[0] == "1" and len(numbers) > 1 else int(numbers[0])
    return version, major


def find_java(java: Optional[str] = None) -> JavaInfo:
    """The Java runtime: the ``java`` argument, else the first usable of ``$AAC_METRICS_JAVA_PATH``,
    ``java`` on PATH and ``$JAVA_HOME/bin/java``."""
    candidates = [java] if java else []
    if not java:
        if os.environ.get("AAC_METRICS_JAVA_PATH"):
            candidates.append(os.environ["AAC_METRICS_JAVA_PATH"])
        candidates.append("java")
        if os.environ.get("JAVA_HOME"):
            candidates.append(os.path.join(os.environ["JAVA_HOME"], "bin", "java"))
    tried = []
    for candidate in candidates:
        path = shutil.which(candidate)
        if path is None:
            tried.append(f"{candidate} (not found)")
            continue
        try:
            output = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as exc:
            tried.append(f"{path} ({exc})")
            continue
        version, major = parse_java_version(output.stderr + output.stdout)
        if major < MIN_JAVA_MAJOR:
            tried.append(f"{path} (Java {version}; {MIN_JAVA_MAJOR} or newer is needed)")
            continue
        return JavaInfo(path=path, version=version, major=major)
    raise MetricResourceError(
        "no usable Java runtime: tried " + "; ".join(tried) + ". METEOR, SPICE and the PTB tokenizer need "
        f"Java {MIN_JAVA_MAJOR}+: install one (e.g. `apt-get install openjdk-17-jre-headless`) or pass --java PATH."
    )


def write_java_wrapper(java: JavaInfo, directory: Path) -> str:
    """A script that runs ``java`` with SPICE's ``--add-opens`` flags (Java 9+); the plain path on Java 8."""
    if java.major < 9:
        return java.path
    script = Path(directory) / "java-spice"
    flags = " ".join(SPICE_ADD_OPENS)
    script.write_text(f'#!/bin/sh\nexec "{java.path}" {flags} "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(script)


def fetch_command(component: str, cache_dir: Optional[Path] = None) -> str:
    if component == "java":
        return "install Java 8+ (e.g. `apt-get install openjdk-17-jre-headless`) or pass --java PATH"
    metric = {"ptb": "ptb", "meteor": "meteor", "spice": "spice", "sbert": "fense", "echecker": "fense"}[component]
    command = f"espnet-slam-aac fetch-metric-resources --metrics {metric}"
    if cache_dir is not None and Path(cache_dir) != default_cache_dir():
        command += f" --cache_dir {cache_dir}"
    return command


def pycocoevalcap_dir() -> Optional[Path]:
    """Where the pycocoevalcap package is installed (a namespace package: found without importing it)."""
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def link_installed(cache_dir: Path, dry_run: bool = False) -> List[Tuple[Path, Path]]:
    """Link (or copy where links fail) jars from the installed pycocoevalcap wheel into the cache layout.

    Existing files are never replaced (a dangling link is). Returns (target, source) pairs linked, or that
    would be linked with ``dry_run``.
    """
    source_root = pycocoevalcap_dir()
    done = []
    if source_root is not None:
        for target_rel, source_rel in PYCOCOEVALCAP_FILES.items():
            target, source = cache_dir / target_rel, source_root / source_rel
            if target.exists() or not source.is_file():
                continue
            done.append((target, source))
            if dry_run:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink():  # dangling
                target.unlink()
            try:
                target.symlink_to(source)
            except OSError:
                shutil.copy2(source, target)
    return done


def _hf_cached(repo_id: str, filenames: Sequence[str]) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo_id, name), str) for name in filenames)


def echecker_path() -> Path:
    """Where aac-metrics looks for the FENSE error checker: ``$FENSE_DATA`` or ``<torch hub>/fense_data``."""
    if os.environ.get("FENSE_DATA"):
        return Path(os.path.expanduser(os.environ["FENSE_DATA"])) / f"{ECHECKER_NAME}.ckpt"
    import torch

    return Path(torch.hub.get_dir()) / "fense_data" / f"{ECHECKER_NAME}.ckpt"


def resolve(
    cache_dir: Optional[Path] = None, java: Optional[str] = None, link: bool = True, dry_run: bool = False
) -> MetricResources:
    """Find every resource, linking installed jars into the cache first (unless ``link=False`` or ``dry_run``)."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    linked = [t for t, _ in link_installed(cache_dir)] if link and not dry_run else []
    components = {name: Component(name, fetch=fetch_command(name, cache_dir)) for name in ("java",) + FETCHABLE}

    java_info = None
    try:
        java_info = find_java(java)
    except MetricResourceError as exc:
        components["java"].missing.append(str(exc))

    def need(component: str, *rel_paths: str) -> None:
        for rel in rel_paths:
            if not (cache_dir / rel).is_file():
                components[component].missing.append(str(cache_dir / rel))

    need("ptb", PTB_JAR)
    need("meteor", METEOR_JAR, METEOR_PARAPHRASE)
    need("spice", SPICE_JAR, *(f"{SPICE_LIB}/{name}" for name in SPICE_LIB_JARS))
    if not dry_run and (cache_dir / SPICE_JAR).is_file():  # aac-metrics' SPICE requires this folder
        (cache_dir / SPICE_CACHE).mkdir(parents=True, exist_ok=True)
    if not _hf_cached(SBERT_MODEL, ("modules.json", "config.json")):
        components["sbert"].missing.append(f"hub model {SBERT_MODEL} (not in the Hugging Face cache)")
    if not echecker_path().is_file():
        components["echecker"].missing.append(str(echecker_path()))
    if not _hf_cached(ECHECKER_BACKBONE, ("config.json",)):
        components["echecker"].missing.append(f"hub model {ECHECKER_BACKBONE} (not in the Hugging Face cache)")
    return MetricResources(cache_dir=cache_dir, java=java_info, components=components, linked=linked)
