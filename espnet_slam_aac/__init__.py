"""SLAM-AAC (LLM-based automated audio captioning) as an ESPnet plugin."""

__version__ = "0.1.0"
