"""Score files and ESPnet-style RESULTS.md with a bar chart per metric across decodes.

A scoring run writes, in its output directory:
- ``scores.json``: the summary (set, clips, references per clip, corpus scores of every decode, missing
  metrics with their fetch commands, text normalization, settings, environment); RESULTS.md is rendered
  from summaries only, so several sets can be gathered into one file later;
- ``scores.jsonl``: one line per (decode, clip): ``{"decode", "key", "hyp", "scores": {metric: value}}``;
- ``RESULTS.md`` and ``images/scores_<set>.png`` (``plots.plot_set``: every decode on one axis per metric).

A set scored for several models (``model``: e.g. the trained one and the ``untrained`` baseline) has one
table per model; its figure shows the trained model's decodes with the baseline's 1-best beside them.
"""

import datetime
import importlib.metadata
import json
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

from espnet_slam_aac.errors import SlamAACError
from espnet_slam_aac.scoring.metrics import ScoreReport
from espnet_slam_aac.scoring.plots import DISPLAY, plot_set, set_figure_inputs
from espnet_slam_aac.utils.config import read_yaml
from espnet_slam_aac.utils.fileio import write_atomically

# settings keys of a training config worth showing in RESULTS.md (top level, substring match)
BASELINE_MODEL = "untrained"  # the model whose 1-best joins the trained model's figure
MODEL_KEYS = ("frontend", "encoder", "projector", "decoder", "llm", "lora", "model", "prompt")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment(java_version: Optional[str] = None) -> Dict[str, str]:
    env = {
        "date": datetime.datetime.now().astimezone().strftime("%a %b %d %H:%M:%S %Z %Y"),
        "python version": sys.version.replace("\n", " "),
        "espnet-slam-aac version": _version("espnet-slam-aac"),
        "espnet version": _version("espnet"),
        "pytorch version": _version("torch"),
        "transformers version": _version("transformers"),
        "aac-metrics version": _version("aac-metrics"),
        "java version": java_version or "none",
        "platform": platform.platform(),
    }
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if commit.returncode == 0:
            env["espnet-slam-aac git hash"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return env


def summarize(
    report: ScoreReport,
    set_name: str,
    hyp_paths: Mapping[str, str],
    ref_dir: str,
    java_version: Optional[str] = None,
    settings: Optional[Mapping[str, Any]] = None,
    model: str = "",
    candidates_path: str = "",
) -> Dict[str, Any]:
    """The JSON-able summary of one scoring run (what ``scores.json`` holds)."""
    reach = report.reach
    return {
        "set": set_name,
        "model": model,
        "ref_dir": ref_dir,
        "n_clips": len(report.keys),
        "references_per_clip": {str(k): v for k, v in report.references_per_clip.items()},
        "metrics": list(report.metrics),
        "normalization": {
            "ptb_tokenize": report.normalization.ptb_tokenize,
            "strip_punctuation": report.normalization.strip_punctuation,
            "description": report.normalization.describe(),
        },
        "decodes": {
            name: {"hyp": hyp_paths.get(name, ""), "corpus": scores.corpus} for name, scores in report.decodes.items()
        },
        "missing": {m: {"reason": v.reason, "fetch": v.fetch} for m, v in report.missing.items()},
        "reference_vocab": report.reference_vocab,
        "reach": None
        if reach is None
        else {
            "candidates": candidates_path,
            "candidates_per_clip": {str(k): v for k, v in reach.candidates_per_clip.items()},
            "spider_max": reach.spider_max,
            "oracles": reach.oracles,
            "missing": reach.missing,
        },
        "settings": dict(settings or {}),
        "environment": environment(java_version),
    }


def write_scores(
    out_dir: Path, report: ScoreReport, hypotheses: Mapping[str, Mapping[str, str]], summary: Dict
) -> None:
    """``scores.json`` and ``scores.jsonl`` (per decode and clip; oracle captions from the report's picks,
    and a ``spider_max`` line per clip when computed), each written atomically."""
    out_dir = Path(out_dir)
    picks = report.reach.picks if report.reach is not None else {}

    def lines() -> Iterator[str]:
        for name, scores in report.decodes.items():
            for i, key in enumerate(report.keys):
                values = {m: v[i] for m, v in scores.sentences.items()}
                values.update({m: None for m in report.missing})
                hyp = hypotheses[name][key] if name in hypotheses else picks[name][key]
                yield json.dumps({"decode": name, "key": key, "hyp": hyp, "scores": values})
        if report.reach is not None and report.reach.spider_max is not None:
            for key, value in zip(report.keys, report.reach.spider_max_sentences):
                yield json.dumps({"decode": "spider_max", "key": key, "scores": {"spider_max": value}})

    write_atomically(out_dir / "scores.jsonl", lines())
    write_atomically(out_dir / "scores.json", [json.dumps(summary, indent=2)])


def find_summaries(paths: Sequence[Path]) -> List[Dict]:
    """Summaries from ``scores.json`` files, or from every ``scores.json`` of ours under the given dirs."""
    summaries = []
    for path in map(Path, paths):
        files = sorted(path.rglob("scores.json")) if path.is_dir() else [path]
        for file in files:
            summary = json.loads(file.read_text())
            if isinstance(summary, dict) and {"set", "decodes", "metrics", "missing"} <= set(summary):
                summaries.append(summary)
            elif not path.is_dir():
                raise SlamAACError(f"{file}: not a scores.json written by espnet-slam-aac score")
    if not summaries:
        raise SlamAACError(f"no scores.json of espnet-slam-aac score in {', '.join(map(str, paths))}")
    return summaries


def summarize_config(path: Path, keys: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Flatten a YAML config to ``{"a.b": value}`` (scalars and short lists), optionally only top-level
    keys containing one of ``keys``."""
    config = read_yaml(path)
    flat: Dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif not isinstance(value, list) or len(value) <= 8:
            flat[prefix] = value

    for key, value in config.items():
        if keys is None or any(k in str(key) for k in keys):
            walk(str(key), value)
    return flat


def _cell(metric: str, value: Optional[float]) -> str:
    if value is None:
        return "missing"
    return f"{value:.0f}" if metric == "vocab" else f"{100 * value:.2f}"


def _refs_text(refs_per_clip: Mapping[str, int]) -> str:
    parts = [f"{n} ({clips} clips)" for n, clips in sorted(refs_per_clip.items(), key=lambda kv: -int(kv[0]))]
    return ", ".join(parts)


def _table(
    rows: Mapping[str, Mapping[str, Optional[float]]], metrics: Sequence[str], first: str, absent: str = "missing"
) -> List[str]:
    lines = [
        f"|{first}|" + "|".join(DISPLAY[m] for m in metrics) + "|",
        "|---|" + "|".join("---:" for _ in metrics) + "|",
    ]
    for name, corpus in rows.items():
        lines.append(f"|{name}|" + "|".join(_cell(m, corpus.get(m)) if m in corpus else absent for m in metrics) + "|")
    return lines


def _reach_lines(summary: Dict) -> List[str]:
    """What the candidates could reach: the picks side by side on the metrics that judge them."""
    reach = summary.get("reach")
    if not reach:
        return []
    decodes = summary["decodes"]
    computed = [m for m in summary["metrics"] if m not in summary["missing"]]
    judged = set(reach["oracles"].values()) | {"spider", "spider_fl", "fense"}
    metrics = [m for m in computed if m in judged or m == "vocab"]
    counts = ", ".join(f"{n} ({clips} clips)" for n, clips in reach["candidates_per_clip"].items())
    lines = ["", f"#### What the candidates could reach (candidates per clip: {counts})"]
    rows = {}
    for name in ("1best", "clap_refine", *reach["oracles"]):
        if name in decodes:
            label = {"1best": "1best (the decode's 1-best)", "clap_refine": "clap_refine (CLAP-Refine pick)"}.get(
                name, f"{name} (best candidate by {DISPLAY.get(reach['oracles'].get(name, ''), '')})"
            )
            rows[label] = decodes[name]["corpus"]
    if reach.get("spider_max") is not None:
        rows["SPIDEr-max (best SPIDEr among each clip's candidates)"] = {"spider": reach["spider_max"]}
    if metrics and rows:
        lines += [""] + _table(rows, metrics, "pick", absent="")
    for name, reason in reach["missing"].items():
        lines.append(f"- {name}: not computed ({reason})")
    return lines


def render_results_md(summaries: Sequence[Dict], title: str = "", images: Optional[Mapping[str, str]] = None) -> str:
    """ESPnet-style RESULTS.md: environment, settings, then per set a table (decodes x metrics, x100)."""
    images = images or {}
    lines = [
        "<!-- Generated by espnet-slam-aac score (espnet_slam_aac/scoring/results.py) -->",
        "# RESULTS",
        "## Environments",
    ]
    env = summaries[0]["environment"] if summaries else environment()
    lines += [f"- {k}: `{v}`" for k, v in env.items()]
    lines += ["", f"## {title or 'Scores'}"]
    settings = summaries[0].get("settings", {}) if summaries else {}
    if settings:
        lines += ["### Settings"]
        for group, values in settings.items():
            if isinstance(values, dict):
                lines.append(f"- {group}:")
                lines += [f"  - {k}: `{v}`" for k, v in values.items()]
            else:
                lines.append(f"- {group}: `{values}`")
    for summary in summaries:
        metrics = summary["metrics"]
        model = f" ({summary['model']} model)" if summary.get("model") else ""
        lines += [
            "",
            f"### {summary['set']}{model}",
            f"- clips: {summary['n_clips']}; references per clip: {_refs_text(summary['references_per_clip'])}",
            f"- references: `{summary['ref_dir']}`; text normalization: {summary['normalization']['description']}",
            "",
        ]
        lines += _table({name: d["corpus"] for name, d in summary["decodes"].items()}, metrics, "decode")
        lines += ["", "Scores x100 (aac-metrics, all references of each clip)."]
        if "fer" in metrics:
            lines[-1] += " FER: percentage of captions with a detected fluency error (lower is better)."
        vocab = summary.get("reference_vocab")
        if vocab:
            lines[-1] += (
                f" vocab: distinct words of the decode after the text normalization; the references have "
                f"{vocab['all']:.0f} in all, {vocab['one_per_clip']:.1f} with one reference per clip "
                "(aac-metrics' vocab, averaged over random picks)."
            )
        lines += _reach_lines(summary)
        if summary["missing"]:
            lines += ["", "**Missing metrics** (not computed, not zero):"]
            by_cause: Dict[tuple, List[str]] = {}
            for metric, info in summary["missing"].items():
                by_cause.setdefault((info["reason"], info["fetch"]), []).append(DISPLAY[metric])
            for (reason, fetch), names in by_cause.items():
                item = f"- {', '.join(names)}: {reason}"
                lines.append(item + (f". Fetch with `{fetch}`" if fetch else ""))
        if summary["set"] in images and not summary.get("model") == BASELINE_MODEL:
            lines += ["", f"![scores on {summary['set']}]({images[summary['set']]})"]
    return "\n".join(lines) + "\n"


def _image_name(set_name: str) -> str:
    return "images/scores_" + re.sub(r"[^\w.-]+", "_", set_name) + ".png"


def write_results(md_path: Path, summaries: Sequence[Dict], title: str = "") -> List[Path]:
    """Write RESULTS.md and one ``images/scores_<set>.png`` per set next to it (ESPnet keeps a packed
    model's figures in ``images/``); returns the files written."""
    md_path = Path(md_path)
    by_set: Dict[str, Dict[str, Dict]] = {}
    for summary in summaries:
        by_set.setdefault(summary["set"], {})[summary.get("model", "")] = summary
    images, written = {}, []
    for set_name, models in by_set.items():
        baseline = models.get(BASELINE_MODEL)
        main = next((s for m, s in models.items() if m != BASELINE_MODEL), baseline)
        images[set_name] = _image_name(set_name)
        inputs = set_figure_inputs(main, baseline if baseline is not main else None)
        written.append(plot_set(png_path=md_path.parent / images[set_name], **inputs))
    write_atomically(md_path, [render_results_md(summaries, title, images).rstrip("\n")])
    return [md_path] + written
