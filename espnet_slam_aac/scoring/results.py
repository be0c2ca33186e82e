"""Score files and ESPnet-style RESULTS.md with a bar chart per metric across decodes.

A scoring run writes, in its output directory:
- ``scores.json``: the summary (set, clips, references per clip, corpus scores of every decode, missing
  metrics with their fetch commands, text normalization, settings, environment); RESULTS.md is rendered
  from summaries only, so several sets can be gathered into one file later;
- ``scores.jsonl``: one line per (decode, clip): ``{"decode", "key", "hyp", "scores": {metric: value}}``;
- ``RESULTS.md`` and ``scores_<set>.png`` (matplotlib, Agg backend).
"""

import datetime
import importlib.metadata
import json
import math
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from espnet_slam_aac.errors import SlamAACError
from espnet_slam_aac.scoring.metrics import ScoreReport

DISPLAY = {
    "bleu_1": "BLEU-1",
    "bleu_2": "BLEU-2",
    "bleu_3": "BLEU-3",
    "bleu_4": "BLEU-4",
    "meteor": "METEOR",
    "rouge_l": "ROUGE-L",
    "cider_d": "CIDEr-D",
    "spice": "SPICE",
    "spider": "SPIDEr",
    "spider_fl": "SPIDEr-FL",
    "fense": "FENSE",
    "sbert_sim": "SBERT-sim",
    "fer": "FER",
}
# settings keys of a training config worth showing in RESULTS.md (top level, substring match)
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
) -> Dict[str, Any]:
    """The JSON-able summary of one scoring run (what ``scores.json`` holds)."""
    return {
        "set": set_name,
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
        "settings": dict(settings or {}),
        "environment": environment(java_version),
    }


def write_scores(
    out_dir: Path, report: ScoreReport, hypotheses: Mapping[str, Mapping[str, str]], summary: Dict
) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "scores.json").write_text(json.dumps(summary, indent=2) + "\n")
    with open(out_dir / "scores.jsonl", "w") as f:
        for name, scores in report.decodes.items():
            for i, key in enumerate(report.keys):
                values = {m: v[i] for m, v in scores.sentences.items()}
                values.update({m: None for m in report.missing})
                f.write(json.dumps({"decode": name, "key": key, "hyp": hypotheses[name][key], "scores": values}) + "\n")


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
    import yaml

    config = yaml.safe_load(Path(path).read_text()) or {}
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


def _cell(value: Optional[float]) -> str:
    return "missing" if value is None else f"{100 * value:.2f}"


def _refs_text(refs_per_clip: Mapping[str, int]) -> str:
    parts = [f"{n} ({clips} clips)" for n, clips in sorted(refs_per_clip.items(), key=lambda kv: -int(kv[0]))]
    return ", ".join(parts)


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
        lines += [
            "",
            f"### {summary['set']}",
            f"- clips: {summary['n_clips']}; references per clip: {_refs_text(summary['references_per_clip'])}",
            f"- references: `{summary['ref_dir']}`; text normalization: {summary['normalization']['description']}",
            "",
            "|decode|" + "|".join(DISPLAY[m] for m in metrics) + "|",
            "|---|" + "|".join("---:" for _ in metrics) + "|",
        ]
        for name, decode in summary["decodes"].items():
            lines.append(f"|{name}|" + "|".join(_cell(decode["corpus"].get(m)) for m in metrics) + "|")
        lines += ["", "Scores x100 (aac-metrics, all references of each clip)."]
        if "fer" in metrics:
            lines[-1] += " FER: percentage of captions with a detected fluency error (lower is better)."
        if summary["missing"]:
            lines += ["", "**Missing metrics** (not computed, not zero):"]
            by_cause: Dict[tuple, List[str]] = {}
            for metric, info in summary["missing"].items():
                by_cause.setdefault((info["reason"], info["fetch"]), []).append(DISPLAY[metric])
            for (reason, fetch), names in by_cause.items():
                item = f"- {', '.join(names)}: {reason}"
                lines.append(item + (f". Fetch with `{fetch}`" if fetch else ""))
        if summary["set"] in images:
            lines += ["", f"![scores on {summary['set']}]({images[summary['set']]})"]
    return "\n".join(lines) + "\n"


def plot_scores(summary: Dict, png_path: Path) -> Path:
    """One bar chart per metric (x100), one bar per decode; missing metrics named under the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    decodes = list(summary["decodes"])
    computed = [m for m in summary["metrics"] if m not in summary["missing"]]
    cols = min(4 if len(decodes) <= 5 else 3, max(1, len(computed)))
    rows = max(1, math.ceil(len(computed) / cols))
    width = max(3.0, 0.38 * len(decodes) + 1.0)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * width, rows * 2.9), squeeze=False, layout="constrained")
    colors = [plt.get_cmap("tab10")(i % 10) for i in range(len(decodes))]
    for ax, metric in zip(axes.flat, computed):
        values = [100 * summary["decodes"][d]["corpus"][metric] for d in decodes]
        bars = ax.bar(range(len(decodes)), values, color=colors)
        ax.set_title(DISPLAY[metric] + (" (lower is better)" if metric == "fer" else ""), fontsize=10)
        ax.set_xticks(range(len(decodes)))
        ax.set_xticklabels(decodes, rotation=45, ha="right", fontsize=8)
        top = max(values + [1e-9])
        ax.set_ylim(0, top * 1.2)
        ax.tick_params(axis="y", labelsize=8)
        for bar, value in zip(bars, values):
            ax.text(bar.get_x() + bar.get_width() / 2, value + top * 0.02, f"{value:.1f}", ha="center", fontsize=7)
    for ax in list(axes.flat)[len(computed) :]:
        ax.axis("off")
    title = f"{summary['set']}: {summary['n_clips']} clips, scores x100"
    if summary["missing"]:
        title += "\nmissing (see RESULTS.md): " + ", ".join(DISPLAY[m] for m in summary["missing"])
    fig.suptitle(title, fontsize=11)
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return png_path


def write_results(md_path: Path, summaries: Sequence[Dict], title: str = "") -> List[Path]:
    """Write RESULTS.md and one ``images/scores_<set>.png`` per set next to it (ESPnet keeps a packed
    model's figures in ``images/``); returns the files written."""
    md_path = Path(md_path)
    images = {s["set"]: "images/scores_" + re.sub(r"[^\w.-]+", "_", s["set"]) + ".png" for s in summaries}
    written = [plot_scores(s, md_path.parent / images[s["set"]]) for s in summaries]
    md_path.write_text(render_results_md(summaries, title, images))
    return [md_path] + written
