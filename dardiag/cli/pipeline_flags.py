"""The options that set up a diffusers pipeline's sampling, shared by ``profile``, ``generate`` and
``cache-eval``, and what they become."""

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
GUIDANCE = typer.Option(None, "--generate-cfg", help="the pipeline's guidance_scale (default: its own)")


def pipeline_options(pipeline, prompts, height, width, num_frames, call):
    """The flags above as the ``PipelineOptions`` a command hands on (paths as strings, ``--call`` parsed)."""
    from dardiag.pipelines.options import PipelineOptions, parse_call

    return PipelineOptions(pipeline=str(pipeline) if pipeline else None, prompts=str(prompts) if prompts else None,
                           height=height, width=width, num_frames=num_frames, call=parse_call(call))
