"""Fixtures of the recipe tests: a recipe dir linked into the real TEMPLATE, with a tiny packed model."""

from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def toy_recipe(tmp_path_factory, tiny_eat, tiny_llm) -> Callable[[str], Path]:
    """``toy_recipe(name)`` -> a new ``egs2/toy/aac1`` (aac.sh, utils, path.sh, cmd.sh linked to TEMPLATE's, a
    2-beam conf/decode.yaml) whose ``../../../tiny/packed`` is a tiny packed model (``--download_model``)."""
    from espnet_slam_aac.packaging.pack import pack
    from espnet_slam_aac.testing.tiny_model import make_experiment

    def make(name: str) -> Path:
        root = tmp_path_factory.mktemp(name)
        exp = make_experiment(root / "model", tiny_eat, tiny_llm)
        pack(exp / "config.yaml", exp / "valid.loss.best.pth", root / "tiny" / "packed", resolve_revisions=False)
        recipe = root / "egs2" / "toy" / "aac1"
        (recipe / "conf").mkdir(parents=True)
        for link in ("aac.sh", "utils", "path.sh", "cmd.sh"):
            (recipe / link).symlink_to(REPO / "egs2" / "TEMPLATE" / "aac1" / link)
        (recipe / "conf" / "decode.yaml").write_text("beam_sizes: [1, 2]\ntext_beam_size: 2\nmax_new_tokens: 4\n")
        return recipe

    return make
