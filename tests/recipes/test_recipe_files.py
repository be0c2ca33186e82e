"""Recipe scripts are run as ./NAME: every script with a shebang in egs2/ is executable in the checkout."""

import os
from pathlib import Path

EGS2 = Path(__file__).resolve().parents[2] / "egs2"


def test_every_recipe_script_with_a_shebang_is_executable():
    scripts = [p for p in EGS2.rglob("*") if p.is_file() and not p.is_symlink() and p.suffix in (".sh", ".py", "")]
    with_shebang = [p for p in scripts if p.read_bytes()[:2] == b"#!"]
    assert len(with_shebang) > 10
    assert [str(p.relative_to(EGS2)) for p in with_shebang if not os.access(p, os.X_OK)] == []
