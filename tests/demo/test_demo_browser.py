"""``espnet-slam-aac demo`` in a real browser: the command serves a tiny packed model (with a CLAP and example
clips) and headless Chromium (Debian's, through Playwright) uses the page as a person would. The captions on the
page are ``Speech2Caption``'s; a broken upload is a message, after which the page still works; two browsers at
once both get their captions; nothing the page loads comes from outside the machine."""

import re

import pytest
import torch

from espnet_slam_aac.data.audio import load_audio
from espnet_slam_aac.testing import browser as ui


@pytest.fixture(scope="module")
def chromium():
    for module in ("gradio", "playwright"):
        try:
            __import__(module)
        except ImportError:
            ui.need(f"{module} is not installed: pip install -e '.[test,demo]'")
    path = ui.chromium()
    if path is None:
        ui.need("no Chromium: run tests/demo/install_browser.sh (Debian: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, headless=True)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def server(demo_pack, tmp_path_factory, chromium):
    args = ["--model", demo_pack, "--refine", "--device", "cpu", "--dtype", "float32", "--queue_size", "4"]
    demo = ui.DemoServer(list(map(str, args)), tmp_path_factory.mktemp("demo_server") / "server.log")
    yield demo
    demo.stop()
    assert "Traceback" not in demo.log.read_text(), demo.log.read_text()  # a user's bad clip is no crash


@pytest.fixture(scope="module")
def expected(demo_pack, clips):
    """What Speech2Caption says of each clip, decoded as the server does (CLAP-Refine over beams 2..8)."""
    from espnet_slam_aac.inference.speech2caption import Speech2Caption

    s2c = Speech2Caption.from_pretrained(demo_pack, refine=True, beam_sizes="2..8", device="cpu", dtype="float32")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the server (OMP_NUM_THREADS=1): the same sums, the same beams
    try:
        return {name: s2c(*load_audio(getattr(clips, name))) for name in ("dog", "rain")}
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def page(chromium):
    context = chromium.new_context(viewport={"width": 1280, "height": 1000})
    outside = []
    tab = context.new_page()
    tab.on("request", lambda r: None if r.url.startswith(("http://127.0.0.1", "data:", "blob:")) else outside.append(r))
    yield tab
    context.close()
    assert not outside, f"the page reached outside the machine: {[r.url for r in outside]}"


def check_result(page, want) -> None:
    from playwright.sync_api import expect

    expect(page.locator(ui.CAPTION)).to_have_value(want.caption, timeout=ui.TIMEOUT_MS)
    expect(page.locator("#candidates .virtual-row[role=row]")).to_have_count(len(want.candidates))
    rows = ui.table_rows(page)
    assert [row[1] for row in rows] == [str(b) for b in range(2, 9)]  # one row per beam size
    assert [row[2] for row in rows] == [c.text for c in want.candidates]
    assert [row[0] for row in rows].index("✔") == want.best  # the pick is marked
    assert [row[4] for row in rows] == [f"{s:.3f}" for s in want.similarities]


def test_a_clip_gets_the_caption_candidates_and_spectrogram_of_speech2caption(page, server, clips, expected, tmp_path):
    from playwright.sync_api import expect

    ui.open_app(page, server.url)
    ui.upload(page, clips.dog)
    page.locator(ui.BUTTON).click()
    check_result(page, expected["dog"])
    expect(page.locator("#spectrogram img")).to_be_visible()
    expect(page.locator("#summary")).to_contain_text(re.compile(r"2\.00 s.*captioned in \d+\.\d\d s on cpu"))
    page.screenshot(path=tmp_path / "demo.png", full_page=True)
    assert (tmp_path / "demo.png").stat().st_size > 10_000


def test_a_broken_upload_is_a_message_and_the_page_still_works(page, server, clips, expected, tmp_path):
    from playwright.sync_api import expect

    ui.open_app(page, server.url)
    ui.upload(page, clips.dog)
    page.locator(ui.BUTTON).click()
    expect(page.locator(ui.CAPTION)).to_have_value(expected["dog"].caption, timeout=ui.TIMEOUT_MS)
    for path, says in (
        (clips.broken, "cannot read audio file broken.wav: "),
        (clips.short, "audio shorter than one 25 ms frame"),
    ):
        ui.upload(page, path)
        expect(page.locator(ui.CAPTION)).to_have_value("")  # the last clip's results are gone
        page.locator(ui.BUTTON).click()
        message = page.locator(ui.ERROR_TEXT).last
        expect(message).to_contain_text(says, timeout=ui.TIMEOUT_MS)
        assert "Traceback" not in message.inner_text() and "/tmp" not in message.inner_text()
        assert page.locator(ui.CAPTION).input_value() == ""
        if path == clips.broken:
            shown = "() => getComputedStyle(document.querySelector('.toast-body.error')).opacity === '1'"
            page.wait_for_function(shown)  # faded in, for the screenshot
            page.screenshot(path=tmp_path / "error.png", full_page=True)
        ui.close_toasts(page)
    ui.upload(page, clips.rain)  # 44.1 kHz stereo: resampled and mixed as the caption command does
    page.locator(ui.BUTTON).click()
    check_result(page, expected["rain"])


def test_an_example_clip_of_the_packed_model_is_one_click_away(page, server, expected):
    ui.open_app(page, server.url)
    page.get_by_role("button", name="dog.wav").click()  # examples/ of the packed folder
    from playwright.sync_api import expect

    expect(page.locator(ui.AUDIO_LOADED)).to_have_count(1, timeout=ui.TIMEOUT_MS)
    page.locator(ui.BUTTON).click()
    check_result(page, expected["dog"])


def test_two_browsers_at_once_both_get_their_captions(chromium, server, clips, expected):
    contexts = [chromium.new_context() for _ in range(2)]
    pages = [context.new_page() for context in contexts]
    try:
        for tab, clip in zip(pages, (clips.dog, clips.rain)):
            ui.open_app(tab, server.url)
            ui.upload(tab, clip)
        for tab in pages:  # both requests are in the queue together
            tab.locator(ui.BUTTON).click()
        for tab, name, seconds in zip(pages, ("dog", "rain"), ("2.00 s", "3.00 s")):
            check_result(tab, expected[name])
            assert tab.locator("#summary").inner_text().startswith(seconds)  # its own clip's result
    finally:
        for context in contexts:
            context.close()
