"""The file names of a packed model folder (see ``packaging/pack.py``), and sizes as people read them."""

from pathlib import Path

CONFIG, WEIGHTS, META, CARD, RESULTS = "config.yaml", "model.safetensors", "meta.yaml", "README.md", "RESULTS.md"
SOURCES, IMAGES = "sources", "images"


def size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
