"""``dardiag generate DIR --prompts P --out gen.pt``: a pipeline's own samples and conditioning, to a file.

The file is the ``dardiag latents`` format (``{"x0": latents in the transformer's layout (N, C, H, W)
or (N, C, F, H, W), "meta": {...}}``) plus the conditioning under the names ``dardiag prompts`` uses
(``encoder_hidden_states``, ``pooled_projections``, ``<name>_mask``, ...), so ``profile --inputs gen.pt``
measures exactly what a ``--inputs generated`` run measures (sample j: prompt j mod P, generator seed +
j). Drawn in calls of ``batch_size`` prompts; a stop keeps the finished calls beside OUT (a hidden
``.OUT.partial``) and the same command continues from them. OUT is written once, atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from dardiag.adapters.open import DTYPES, open_subject
from dardiag.adapters.options import LoadOptions
from dardiag.atomic import atomic_write
from dardiag.engine.devices import device_name
from dardiag.engine.inputs import make_inputs
from dardiag.errors import DardiagError
from dardiag.pipelines.options import PipelineOptions, attach_pipelines
from dardiag.runs import stop


def partial_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.partial")


def generate(model, out: str | Path, *, options: PipelineOptions | None = None, samples: int | None = None,
             seed: int = 0, batch_size: int = 4, steps: int | None = None, guidance: float | None = None,
             device: str = "auto", dtype: str = "float32", force: bool = False, load: LoadOptions | None = None,
             on_step: Callable[[int, int], None] | None = None, report: Callable[[str], None] | None = None) -> dict:
    """Generate with ``model``'s pipeline into ``out``; -> the written dict. ``on_step(done, total)`` counts
    sampler steps of all calls; ``report(line)`` gets what was decided before the work starts."""
    out = Path(out)
    if out.exists() and not force:
        raise DardiagError(f"--out {out} already exists; pass --force to replace it, or choose another name")
    if not out.parent.is_dir():
        raise DardiagError(f"--out {out}: the folder {out.parent} does not exist")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise DardiagError(f"--batch-size must be a positive integer, got {batch_size!r}")
    if dtype not in DTYPES:
        raise DardiagError(f"unknown --dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    device = device_name(device)
    load = (load or LoadOptions()).replace(weights_dtype=dtype)
    subject = open_subject(str(model), load, device=device, seed=seed)
    if "class_name" not in subject.info:
        raise DardiagError(f"{model}: dardiag generate runs a diffusers pipeline; for dardiag's own checkpoints use "
                           "`dardiag profile --inputs generated` or `dardiag sample`")
    options = options or PipelineOptions()
    attach_pipelines([subject], options, needed=True, seed=seed, steps=steps, guidance=guidance, device=device,
                     dtype=DTYPES[dtype])
    if subject.pipeline is None:
        raise DardiagError(f"{model} is a transformer folder without its pipeline: pass the pipeline folder "
                           "(model_index.json beside transformer/) or --pipeline DIR")
    inputs = make_inputs("generated", subject, samples, seed, chunk=batch_size)
    drawing = inputs.drawing
    if report is not None:
        report(f"{subject.pipeline.name} ({subject.pipeline.folder.name}): {inputs.count} samples, "
               f"{subject.pipeline.prompts.source}, {inputs.label}, latents {list(subject.input_shape)} per sample, "
               f"calls of {batch_size}")
    keep = partial_path(out)
    parts = _kept(keep, inputs.source)
    total = len(drawing.chunks) * drawing.steps
    done = [len(parts) * drawing.steps]
    halt = stop.current()

    def step() -> None:
        done[0] += 1
        if on_step is not None:
            on_step(done[0], total)

    for ci, sl in enumerate(drawing.chunks):
        if ci in parts:
            continue
        with halt.deferred("this batch of prompts"):
            parts[ci] = drawing.draw(sl, step)
            atomic_write(keep, lambda f: torch.save({"inputs": inputs.source, "parts": parts}, f))
    whole = inputs.fill([parts[i] for i in range(len(drawing.chunks))])
    obj = {**{k: v.contiguous() for k, v in whole.items()}, "y": inputs.y,  # y: a run on the file draws the same noise
           "meta": {**drawing.meta, "inputs": inputs.source, "kind": "generated", "count": inputs.count,
                    "shape": list(subject.input_shape), "denoiser": subject.info.get("class_name"),
                    "routing": subject.routing}}
    atomic_write(out, lambda f: torch.save(obj, f))
    keep.unlink(missing_ok=True)
    return obj


def _kept(path: Path, source: str) -> dict[int, dict]:
    """The calls a stopped run of the same command finished (none when they were for other settings)."""
    if not path.is_file():
        return {}
    try:
        state = torch.load(path, weights_only=True)
        return dict(state["parts"]) if state.get("inputs") == source else {}
    except Exception:  # noqa: BLE001 - a damaged file: drawn again
        return {}
