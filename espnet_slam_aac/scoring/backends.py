"""The external scorers behind the metrics: the PTB tokenizer, METEOR and SPICE (Java) and FENSE (models).

Each runs once per scoring run on the unique (clip, hypothesis) pairs of every decode and candidate: their
per-clip scores do not depend on other clips. ``Meteor`` keeps one METEOR process open so that statistics
computed while SPICE runs can be turned into corpus scores later, for decodes chosen only then (oracles).
"""

import contextlib
import importlib
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Sequence, Tuple

import numpy as np

from espnet_slam_aac.errors import MetricResourceError
from espnet_slam_aac.scoring.resources import METEOR_JAR, MetricResources, write_java_wrapper


@dataclass
class FenseModels:
    """FENSE/FER/SBERT models: aac-metrics names (default) or loaded objects (tests, custom checkpoints)."""

    sbert: Any = "paraphrase-TinyBERT-L6-v2"
    echecker: Any = "echecker_clotho_audiocaps_base"
    echecker_tokenizer: Any = None

    @property
    def injected(self) -> bool:
        return not isinstance(self.sbert, str) and not isinstance(self.echecker, str)


@contextlib.contextmanager
def java_accepted() -> Iterator[None]:
    """Let aac-metrics' PTB tokenizer and SPICE run on the Java we resolved (8+, any version format).

    aac-metrics 0.5.4 re-runs ``java -version`` before each call and accepts only 8-13 in the
    ``MAJOR.MINOR`` format (Java 8's ``1.8.0_392`` raises). Our own check (``metric_resources.find_java``)
    has already accepted the runtime, so the name those modules call is replaced for the duration.
    """
    # import_module: ``aac_metrics.functional.spice`` the attribute is the function, not the module
    spice_module = importlib.import_module("aac_metrics.functional.spice")
    tokenization = importlib.import_module("aac_metrics.utils.tokenization")
    saved = tokenization.check_java_path, spice_module.check_java_path
    tokenization.check_java_path = spice_module.check_java_path = lambda java_path: True
    try:
        yield
    finally:
        tokenization.check_java_path, spice_module.check_java_path = saved


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    import huggingface_hub.constants as hub_constants

    saved = hub_constants.HF_HUB_OFFLINE
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = saved


def ptb_tokenize(sentences: List[str], resources: MetricResources) -> Dict[str, str]:
    """Each unique sentence -> its PTB-tokenized form (aac-metrics' ``preprocess_mono_sents``), one Java call."""
    from aac_metrics.utils.tokenization import preprocess_mono_sents

    unique = list(dict.fromkeys(sentences))
    with java_accepted():
        tokenized = preprocess_mono_sents(unique, cache_path=str(resources.cache_dir), java_path=resources.java.path)
    return dict(zip(unique, tokenized))


class Meteor:
    """METEOR 1.5 as aac-metrics runs it (same command and line encoding), one process for a whole run.

    ``stats(cands, mrefs)``: one ``SCORE`` line per pair -> its statistics line; ``evaluate({name: stats})``:
    one ``EVAL`` line per decode -> (corpus score, per-clip scores), METEOR's corpus score coming from the
    summed statistics of that decode only. Use as a context manager (the process is killed on exit).
    """

    def __init__(self, resources: MetricResources):
        self.command = [
            resources.java.path,
            "-Duser.country=US",
            "-Duser.language=en",
            "-jar",
            "-Xmx2G",
            str(resources.cache_dir / METEOR_JAR),
            "-",
            "-",
            "-stdio",
            "-l",
            "en",
            "-norm",
        ]
        self._stderr = tempfile.TemporaryFile()
        self._process = subprocess.Popen(
            self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr
        )

    def __enter__(self) -> "Meteor":
        return self

    def __exit__(self, *exc: Any) -> None:
        with contextlib.suppress(BrokenPipeError):  # unsent lines of a process that already ended
            self._process.stdin.close()
        self._process.kill()
        self._process.wait()
        self._stderr.close()

    def _stopped(self) -> MetricResourceError:
        self._stderr.seek(0)
        return MetricResourceError(
            f"METEOR ({' '.join(self.command)}) stopped: {self._stderr.read().decode(errors='replace')[-2000:]}"
        )

    def _ask(self, lines: List[bytes], answers: int) -> List[str]:
        """Write all lines from a thread while reading the answers here: no round trip per line, and
        neither side blocks on a full pipe."""
        process = self._process

        def write() -> None:
            try:
                for line in lines:
                    process.stdin.write(line)
                process.stdin.flush()
            except BrokenPipeError:
                pass  # the reader below sees the process end

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        out = [process.stdout.readline().decode().strip() for _ in range(answers)]
        writer.join()
        if not all(out):
            raise self._stopped()
        return out

    def stats(self, cands: Sequence[str], mrefs: Sequence[Sequence[str]]) -> List[str]:
        from aac_metrics.functional.meteor import _encode_cand_and_refs

        return self._ask([_encode_cand_and_refs(c, list(r)) for c, r in zip(cands, mrefs)], len(cands))

    def evaluate(self, stats: Mapping[str, Sequence[str]]) -> Dict[str, Tuple[float, List[float]]]:
        evals = [f"EVAL ||| {' ||| '.join(lines)}\n".encode() for lines in stats.values()]
        out = iter(self._ask(evals, sum(len(lines) + 1 for lines in stats.values())))
        results = {}
        for name, lines in stats.items():
            sentences = [float(next(out)) for _ in lines]
            results[name] = (float(next(out)), sentences)
        return results


def spice(cands: List[str], mrefs: List[List[str]], resources: MetricResources) -> np.ndarray:
    """Per-pair SPICE (aac-metrics' ``spice`` with the ``--add-opens`` java wrapper)."""
    from aac_metrics.functional.spice import spice as aac_spice

    with tempfile.TemporaryDirectory() as tmp, java_accepted():
        java = write_java_wrapper(resources.java, Path(tmp))
        _, sents = aac_spice(cands, mrefs, cache_path=str(resources.cache_dir), java_path=java, tmp_path=tmp)
    return sents["spice"].numpy()


def fense(
    cands: List[str], mrefs: List[List[str]], wanted: set, models: FenseModels, device: str
) -> Dict[str, np.ndarray]:
    """Per-pair sbert_sim / fer / fense, loading each model once for all decodes."""
    from aac_metrics.functional.fense import fense as aac_fense
    from aac_metrics.functional.fer import fer
    from aac_metrics.functional.sbert_sim import sbert_sim

    common = dict(device=device, return_all_scores=True)
    echecker = dict(echecker=models.echecker, echecker_tokenizer=models.echecker_tokenizer)
    with hub_offline():
        if "sbert_sim" in wanted and "fer" in wanted:
            _, sents = aac_fense(cands, mrefs, sbert_model=models.sbert, **echecker, **common)
        elif "fer" in wanted:
            _, sents = fer(cands, **echecker, **common)
        else:
            _, sents = sbert_sim(cands, mrefs, sbert_model=models.sbert, **common)
    return {k: v.cpu().numpy() for k, v in sents.items() if k in ("sbert_sim", "fer", "fense")}
