"""A best-guess entry for a transformer class the table does not know.

The guess: the blocks are the model's largest ModuleList of identical blocks (or ``--blocks``), the
image stream is the element of a block's output with the image token count, the call passes the
latents, the timestep and whatever text inputs the forward's signature names (shapes from the config),
and the noise process is flow matching with sigma x 1000 (most recent classes). All of it is said in
one line with the flags that correct it.
"""

from __future__ import annotations

import inspect
from collections import Counter

import torch
from torch import nn

from dardiag.adapters.classes.spec import ClassEntry, Stack, Stream, cfg_get, patch2d, patch3d
from dardiag.errors import DardiagError

TEXT_DIM_KEYS = ("joint_attention_dim", "caption_channels", "cross_attention_dim", "text_dim", "text_embed_dim",
                 "cap_feat_dim", "text_hidden_dim")
POOLED_DIM_KEYS = ("pooled_projection_dim",)
GUESSED_FAMILY = "flow1000"


def largest_block_list(model: nn.Module) -> str | None:
    """The path of the ModuleList with the most children of one class (ties: the first found)."""
    best, size = None, 0
    for path, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module):
            kind, count = Counter(type(m) for m in module).most_common(1)[0]
            if count == len(module) and count > size:
                best, size = path, count
    return best


def _is_video(model: nn.Module, cfg: dict) -> bool:
    p = cfg.get("patch_size")
    return "3D" in type(model).__name__ or (isinstance(p, (list, tuple)) and len(p) == 3) or "patch_size_t" in cfg


def guess_entry(model: nn.Module, name: str, *, base: ClassEntry | None = None,
                blocks: tuple[str, ...] | None = None) -> tuple[ClassEntry, str]:
    """-> (an entry for ``model``, the guess in one line). ``base``: the table's entry when only the
    blocks are overridden (``--blocks`` on a known class keeps its call and family)."""
    cfg = dict(getattr(model, "config", {}) or {})
    stacks = tuple(blocks) if blocks else ()
    if not stacks:
        found = largest_block_list(model)
        if found is None:
            raise DardiagError(f"{name} has no ModuleList of blocks; dardiag profiles DiT-style block stacks")
        stacks = (found,)
    depth = sum(len(model.get_submodule(s)) if isinstance(model.get_submodule(s), nn.ModuleList) else 1
                for s in _checked(model, stacks))
    if base is not None:
        entry = ClassEntry(base.name, tuple(Stack(s, Stream(index=-1)) for s in stacks), base.family, base.forward,
                           cond=base.cond, tokens=base.tokens, video=base.video, text_tokens=base.text_tokens,
                           classes=base.classes, latent=base.latent, fixed=base.fixed, fit=base.fit)
        return entry, f"{name}: profiling the blocks given by --blocks: {', '.join(stacks)} ({depth} blocks)"
    video = _is_video(model, cfg)
    params = set(inspect.signature(type(model).forward).parameters)
    cond = _cond_shapes(params, cfg)
    entry = ClassEntry(
        name, tuple(Stack(s, Stream(index=-1)) for s in stacks), GUESSED_FAMILY, _forward(params),
        cond=cond, tokens=patch3d if video else patch2d, video=video, text_tokens=77,
        note="guessed entry (class not in dardiag's table)",
    )
    message = (
        f"{name} is not in dardiag's table; guessed: blocks {', '.join(stacks)} ({depth}, the largest list of "
        f"identical blocks), family {GUESSED_FAMILY}, {'video' if video else 'image'} latents; if wrong pass "
        "--blocks PATH[,PATH] and --family NAME, or use dardiag.adapters.generic.generic_subject"
    )
    return entry, message


def _checked(model: nn.Module, stacks):
    for s in stacks:
        try:
            model.get_submodule(s)
        except AttributeError:
            lists = [p for p, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m)]
            raise DardiagError(f"--blocks {s}: {type(model).__name__} has no such submodule; its block "
                               f"lists: {', '.join(lists) or 'none'}") from None
        yield s


def _cond_shapes(params: set, cfg: dict):
    text_dim = cfg_get(cfg, *TEXT_DIM_KEYS)
    pooled_dim = cfg_get(cfg, *POOLED_DIM_KEYS)

    def shapes(c: dict, L: int):
        out = {}
        if "encoder_hidden_states" in params and text_dim:
            out["encoder_hidden_states"] = (L, int(text_dim))
        if "pooled_projections" in params and pooled_dim:
            out["pooled_projections"] = (int(pooled_dim),)
        return out
    return shapes


def _forward(params: set):
    time_key = "timestep" if "timestep" in params else "timesteps" if "timesteps" in params else None

    def forward(m, x, t, y, cond):
        kwargs = {k: v for k, v in cond.items() if k in params}
        if time_key:
            kwargs[time_key] = t
        if "class_labels" in params and y is not None:
            kwargs["class_labels"] = y
        if "return_dict" in params:
            kwargs["return_dict"] = False
        try:
            out = m(x, **kwargs)
        except (TypeError, RuntimeError, ValueError, AttributeError) as e:
            raise DardiagError(
                f"the guessed call of {type(m).__name__} failed ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
                "profile it with dardiag.adapters.generic.generic_subject(model, blocks=..., call=...)"
            ) from None
        out = out[0] if isinstance(out, tuple) else getattr(out, "sample", out)
        if not torch.is_tensor(out) or out.shape[0] != x.shape[0]:
            raise DardiagError(f"the guessed call of {type(m).__name__} returned no prediction tensor; "
                               "profile it with dardiag.adapters.generic.generic_subject")
        return out
    return forward
