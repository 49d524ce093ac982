"""A diffusers pipeline folder opened around the transformer dardiag already holds (``dardiag.pipelines``
samples with it).

The pipeline's own class (``model_index.json``'s ``_class_name``) is built offline from the folder with
the subject's model as its ``transformer``: the same object, so its hooks and taps see every call the
pipeline makes, and its weights are not read twice. Components the folder lacks (a tiny test pipeline
saved without a VAE) are passed as None; everything else (text encoders, tokenizers, scheduler, VAE) is
the folder's own, in the run's dtype and on its device.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dardiag.checkpoints.diffusers_dir import dtype_argument, pipeline_components, quiet_diffusers, read_json
from dardiag.errors import DardiagError

DENOISER = "transformer"


def pipeline_class(folder: Path) -> type:
    """The diffusers pipeline class a folder's ``model_index.json`` names; one line when there is none."""
    import diffusers

    index = folder / "model_index.json"
    if not index.is_file():
        raise DardiagError(f"{folder} is not a diffusers pipeline folder (no model_index.json); pass the folder "
                           "that holds model_index.json beside transformer/, or --pipeline DIR")
    name = read_json(index, "diffusers pipeline").get("_class_name")
    cls = getattr(diffusers, str(name), None)
    if not isinstance(cls, type) or not issubclass(cls, diffusers.DiffusionPipeline):
        raise DardiagError(f"{index} names {name!r}, not a pipeline class of diffusers {diffusers.__version__}; "
                           "upgrade diffusers or pass a pipeline folder it knows")
    return cls


def open_pipeline(folder: Path, transformer: nn.Module, *, device, dtype: torch.dtype = torch.float32):
    """The folder's pipeline with ``transformer`` as its denoiser, on ``device`` (its other components in
    ``dtype``), progress bars off; one line when diffusers cannot build it offline."""
    import inspect

    folder = Path(folder)
    cls = pipeline_class(folder)
    params = inspect.signature(cls.__init__).parameters
    if DENOISER not in params:
        raise DardiagError(f"{folder}: {cls.__name__} has no transformer component; dardiag runs pipelines of "
                           "diffusion transformers")
    present = pipeline_components(folder)
    absent = {k: None for k, p in params.items() if k not in ("self", DENOISER) and k not in present
              and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is inspect.Parameter.empty}
    try:
        with quiet_diffusers():
            pipe = cls.from_pretrained(str(folder), local_files_only=True, **dtype_argument(dtype),
                                       transformer=transformer, **absent)
    except Exception as e:  # noqa: BLE001 - whatever diffusers raises, the folder cannot be built here
        text = " ".join(f"{type(e).__name__}: {e}".split())[:200]
        raise DardiagError(f"{folder}: diffusers could not build {cls.__name__} offline from it ({text})") from None
    if getattr(pipe, DENOISER, None) is not transformer:
        raise DardiagError(f"{folder}: {cls.__name__} did not take dardiag's transformer as its own")
    for name, module in pipe.components.items():  # the transformer is already where the run put it
        if isinstance(module, nn.Module) and module is not transformer:
            module.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe
