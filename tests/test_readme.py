"""The README's examples run as written (with the model and clip names swapped for the test fixture's)."""

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "premove_packed"


def python_blocks(text: str):
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_python_api_example_runs_without_the_recipe_extra(tmp_path):
    block = next(b for b in python_blocks((ROOT / "README.md").read_text(encoding="utf-8")) if "load_audio" in b)
    assert "espnet_model_zoo" not in block  # the model zoo is the `recipe` extra's, shown apart
    code = block.replace('"me/slam-aac-clotho"', repr(str(FIXTURE / "model"))).replace(
        '"clip.wav"', repr(str(FIXTURE / "clips" / "clip0.wav"))
    )
    # a fresh interpreter in which espnet_model_zoo cannot be imported, as on an install without the extra
    guard = "import sys; sys.modules['espnet_model_zoo'] = None\n"
    done = subprocess.run(
        [sys.executable, "-c", guard + code], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    expected = json.loads((FIXTURE / "captions.json").read_text(encoding="utf-8"))["clip0.wav"]["caption"]
    assert done.stdout == expected + "\n"
