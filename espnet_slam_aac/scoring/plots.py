"""Figures of RESULTS.md (matplotlib, Agg backend): every decode of a set side by side, one axis per metric.

``plot_set``: one PNG per evaluation set. Each metric gets a small horizontal bar chart with the decodes in
the same order on every chart (1-best, each beam size, CLAP-Refine, the oracles, then the untrained
baseline where scored), so a decode is read across metrics on one line and decodes compare on one axis.
SPIDEr-max is drawn as a dashed line on the SPIDEr chart, the references' vocabulary on the vocab chart.
"""

import math
import os
import re
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple

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
    "vocab": "vocab",
}
# bar colours by kind of decode (tab10 / tab20c shades)
KIND_COLORS = {"1best": "#1f77b4", "beam": "#9ecae1", "refine": "#ff7f0e", "oracle": "#2ca02c", "baseline": "#7f7f7f"}


def decode_kind(name: str) -> str:
    if name == "1best":
        return "1best"
    if re.fullmatch(r"beam\d+", name):
        return "beam"
    if name.startswith("oracle_"):
        return "oracle"
    if name.startswith("untrained"):
        return "baseline"
    return "refine"


def scale(metric: str, value: float) -> float:
    """Scores are shown x100; vocab is a count."""
    return value if metric == "vocab" else 100 * value


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, png_path: Path) -> Path:
    """Save beside the target, then rename over it: a reader never sees half a PNG."""
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = png_path.with_name(f".{png_path.name}.{os.getpid()}.tmp.png")
    try:
        fig.savefig(tmp, dpi=120)
        os.replace(tmp, png_path)
    finally:
        tmp.unlink(missing_ok=True)
        _pyplot().close(fig)
    return png_path


def plot_set(
    set_name: str,
    n_clips: int,
    decodes: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str],
    png_path: Path,
    missing: Sequence[str] = (),
    marks: Optional[Mapping[str, Tuple[float, str]]] = None,
) -> Path:
    """``decodes``: name -> corpus scores, in the order shown; ``marks``: metric -> (value, label) drawn as a
    dashed line (e.g. SPIDEr-max, the references' vocabulary). Metrics in ``missing`` are named in the title."""
    plt = _pyplot()
    marks = marks or {}
    names = list(decodes)
    shown = [m for m in metrics if any(m in scores for scores in decodes.values())]
    cols = min(5, max(1, len(shown)))
    rows = max(1, math.ceil(len(shown) / cols))
    height = 0.9 + 0.22 * len(names)
    label_width = 0.075 * max(len(n) for n in names) + 0.3
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(label_width + 2.3 * cols, rows * height + 0.9),
        squeeze=False,
        sharey=True,
        layout="constrained",
    )
    y = list(range(len(names)))
    colors = [KIND_COLORS[decode_kind(n)] for n in names]
    for ax, metric in zip(axes.flat, shown):
        values = [decodes[n].get(metric) for n in names]
        numbers = [scale(metric, v) for v in values if v is not None]
        top = max(numbers + [marks[metric][0] if metric in marks else 0.0, 1e-9])
        ax.barh(y, [0.0 if v is None else scale(metric, v) for v in values], color=colors, height=0.75)
        for yi, value in zip(y, values):
            text = "n/a" if value is None else (f"{value:.0f}" if metric == "vocab" else f"{100 * value:.1f}")
            ax.text((0.0 if value is None else scale(metric, value)) + top * 0.02, yi, text, va="center", fontsize=6.5)
        if metric in marks:
            value, label = marks[metric]
            ax.axvline(value, color="#d62728", linestyle="--", linewidth=1)
            ax.text(value, -1.0, " " + label, color="#d62728", fontsize=6.5, ha="left", va="center")
        ax.set_xlim(0, top * 1.3)
        ax.set_title(DISPLAY[metric] + (" (lower is better)" if metric == "fer" else ""), fontsize=9)
        ax.tick_params(axis="x", labelsize=6.5)
        ax.grid(axis="x", linewidth=0.3, alpha=0.6)
        ax.set_axisbelow(True)
    for ax in axes[:, 0]:
        ax.set_yticks(y)
        ax.set_yticklabels(names, fontsize=7.5)
        ax.set_ylim(len(names) - 0.4, -1.6)
    for ax in list(axes.flat)[len(shown) :]:
        ax.axis("off")
    title = f"{set_name}: {n_clips} clips; scores x100, vocab in words"
    if missing:
        title += "\nmissing (see RESULTS.md): " + ", ".join(DISPLAY[m] for m in missing)
    fig.suptitle(title, fontsize=10)
    return _save(fig, png_path)


def set_figure_inputs(summary: Dict, baseline: Optional[Dict] = None) -> Dict:
    """``plot_set`` arguments from a ``scores.json`` summary; the baseline summary's 1-best (the untrained
    model's, when scored) joins as the last decode."""
    decodes = {name: d["corpus"] for name, d in summary["decodes"].items()}
    if baseline is not None and "1best" in baseline["decodes"]:
        decodes[f"{baseline.get('model') or 'baseline'} 1best"] = baseline["decodes"]["1best"]["corpus"]
    marks: Dict[str, Tuple[float, str]] = {}
    reach = summary.get("reach") or {}
    if reach.get("spider_max") is not None:
        marks["spider"] = (100 * reach["spider_max"], f"SPIDEr-max {100 * reach['spider_max']:.1f}")
    if summary.get("reference_vocab"):
        refs = summary["reference_vocab"]["one_per_clip"]
        marks["vocab"] = (refs, f"refs, 1 per clip: {refs:.0f}")
    return dict(
        set_name=summary["set"] + (f" ({summary['model']})" if summary.get("model") else ""),
        n_clips=summary["n_clips"],
        decodes=decodes,
        metrics=[m for m in summary["metrics"] if m not in summary["missing"]],
        missing=list(summary["missing"]),
        marks=marks,
    )


def plot_curve(
    weights: Sequence[float], values: Sequence[float], chosen: float, metric: str, title: str, png_path: Path
) -> Path:
    """The tuning curve of a fusion weight: the metric (x100) at each weight, the chosen one marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.0, 3.2), layout="constrained")
    ax.plot(list(weights), [scale(metric, v) for v in values], marker="o", color="#1f77b4")
    best = list(weights).index(chosen)
    ax.plot([chosen], [scale(metric, values[best])], marker="*", markersize=14, color="#d62728", linestyle="none")
    ax.annotate(
        f"chosen: {chosen:g} ({scale(metric, values[best]):.2f})",
        (chosen, scale(metric, values[best])),
        textcoords="offset points",
        xytext=(6, 6),
        fontsize=8,
    )
    ax.set_xlabel("LM weight w (score = CLAP similarity + w x mean token log-probability)", fontsize=8)
    ax.set_ylabel(DISPLAY.get(metric, metric) + (" x100" if metric != "vocab" else ""), fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.grid(linewidth=0.3, alpha=0.6)
    return _save(fig, png_path)
