"""The log-mel fbank a model sees, drawn for the demo page.

The features come from the model's own front end settings (``EATFbank``: rate, channel rule, resampler,
normalization) through ``eat_fbank``, so the picture is the encoder's input, not a look-alike. A clip shorter than
the front end's ``target_length`` is shown padded, as the model gets it; a longer one is shown whole (up to
``MAX_SHOWN_S``) with the end of what the model hears (10.24 s for SLAM-AAC) marked.
"""

from typing import Optional

import numpy as np
import torch

from espnet_slam_aac.data.audio import FRAME_SHIFT, SAMPLE_RATE, num_frames, resampled_length
from espnet_slam_aac.model.frontend import EATFbank, eat_fbank

FRAMES_PER_S = SAMPLE_RATE // FRAME_SHIFT  # 100
MAX_SHOWN_S = 60.0  # longer clips are drawn up to here (the model hears far less)
WHOLE_CLIP_FRAMES = 6016  # MAX_SHOWN_S in frames, rounded up to EAT's 16-frame patches


def model_fbank(frontend: EATFbank, wave: torch.Tensor) -> torch.Tensor:
    """Normalized fbank ``(frames, 128)`` of one clip already at ``frontend.fs`` and mono (``Speech2Caption.prepare``):
    the front end's input padded to ``target_length`` when the clip is shorter, else the whole clip (up to
    ``MAX_SHOWN_S``), of which the model hears the first ``target_length`` frames."""
    wave = wave[: int(MAX_SHOWN_S * frontend.fs)]
    settings = dict(
        channel=frontend.channel,
        resampler=frontend.resampler,
        norm_mean=frontend.norm_mean,
        norm_std=frontend.norm_std,
    )
    heard = frontend.target_length
    frames = num_frames(resampled_length(len(wave), frontend.fs))
    if heard is not None and frames <= heard:
        return eat_fbank(wave, frontend.fs, target_length=heard, max_frames=frontend.max_frames, **settings)
    return eat_fbank(wave, frontend.fs, target_length=None, max_frames=WHOLE_CLIP_FRAMES, **settings)[:frames]


def plot_fbank(fbank: torch.Tensor, heard_frames: Optional[int], clip_s: float) -> np.ndarray:
    """An RGB image (height, width, 3) of ``fbank`` over time, the end of the model's input marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    frames = fbank.shape[0]
    fig = Figure(figsize=(10, 3.2), dpi=100, layout="constrained")
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    extent = (0.0, frames / FRAMES_PER_S, 0, fbank.shape[1])
    image = ax.imshow(fbank.float().T.numpy(), origin="lower", aspect="auto", extent=extent, cmap="magma")
    fig.colorbar(image, ax=ax, pad=0.01, label="normalized log-mel")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mel bin")
    if heard_frames is None:
        ax.set_title(f"what the model hears: the whole clip ({clip_s:.2f} s)")
    else:
        heard_s = heard_frames / FRAMES_PER_S
        ax.axvline(heard_s, color="cyan", linewidth=2)
        if clip_s < heard_s:
            ax.axvspan(clip_s, heard_s, color="white", alpha=0.15, hatch="//")
            what = f"the clip ({clip_s:.2f} s) padded to {heard_s:.2f} s"
        else:
            ax.axvspan(heard_s, frames / FRAMES_PER_S, color="black", alpha=0.45)
            what = f"the first {heard_s:.2f} s of {clip_s:.2f} s (the rest is not heard)"
        ax.set_title(f"what the model hears: {what}")
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
