"""Real text conditioning: prompts encoded by a pipeline's own text encoder(s), as its denoiser takes them.

The pipeline is loaded without its denoiser and VAE (``dardiag.checkpoints.diffusers_dir.text_encoders``,
offline), and its own ``encode_prompt`` runs, so every family's recipe
(CLIP + T5 for Flux and SD3, T5 for PixArt, Gemma for Sana, UMT5 for Wan, ...) is the pipeline's, not
a copy. The tensors it returns are matched by shape to the conditioning the denoiser's table entry
names (a text sequence (N, L, D_text) to ``encoder_hidden_states``, a vector (N, D_pool) to
``pooled_projections``); a pipeline whose outputs cannot be matched unambiguously is refused in one
line. Attention masks are not passed on: the sequences are padded as the pipeline pads them (Flux and
SD3 pass no mask either; PixArt and Sana pipelines do, so there padding tokens are attended here).

Legend: N prompts, L tokens, D width.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch

from dardiag.adapters.diffusers import TableAdapter, denoiser_folder, entry_for
from dardiag.checkpoints.diffusers_dir import build_on_meta, pipeline_components, read_config, text_encoders
from dardiag.errors import DardiagError


def wanted_shapes(pipeline: Path, text_tokens: int | None) -> tuple[str, dict[str, tuple[int, ...]]]:
    """-> (the denoiser's class, the conditioning its table entry names: {name: per-sample shape})."""
    folder, _ = denoiser_folder(pipeline)
    raw, class_name = read_config(folder)
    model = build_on_meta(folder, class_name, raw)
    entry, _ = entry_for(class_name, model, where=str(folder))
    adapter = TableAdapter(model, entry, raw, text_tokens=text_tokens)
    return class_name, adapter.cond_shapes()


def _load_pipeline(path: Path, device: str, dtype: torch.dtype):
    pipe = text_encoders(path, device, dtype)
    if not hasattr(pipe, "encode_prompt"):
        raise DardiagError(f"{path}: {type(pipe).__name__} has no encode_prompt; it takes no text prompts")
    return pipe


def _call_encode(pipe, prompts: list[str], device: str, max_length: int | None):
    params = inspect.signature(pipe.encode_prompt).parameters
    kwargs = {"device": torch.device(device)}
    for key, value in (("num_images_per_prompt", 1), ("do_classifier_free_guidance", False),
                       ("max_sequence_length", max_length)):
        if key in params and value is not None:
            kwargs[key] = value
    with torch.no_grad():
        out = pipe.encode_prompt(prompts, **kwargs)
    return out if isinstance(out, (tuple, list)) else (out,)


def match(outputs, wanted: dict[str, tuple[int, ...]], n: int) -> dict[str, torch.Tensor]:
    """Assign the float tensors ``encode_prompt`` returned (N rows) to the wanted names by shape."""
    found = [o for o in outputs if torch.is_tensor(o) and o.is_floating_point() and o.dim() >= 2 and o.shape[0] == n]
    out = {}
    for name, shape in wanted.items():
        hits = [o for o in found if o.dim() == len(shape) + 1 and o.shape[-1] == shape[-1]
                and (len(shape) == 2 or tuple(o.shape[1:]) == shape)]
        if len(hits) != 1:
            got = ", ".join(str(list(o.shape)) for o in found) or "no tensors"
            raise DardiagError(
                f"cannot tell which encode_prompt output is {name} {list(shape)} (it returned {got}); "
                "encode the prompts yourself and save {name: tensor} with torch.save"
            )
        out[name] = hits[0].float().cpu().contiguous()
    return out


def encode_prompts(prompts: list[str], pipeline: Path, *, device: str = "cpu", dtype: torch.dtype = torch.float32,
                   max_length: int | None = None) -> dict:
    """{name: (N, ...) tensor, ..., "meta": {...}}: what ``--inputs`` takes as conditioning."""
    pipeline = Path(pipeline)
    if not (pipeline / "model_index.json").is_file():
        raise DardiagError(f"--pipeline {pipeline}: not a diffusers pipeline folder (no model_index.json)")
    class_name, wanted = wanted_shapes(pipeline, max_length)
    if not wanted:
        raise DardiagError(f"{pipeline}: its denoiser {class_name} takes no text conditioning")
    pipe = _load_pipeline(pipeline, device, dtype)
    cond = match(_call_encode(pipe, prompts, device, max_length), wanted, len(prompts))
    for name, value in cond.items():
        if not torch.isfinite(value).all():
            raise DardiagError(f"{pipeline}: the text encoder returned NaN or inf for {name}; check its weights")
    encoders = [n for n in pipeline_components(pipeline) if n.startswith("text_encoder")]
    meta = {"source": f"prompts encoded by {pipeline.name} ({', '.join(encoders)})", "pipeline": str(pipeline),
            "denoiser": class_name, "prompts": prompts, "count": len(prompts),
            "shapes": {k: list(v.shape) for k, v in cond.items()}}
    return {**cond, "meta": meta}
