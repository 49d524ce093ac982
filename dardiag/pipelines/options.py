"""How a diffusers model's pipeline samples for a run, as one frozen value; attaching it to Subjects.

``PipelineOptions`` names the pipeline folder (for a transformer folder opened on its own), the prompts
and the pipeline's call sizes by its own names; the step count and guidance are the run's
``generate_steps`` / ``generate_cfg`` (``dardiag.engine.config``). :func:`attach_pipelines` gives every
diffusers Subject that needs a sampler (generated inputs, ``--trajectory``) its
:class:`~dardiag.pipelines.sampler.PipelineSampler`, which sizes the model's latents to what the
pipeline draws before the run is planned.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from dardiag.errors import DardiagError
from dardiag.pipelines.prompts import Prompts
from dardiag.pipelines.sampler import CallSettings, PipelineSampler
from dardiag.subject import Subject


@dataclass(frozen=True)
class PipelineOptions:
    """Every field None = the pipeline's own (its folder: the one the model was opened from)."""

    pipeline: str | None = None  # a pipeline folder (model_index.json) for a transformer opened alone
    prompts: str | tuple[str, ...] | None = None  # a prompt file, or the prompts themselves; None: built-in
    height: int | None = None  # pixels, as the pipeline's call takes them
    width: int | None = None
    num_frames: int | None = None  # frames as the pipeline counts them (not latent frames)
    call: tuple[tuple[str, Any], ...] = ()  # any other argument of the pipeline's call

    def __post_init__(self):
        if isinstance(self.call, dict):
            object.__setattr__(self, "call", tuple(sorted(self.call.items())))
        if self.prompts is not None and not isinstance(self.prompts, (str, Path)):
            object.__setattr__(self, "prompts", tuple(str(p) for p in self.prompts))
        CallSettings(height=self.height, width=self.width, num_frames=self.num_frames)  # validates sizes
        for key, _ in self.call:
            if key in ("prompt", "generator", "output_type", "return_dict", "latents", "prompt_embeds"):
                raise DardiagError(f"--call {key}=...: dardiag sets {key} itself")

    @property
    def given(self) -> bool:
        return any(v not in (None, ()) for v in dataclasses.asdict(self).values())

    def read_prompts(self) -> Prompts:
        if isinstance(self.prompts, tuple):
            return Prompts.of_list(self.prompts)
        return Prompts.read(self.prompts)

    @classmethod
    def fields(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}


def parse_call(items: Sequence[str] | None) -> tuple[tuple[str, Any], ...]:
    """``--call key=value`` items: values read as JSON (numbers, true/false, null, "strings"), else text."""
    out = []
    for item in items or ():
        key, sep, text = str(item).partition("=")
        if not sep or not key.strip().isidentifier():
            raise DardiagError(f"--call takes key=value (an argument of the pipeline's call), got {item!r}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        out.append((key.strip(), value))
    return tuple(out)


def attach_pipelines(subjects: list[Subject], options: PipelineOptions, *, needed: bool, seed: int, steps: int | None,
                     guidance: float | None, device, dtype: torch.dtype) -> None:
    """Give every diffusers Subject that can use one its pipeline sampler, when the run needs a sampler
    (``needed``); dardiag's own models keep their own sampler. One line for options nobody can use."""
    if not needed:
        if options.given:
            raise DardiagError("--prompts, --pipeline, --height, --width, --num-frames and --call set up the pipeline's "
                               "sampling: they go with --inputs generated or --trajectory")
        return
    prompts = None
    for s in subjects:
        folder = options.pipeline or s.info.get("pipeline")
        if s.sample is not None:  # dardiag's own DiT/SiT/REPA: its own sampler
            if options.pipeline:
                raise DardiagError(f"--pipeline: {s.name} is a dardiag checkpoint with its own sampler, not a "
                                   "diffusers transformer")
            continue
        if folder is None or "class_name" not in s.info:
            continue  # the engine says what is missing (no sampler) in one line
        prompts = prompts or options.read_prompts()
        settings = CallSettings(steps=steps, guidance=guidance, height=options.height, width=options.width,
                                num_frames=options.num_frames, extra=options.call)
        PipelineSampler(Path(folder), prompts, settings, seed=seed, device=str(device), dtype=dtype).attach(s)
