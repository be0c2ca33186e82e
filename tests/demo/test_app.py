"""The demo page's content without a browser: what it shows for a clip is ``Speech2Caption``'s, the spectrogram
is the front end's input, and a clip that cannot be captioned is a message naming the upload, HTML-escaped."""

import json
import urllib.request

import pytest
import torch

from espnet_slam_aac.data.audio import load_audio
from espnet_slam_aac.errors import AudioError
from espnet_slam_aac.testing.browser import free_port, need


@pytest.fixture(scope="module")
def app():
    try:
        from espnet_slam_aac.demo import app
    except ImportError as err:
        need(f"Gradio is not installed ({err}): pip install -e '.[demo]'")
    return app


@pytest.fixture(scope="module")
def s2c(demo_pack):
    from espnet_slam_aac.inference.speech2caption import Speech2Caption

    return Speech2Caption.from_pretrained(demo_pack, refine=True, device="cpu", dtype="float32")


def test_the_page_shows_the_caption_and_every_candidate_of_speech2caption(app, s2c, clips):
    for clip in (clips.dog, clips.rain):
        shown = app.caption_clip(s2c, clip)
        want = s2c(*load_audio(clip))
        assert shown.caption == want.caption
        assert shown.rows == [
            [app.PICK if i == want.best else "", c.beam_size, c.text, f"{c.logprob:.3f}", f"{sim:.3f}"]
            for i, (c, sim) in enumerate(zip(want.candidates, want.similarities))
        ]
        assert [row[1] for row in shown.rows] == [2, 3]  # one row per beam size of decode.yaml
        assert shown.spectrogram.dtype.name == "uint8" and shown.spectrogram.shape[2] == 3
        assert "captioned in" in shown.summary and "hears the first" not in shown.summary
    assert "the model hears the first 10.24 s" in app.caption_clip(s2c, clips.long).summary
    assert app.headers(refine=True)[-1] == "CLAP similarity" and len(app.headers(refine=False)) == 4


def test_the_spectrogram_is_what_the_front_end_gives_the_encoder(app, s2c, clips):
    from espnet_slam_aac.demo.spectrogram import model_fbank

    for clip, frames in ((clips.dog, 1024), (clips.rain, 1024), (clips.long, 1198)):  # 12 s: 1198 frames
        prepared = s2c.prepare(*load_audio(clip))
        shown = model_fbank(s2c.frontend, prepared)
        heard, _ = s2c.frontend(prepared[None], torch.tensor([len(prepared)]))
        assert shown.shape == (frames, 128)
        torch.testing.assert_close(shown[:1024], heard[0], rtol=0, atol=1e-6)


def test_a_clip_that_cannot_be_captioned_is_a_message_naming_the_upload(app, s2c, clips, tmp_path):
    odd_name = tmp_path / "<b>broken.wav"  # Gradio renders messages as HTML
    odd_name.write_bytes(clips.broken.read_bytes())
    for path, says in (
        (odd_name, "cannot read audio file &lt;b&gt;broken.wav"),
        (clips.short, "audio shorter than one 25 ms frame"),
        (clips.nan, "audio file nan.wav holds NaN or infinite samples"),
    ):
        with pytest.raises(AudioError) as caught:
            app.caption_clip(s2c, path)
        error = app.page_error(str(path), caught.value)
        assert says in error.message and str(path.parent) not in error.message
        assert not error.print_exception  # the server's log gets no traceback for a user's clip


def test_the_server_runs_one_request_at_a_time_from_a_bounded_queue_and_sends_no_analytics(app, s2c):
    demo = app.build_demo(s2c)
    url = app.serve(demo, "127.0.0.1", free_port(), queue_size=3, block=False)
    try:
        with urllib.request.urlopen(f"{url}config", timeout=30) as response:
            config = json.loads(response.read())
        assert config["analytics_enabled"] is False and config["max_file_size"] == 100 * 1024**2
        # the queue's bounds as Gradio (pinned) keeps them: 3 requests may wait, one runs
        assert demo._queue.max_size == 3 and demo._queue.default_concurrency_limit == 1
    finally:
        demo.close()
