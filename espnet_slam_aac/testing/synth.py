"""Synthesized clip-caption data: real audio files whose captions describe what was synthesized.

Each clip is a sequence of one or two sound events (beeping tones, sweeps, noise bursts, click trains)
on a quiet noise floor; its captions name the events in order. The vocabulary is small and the mapping
from sound to words is learnable, so a tiny captioner trained on it must beat an untrained one. Tests
and the mini recipe use it; nothing here is downloaded.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
import soundfile

COUNTS = {1: "once", 2: "twice", 3: "three times"}


@dataclass(frozen=True)
class Event:
    kind: str  # "tone" | "sweep" | "noise" | "clicks"
    variant: str  # tone: low/high; sweep: rising/falling; noise: loud/soft; clicks: fast/slow
    count: int = 1

    def phrases(self) -> List[str]:
        """Ways to say this event; the first is the canonical one."""
        if self.kind == "tone":
            times = COUNTS[self.count]
            return [f"a {self.variant} tone beeps {times}", f"a {self.variant} pitched beep sounds {times}"]
        if self.kind == "sweep":
            return [f"a {self.variant} sweep", f"a tone sweeps {'up' if self.variant == 'rising' else 'down'}"]
        if self.kind == "noise":
            return [f"a {self.variant} burst of noise", f"{self.variant} static hisses"]
        return [f"{self.variant} clicks", f"something clicks {'quickly' if self.variant == 'fast' else 'slowly'}"]


def render_event(event: Event, rng: np.random.Generator, sample_rate: int, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    if event.kind == "tone":
        freq = rng.uniform(200, 350) if event.variant == "low" else rng.uniform(1500, 2500)
        gate = np.zeros_like(t)
        slot = seconds / event.count
        for i in range(event.count):
            gate[(t >= i * slot + 0.1 * slot) & (t < i * slot + 0.6 * slot)] = 1.0
        return 0.5 * gate * np.sin(2 * np.pi * freq * t)
    if event.kind == "sweep":
        f0, f1 = (300.0, 3000.0) if event.variant == "rising" else (3000.0, 300.0)
        phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))
        return 0.5 * np.sin(phase) * np.hanning(len(t))
    if event.kind == "noise":
        level = 0.6 if event.variant == "loud" else 0.08
        return level * rng.standard_normal(len(t)) * np.hanning(len(t))
    period = 0.08 if event.variant == "fast" else 0.4
    out = np.zeros_like(t)
    width = max(1, int(0.003 * sample_rate))
    for start in np.arange(0.05, seconds - 0.01, period):
        i = int(start * sample_rate)
        out[i : i + width] = 0.9
    return out


def random_events(rng: np.random.Generator) -> Tuple[Event, ...]:
    choices = [
        lambda: Event("tone", str(rng.choice(["low", "high"])), int(rng.integers(1, 4))),
        lambda: Event("sweep", str(rng.choice(["rising", "falling"]))),
        lambda: Event("noise", str(rng.choice(["loud", "soft"]))),
        lambda: Event("clicks", str(rng.choice(["fast", "slow"]))),
    ]
    n = int(rng.integers(1, 3))
    picks = rng.choice(len(choices), size=n, replace=False)
    return tuple(choices[i]() for i in picks)


def captions_for(events: Sequence[Event], n: int) -> List[str]:
    """``n`` distinct captions of the same event sequence, canonical wording first."""
    joiners = [" then ", " followed by ", " and then "]
    out: List[str] = []
    for k in range(max(n, 1) * 4):
        words = [e.phrases()[(k >> i) & 1] for i, e in enumerate(events)]
        text = joiners[k % len(joiners)].join(words) if len(words) > 1 else words[0]
        if text not in out:
            out.append(text)
        if len(out) == n:
            break
    return out + [out[i % len(out)] for i in range(n - len(out))]


def synthesize_clip(
    rng: np.random.Generator, sample_rate: int = 16000, seconds: float = 4.0, channels: int = 1
) -> Tuple[np.ndarray, Tuple[Event, ...]]:
    """A float32 waveform ``(samples,)`` or ``(samples, channels)`` and the events it holds."""
    events = random_events(rng)
    span = seconds / len(events)
    wave = np.concatenate([render_event(e, rng, sample_rate, span) for e in events])
    wave = wave + 0.003 * rng.standard_normal(len(wave))
    wave = np.clip(wave, -1.0, 1.0).astype(np.float32)
    if channels > 1:
        wave = np.stack([wave * (1.0 - 0.1 * c) for c in range(channels)], axis=1)
    return wave, events


def write_corpus(
    out_dir: Path,
    n_clips: int,
    captions_per_clip: int = 1,
    seed: int = 0,
    sample_rate: int = 16000,
    seconds: float = 4.0,
    prefix: str = "clip",
) -> Path:
    """Write ``n_clips`` wav files and ``manifest.jsonl`` (reference format: key, source, target)."""
    out_dir = Path(out_dir)
    (out_dir / "wav").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    manifest = out_dir / "manifest.jsonl"
    with open(manifest, "w", encoding="utf-8") as f:
        for i in range(n_clips):
            wave, events = synthesize_clip(rng, sample_rate, seconds)
            path = (out_dir / "wav" / f"{prefix}{i:04d}.wav").resolve()
            soundfile.write(path, wave, sample_rate, subtype="PCM_16")
            for j, caption in enumerate(captions_for(events, captions_per_clip)):
                key = f"{prefix}{i:04d}" if captions_per_clip == 1 else f"{prefix}{i:04d}_{j + 1}"
                f.write(json.dumps({"key": key, "source": str(path), "target": caption}) + "\n")
    return manifest
