"""Real text conditioning: prompts encoded by a pipeline's own text encoder(s), as its denoiser takes them.

The pipeline is loaded without its denoiser and VAE (``dardiag.checkpoints.diffusers_dir.text_encoders``,
offline), and its own ``encode_prompt`` runs with the arguments its ``__call__`` would give it by default
(the text length of the call, not of ``encode_prompt``), so every family's recipe
(CLIP + T5 for Flux and SD3, T5 for PixArt, Gemma for Sana, UMT5 for Wan, ...) is the pipeline's, not
a copy. The tensors it returns are matched by shape to the conditioning the denoiser's table entry
names (a text sequence (N, L, D_text) to ``encoder_hidden_states``, a vector (N, D_pool) to
``pooled_projections``); a pipeline whose outputs cannot be matched unambiguously is refused in one
line. The sequences are padded as the pipeline pads them, and the padding masks it returns (integer or
bool (N, L), 1 = a real token: PixArt, Sana, LTX, HunyuanVideo, Lumina2, ...) are kept as
``<sequence name>_mask``, so that ``profile --cond`` masks the padding tokens as the pipeline's call
does. A mask is assigned only when that is unambiguous: one matched sequence of its length L and one
mask of that length, and only for a class whose call in dardiag passes a text mask; otherwise none is
kept and ``meta["mask_notes"]`` says why (the padding is then attended). Flux and SD3 pipelines return
no mask (their models attend the padding in sampling too).

Legend: N prompts, L tokens, D width.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch

from dardiag.adapters.diffusers import TableAdapter, denoiser_folder, entry_for
from dardiag.checkpoints.diffusers_dir import build_on_meta, pipeline_components, read_config, text_encoders
from dardiag.errors import DardiagError


def wanted_shapes(pipeline: Path, text_tokens: int | None) -> tuple[str, dict[str, tuple[int, ...]], bool]:
    """-> (the denoiser's class, the conditioning its table entry names: {name: per-sample shape},
    whether the entry's call passes text masks)."""
    folder, _ = denoiser_folder(pipeline)
    raw, class_name = read_config(folder)
    model = build_on_meta(folder, class_name, raw)
    entry, _ = entry_for(class_name, model, where=str(folder))
    adapter = TableAdapter(model, entry, raw, text_tokens=text_tokens)
    # the entries that pass a text mask build it with spec.mask in their forward; the others (Flux, and
    # guessed entries) would ignore a stored mask, and profile would refuse it
    return class_name, adapter.cond_shapes(), "mask" in entry.forward.__code__.co_names


def _load_pipeline(path: Path, device: str, dtype: torch.dtype):
    pipe = text_encoders(path, device, dtype)
    if not hasattr(pipe, "encode_prompt"):
        raise DardiagError(f"{path}: {type(pipe).__name__} has no encode_prompt; it takes no text prompts")
    return pipe


def call_defaults(pipe) -> dict:
    """The arguments ``encode_prompt`` shares with the pipeline's ``__call__``, at the call's defaults: what
    the call passes when a user gives nothing (Wan's call encodes 512 tokens where ``encode_prompt`` alone
    would take 226; Sana's call adds its instructions)."""
    own = inspect.signature(pipe.encode_prompt).parameters
    call = inspect.signature(pipe.__call__).parameters
    skip = {"prompt", "prompt_2", "prompt_3", "negative_prompt", "device", "num_images_per_prompt"}
    return {k: p.default for k, p in call.items() if k in own and k not in skip and not k.endswith("_embeds")
            and p.default is not inspect.Parameter.empty and p.default is not None}


def _call_encode(pipe, prompts: list[str], device: str, max_length: int | None):
    params = inspect.signature(pipe.encode_prompt).parameters
    kwargs = {**call_defaults(pipe), "device": torch.device(device)}
    for key, value in (("num_images_per_prompt", 1), ("do_classifier_free_guidance", False),
                       ("max_sequence_length", max_length)):
        if key in params and value is not None:
            kwargs[key] = value
    with torch.no_grad():
        out = pipe.encode_prompt(prompts, **kwargs)
    return out if isinstance(out, (tuple, list)) else (out,)


def match(outputs, wanted: dict[str, tuple[int, ...]], n: int) -> dict[str, torch.Tensor]:
    """Assign the float tensors ``encode_prompt`` returned (N rows) to the wanted names by shape:
    {name: the output itself} (not a copy: :func:`match_masks` tells sequences apart by identity)."""
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
        out[name] = hits[0]
    return out


def match_masks(outputs, picked: dict[str, torch.Tensor], n: int) -> tuple[dict[str, torch.Tensor], list[str]]:
    """-> ({"<name>_mask": (N, L) long, 1 = a real token}, why a mask was not kept): the integer or bool
    (N, L) tensors ``encode_prompt`` returned, each assigned to the text sequence of its length L when
    exactly one matched sequence and exactly one mask have that L."""
    masks = [o for o in outputs if torch.is_tensor(o) and not o.is_floating_point() and o.dim() == 2
             and o.shape[0] == n]
    sequences: dict[int, list[str]] = {}  # id(output) -> the names it was matched to (one tensor, several names)
    for name, value in picked.items():
        if value.dim() == 3:  # (N, L, D): a token sequence
            sequences.setdefault(id(value), []).append(name)
    length = {i: picked[names[0]].shape[1] for i, names in sequences.items()}  # id -> L
    out, notes, used = {}, [], set()
    for i, names in sequences.items():
        L = length[i]
        hits = [m for m in masks if m.shape[1] == L]
        rivals = [j for j in length if length[j] == L]
        if not hits:
            continue  # no mask of this length: the pipeline passes none (Flux, SD3)
        if len(hits) > 1 or len(rivals) > 1:
            notes.append(f"no padding mask for {', '.join(names)}: {len(hits)} masks and {len(rivals)} sequences "
                         f"of {L} tokens (ambiguous), so its padding is attended")
            used.update(id(m) for m in hits)
            continue
        m = hits[0]
        used.add(id(m))
        if not ((m == 0) | (m == 1)).all():
            notes.append(f"no padding mask for {', '.join(names)}: the pipeline's [N, {L}] mask holds values "
                         "other than 0 and 1, so its padding is attended")
            continue
        for name in names:
            out[f"{name}_mask"] = m.long().cpu().contiguous()  # (N, L)
    for m in masks:
        if id(m) not in used:
            notes.append(f"a mask {list(m.shape)} left out: no matched text sequence has {m.shape[1]} tokens")
    return out, notes


def encode_prompts(prompts: list[str], pipeline: Path, *, device: str = "cpu", dtype: torch.dtype = torch.float32,
                   max_length: int | None = None) -> dict:
    """{name: (N, ...) tensor, ..., "meta": {...}}: what ``--inputs`` takes as conditioning."""
    pipeline = Path(pipeline)
    if not (pipeline / "model_index.json").is_file():
        raise DardiagError(f"--pipeline {pipeline}: not a diffusers pipeline folder (no model_index.json)")
    class_name, wanted, masked = wanted_shapes(pipeline, max_length)
    if not wanted:
        raise DardiagError(f"{pipeline}: its denoiser {class_name} takes no text conditioning")
    pipe = _load_pipeline(pipeline, device, dtype)
    outputs = _call_encode(pipe, prompts, device, max_length)
    picked = match(outputs, wanted, len(prompts))
    cond = {k: v.float().cpu().contiguous() for k, v in picked.items()}
    for name, value in cond.items():
        if not torch.isfinite(value).all():
            raise DardiagError(f"{pipeline}: the text encoder returned NaN or inf for {name}; check its weights")
    masks, notes = match_masks(outputs, picked, len(prompts))
    if masks and not masked:  # the pipeline masks, dardiag's call of this class does not
        notes.append(f"{', '.join(sorted(masks))} left out: dardiag calls {class_name} without a text mask")
        masks = {}
    encoders = [n for n in pipeline_components(pipeline) if n.startswith("text_encoder")]
    meta = {"source": f"prompts encoded by {pipeline.name} ({', '.join(encoders)})", "pipeline": str(pipeline),
            "denoiser": class_name, "prompts": prompts, "count": len(prompts),
            "shapes": {k: list(v.shape) for k, v in {**cond, **masks}.items()},
            "masks": sorted(masks), "mask_notes": notes}
    return {**cond, **masks, "meta": meta}
