"""The demo page of a SLAM-AAC model: ``espnet-slam-aac demo``, and the Hugging Face Space a packed model is.

    s2c = Speech2Caption.from_pretrained("me/slam-aac-clotho", refine=True, beam_sizes="2..8")
    serve(build_demo(s2c, examples=["clip.wav"]), host="127.0.0.1", port=7860)

One clip in (uploaded or recorded; any format ``load_audio`` reads), out: the caption, every candidate (beam size,
log-probability, CLAP similarity when refining, the pick marked), the log-mel fbank the model sees (the end of
its 10.24 s input marked) and the time taken. A clip that cannot be captioned (unreadable, too short, NaN) is an
error message on the page, never a traceback, and the server goes on serving. One model, one device: requests
wait in one bounded queue and run one at a time.

Nothing reaches the network: Gradio's analytics (a version check at api.gradio.app, telemetry at huggingface.co)
are switched off before Gradio is imported, there is no share link, no server-side rendering (Node), and the
page's fonts and scripts are served by the app itself.
"""

import html
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read when a Blocks is built; set before anything imports gradio

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402

from espnet_slam_aac.data.audio import load_audio  # noqa: E402
from espnet_slam_aac.demo.spectrogram import FRAMES_PER_S, model_fbank, plot_fbank  # noqa: E402
from espnet_slam_aac.errors import SlamAACError  # noqa: E402

logger = logging.getLogger(__name__)

PICK = "✔"  # marks the candidate that is the caption
QUEUE_SIZE = 16  # requests waiting beyond the one running; more are told the app is busy
MAX_FILE_SIZE = "100mb"  # largest upload
TITLE = "SLAM-AAC audio captioning"


@dataclass
class DemoResult:
    caption: str
    rows: List[list]  # the candidate table, one row per candidate, ``headers`` order
    spectrogram: np.ndarray  # RGB image of the fbank the model sees
    summary: str  # Markdown: the clip, the time taken, the device


def headers(refine: bool) -> List[str]:
    return ["pick", "beam size", "caption", "log-probability"] + (["CLAP similarity"] if refine else [])


def caption_clip(s2c, path: os.PathLike) -> DemoResult:
    """Caption one audio file for the page; ``AudioError``/``SlamAACError`` say why a clip cannot be captioned."""
    start = time.perf_counter()
    wave, rate = load_audio(path)
    prepared = s2c.prepare(wave, rate)
    result = s2c.caption_prepared([prepared], [(wave, rate)])[0]
    took = time.perf_counter() - start
    rows = []
    for i, cand in enumerate(result.candidates):
        row = [PICK if i == result.best else "", cand.beam_size, cand.text, f"{cand.logprob:.3f}"]
        if result.similarities is not None:
            row.append(f"{result.similarities[i]:.3f}")
        rows.append(row)
    heard = s2c.frontend.target_length
    clip_s = wave.shape[0] / rate
    image = plot_fbank(model_fbank(s2c.frontend, prepared), heard, clip_s)
    how = "CLAP-Refine picked it" if s2c.clap is not None else f"the best of beam {s2c.options.text_beam_size}"
    summary = (
        f"**{clip_s:.2f} s**, {rate} Hz, {wave.shape[1]} channel(s); captioned in **{took:.2f} s** on "
        f"{s2c.device} ({how})"
    )
    if heard is not None and clip_s > heard / FRAMES_PER_S:
        summary += f"; the model hears the first {heard / FRAMES_PER_S:.2f} s"
    return DemoResult(result.caption, rows, image, summary)


def page_error(path: Optional[str], err: Exception) -> gr.Error:
    """The message shown on the page: the upload's file name, not the server's temporary path, HTML-escaped
    (Gradio renders it as HTML)."""
    message = str(err)
    if path is not None:
        message = message.replace(str(path), Path(path).name)
    return gr.Error(html.escape(message), duration=None, title="Cannot caption this clip", print_exception=False)


def build_demo(s2c, examples: Sequence[os.PathLike] = (), title: str = TITLE, about: str = "") -> gr.Blocks:
    """The page: audio in; caption, candidate table, spectrogram and timing out (event ``caption`` in the API)."""
    refine = s2c.clap is not None

    def run(path: Optional[str]):
        if not path:
            raise gr.Error("Upload or record a clip first.", title="No audio", print_exception=False)
        try:
            res = caption_clip(s2c, path)
        except SlamAACError as err:  # AudioError among them: the clip's fault, said on the page
            raise page_error(path, err) from None
        except Exception as err:  # a bug, not the user's clip: the traceback goes to the server's log only
            logger.exception("captioning %s failed", path)
            raise page_error(path, RuntimeError(f"captioning failed ({type(err).__name__}: {err})")) from None
        return res.caption, res.rows, res.spectrogram, res.summary

    beams = ", ".join(map(str, s2c.options.beam_sizes))
    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(f"# {title}\n{about}\nBeam sizes {beams}" + ("; CLAP-Refine picks the caption." if refine else "."))
        with gr.Row():
            with gr.Column():
                audio = gr.Audio(
                    sources=["upload", "microphone"],
                    type="filepath",
                    label="Audio clip",
                    elem_id="audio-in",
                    buttons=["download"],  # no "share": it posts to the Hub
                )
                button = gr.Button("Caption", variant="primary", elem_id="caption-btn")
                if examples:
                    gr.Examples([[str(p)] for p in examples], inputs=audio, label="Example clips", cache_examples=False)
            with gr.Column():
                caption = gr.Textbox(label="Caption", elem_id="caption-out", interactive=False, lines=2)
                summary = gr.Markdown(elem_id="summary")
        table = gr.Dataframe(
            headers=headers(refine), label="Candidates", elem_id="candidates", interactive=False, wrap=True
        )
        spectrogram = gr.Image(
            label="Log-mel fbank the model sees",
            type="numpy",
            elem_id="spectrogram",
            buttons=["download", "fullscreen"],
        )
        outputs = [caption, table, spectrogram, summary]
        button.click(run, inputs=audio, outputs=outputs, api_name="caption")
        # a new clip clears the last clip's results in the browser (no request), so none is shown beside an error
        empty = {"headers": headers(refine), "data": []}
        audio.change(None, outputs=outputs, js=f"() => ['', {empty!r}, null, '']", queue=False)
    return demo


def serve(
    demo: gr.Blocks,
    host: Optional[str] = None,
    port: Optional[int] = None,
    queue_size: int = QUEUE_SIZE,
    examples: Sequence[os.PathLike] = (),
    block: bool = True,
) -> str:
    """Start the server (Gradio's defaults, e.g. ``GRADIO_SERVER_NAME`` and ``GRADIO_SERVER_PORT`` on a Space,
    when ``host``/``port`` are None); returns its URL. ``block`` serves until interrupted."""
    demo.queue(max_size=queue_size, default_concurrency_limit=1)
    demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        ssr_mode=False,
        quiet=True,  # Gradio prints its URL on stdout, which carries data only; we log it
        prevent_thread_lock=True,
        max_file_size=MAX_FILE_SIZE,
        allowed_paths=sorted({str(Path(p).resolve().parent) for p in examples}),
    )
    logger.info("the demo is served at %s (Ctrl-C stops it)", demo.local_url)
    if block:
        demo.block_thread()
    return demo.local_url
