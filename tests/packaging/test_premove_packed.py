"""A packed model made before the package was regrouped (issue 10) still loads and captions the same."""

import json
from pathlib import Path

from espnet_slam_aac import Speech2Caption, load_audio

FIXTURE = Path(__file__).parents[1] / "fixtures" / "premove_packed"


def test_a_model_packed_before_the_regrouping_gives_the_same_captions_and_candidates():
    expected = json.loads((FIXTURE / "captions.json").read_text())
    s2c = Speech2Caption.from_pretrained(str(FIXTURE / "model"))
    for name, want in expected.items():
        result = s2c(*load_audio(FIXTURE / "clips" / name))
        assert result.caption == want["caption"]
        assert [[c.beam_size, c.text] for c in result.candidates] == want["candidates"]
