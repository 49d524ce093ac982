"""The options that set up a diffusers pipeline's sampling, shared by ``profile`` and ``generate``."""

from __future__ import annotations

import typer

PROMPTS = typer.Option(None, "--prompts", help="a text file, one prompt per line (# comments skipped); default: a "
                       "built-in list of 16 varied prompts")
PIPELINE = typer.Option(None, "--pipeline", help="the pipeline folder (model_index.json) of a transformer folder "
                        "opened on its own")
HEIGHT = typer.Option(None, "--height", help="the pipeline's height in pixels (default: its own)")
WIDTH = typer.Option(None, "--width", help="the pipeline's width in pixels (default: its own)")
NUM_FRAMES = typer.Option(None, "--num-frames", help="video pipelines: frames as the pipeline counts them "
                          "(--frames counts latent frames)")
CALL = typer.Option(None, "--call", help="any other argument of the pipeline's call, key=value (repeat; values "
                    "as JSON), e.g. --call max_sequence_length=256")
