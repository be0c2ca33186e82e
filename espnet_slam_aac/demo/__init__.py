"""The demo page of a model (``espnet-slam-aac demo``): a Gradio app that needs the ``demo`` extra."""
