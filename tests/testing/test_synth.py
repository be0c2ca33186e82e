import json

import numpy as np
import soundfile

from espnet_slam_aac.testing import synth


def test_captions_name_the_events_in_order():
    events = (synth.Event("tone", "high", 2), synth.Event("clicks", "fast"))
    captions = synth.captions_for(events, 5)
    assert captions[0] == "a high tone beeps twice then fast clicks"
    assert len(captions) == 5 and len(set(captions)) >= 3


def test_corpus_is_real_audio_and_deterministic(tmp_path):
    a = synth.write_corpus(tmp_path / "a", n_clips=3, captions_per_clip=2, seed=3)
    b = synth.write_corpus(tmp_path / "b", n_clips=3, captions_per_clip=2, seed=3)
    rows_a = [json.loads(line) for line in a.read_text().splitlines()]
    rows_b = [json.loads(line) for line in b.read_text().splitlines()]
    assert [r["target"] for r in rows_a] == [r["target"] for r in rows_b]
    assert [r["key"] for r in rows_a] == [
        "clip0000_1",
        "clip0000_2",
        "clip0001_1",
        "clip0001_2",
        "clip0002_1",
        "clip0002_2",
    ]
    wave, rate = soundfile.read(rows_a[0]["source"])
    assert rate == 16000 and wave.shape == (64000,) and np.abs(wave).max() > 0.05
