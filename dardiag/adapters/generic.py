"""Profile any ``nn.Module``: name its block list(s), say how to call it and which family it follows.

The sweep sees only a ``Subject``; this module builds one from four facts a user knows about their
network and dardiag cannot guess:

* ``blocks``: where the residual blocks are (a ``ModuleList`` path such as ``"blocks"``, several of
  them profiled in order, or single block paths);
* ``call(model, x_t, t_native, y, cond)``: how to run it on latents ``x_t`` (N, C, H, W) at the
  family's native timestep, returning the prediction (N, >= C, H, W);
* ``family``: the noise process, which fixes x_t, the target and the simple loss (dardiag.families);
* ``input_shape``: the (C, H, W) of one latent.

Probed states (diagnostics.md §2): ``z_0`` is the hidden state entering the first block (its first
positional argument or ``hidden_states=`` / ``x=`` keyword), ``z_k`` the output of block k. A block
that returns a tuple needs ``pick`` to say which element is the image stream.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from dardiag.errors import DardiagError
from dardiag.families import Family, get_family
from dardiag.hooks.edits import tap_editing
from dardiag.hooks.recorder import Tap
from dardiag.subject import SiteSpec, Subject

INPUT_KEYWORDS = ("hidden_states", "x")


def first_input(args: tuple, kwargs: dict) -> torch.Tensor:
    """The hidden state a block is called with: its first positional argument or a known keyword."""
    if args and torch.is_tensor(args[0]):
        return args[0]
    for key in INPUT_KEYWORDS:
        if torch.is_tensor(kwargs.get(key)):
            return kwargs[key]
    raise TypeError(
        f"cannot find the hidden state entering the first block (no positional tensor, no "
        f"{' / '.join(INPUT_KEYWORDS)} keyword; keywords seen: {sorted(kwargs)}); pass pick_input="
    )


def with_first_input(args: tuple, kwargs: dict, change: Callable) -> tuple[tuple, dict]:
    """(args, kwargs) with the hidden state :func:`first_input` finds replaced by ``change(it)``."""
    if args and torch.is_tensor(args[0]):
        return (change(args[0]), *args[1:]), kwargs
    for key in INPUT_KEYWORDS:
        if torch.is_tensor(kwargs.get(key)):
            return args, {**kwargs, key: change(kwargs[key])}
    first_input(args, kwargs)  # raises: no hidden state found
    return args, kwargs


def tensor_output(output) -> torch.Tensor:
    if torch.is_tensor(output):
        return output
    raise TypeError(
        f"a block returned a {type(output).__name__}, not a tensor; pass pick= to say which element "
        "is the hidden state (never assume it is the first)"
    )


def resolve_blocks(model: nn.Module, blocks: str | Sequence[str]) -> list[str]:
    """Block module paths, in profiling order: a ModuleList/Sequential path expands to its children."""
    names = [blocks] if isinstance(blocks, str) else list(blocks)
    if not names:
        raise DardiagError("blocks is empty; name the block list, e.g. blocks='blocks'")
    paths: list[str] = []
    for name in names:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            children = ", ".join(n for n, _ in model.named_children())
            raise DardiagError(
                f"{type(model).__name__} has no submodule {name!r}; its children are: {children}"
            ) from None
        if isinstance(module, (nn.ModuleList, nn.Sequential)):
            paths += [f"{name}.{i}" for i in range(len(module))]
        else:
            paths.append(name)
    if not paths:
        raise DardiagError(f"the block lists {names} are empty; nothing to profile")
    return paths


def block_taps(paths: Sequence[str], *, pick: Callable | None = None,
               pick_input: Callable | None = None) -> tuple[Tap, ...]:
    """z_0 = input of the first block (a pre tap), z_k = output of block k (k = 1..D)."""
    taps = [Tap("z_0", paths[0], pick=pick_input or first_input, pre=True)]
    taps += [Tap(f"z_{k}", path, pick=pick or tensor_output) for k, path in enumerate(paths, start=1)]
    return tuple(taps)


def as_family(family: str | Family) -> Family:
    if isinstance(family, Family):
        return family
    if family is None:
        raise DardiagError("pass family= (dit, sit, repa, flow1000 or a Family): it defines the loss")
    return get_family(family)


def prediction(out) -> torch.Tensor:
    """A model output as the prediction tensor: a tensor, or a diffusers output's ``.sample``."""
    if torch.is_tensor(out):
        return out
    if torch.is_tensor(getattr(out, "sample", None)):
        return out.sample
    raise TypeError(
        f"call returned a {type(out).__name__}; it must return the prediction tensor (N, >= C, H, W)"
    )


def generic_subject(
    model: nn.Module,
    *,
    blocks: str | Sequence[str],
    call: Callable,
    family: str | Family,
    input_shape: Sequence[int],
    num_classes: int = 0,
    name: str | None = None,
    pick: Callable | None = None,
    pick_input: Callable | None = None,
    make_cond: Callable | None = None,
    checkpoint: str = "",
    info: dict | None = None,
) -> Subject:
    """A Subject for any ``nn.Module`` with a list of residual blocks.

    ``call(model, x_t, t_native, y, cond)`` runs the model on latents ``x_t`` (N, C, H, W) at native
    timesteps ``t_native`` (N,) with class labels ``y`` (N,) and ``cond`` (whatever ``make_cond(N,
    sample_ids)`` returned, or None), and returns the prediction (N, >= C, H, W) — a tensor or an
    object with ``.sample``. ``family`` (a name from ``dardiag.families.FAMILIES`` or a ``Family``)
    defines the noise process and the simple loss whose gradient grad_rms measures. ``pick(output)``
    takes a block's output to its hidden state (needed when blocks return tuples); ``pick_input(args,
    kwargs)`` finds the state entering the first block.

    Example — REPA's own SiT class, whose forward returns ``(x, zs)`` (prediction, projected
    features for the alignment loss, which is not part of L). REPA checkpoint *files* need none of
    this: ``dardiag profile last.pt`` loads them into dardiag's DiT, which returns ``x`` only::

        from dardiag.adapters import generic_subject
        import dardiag

        subject = generic_subject(
            net, blocks="blocks", family="repa", input_shape=(4, 32, 32), num_classes=1000,
            call=lambda m, x_t, t, y, cond: m(x_t, t, y)[0],
        )
        df = dardiag.profile(subject, samples=64, noise_levels=[0.1, 0.5, 0.9])
    """
    if not isinstance(model, nn.Module):
        raise DardiagError(f"model must be an nn.Module, got {type(model).__name__}")
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise DardiagError(f"input_shape must be (C, H, W) of one latent, got {tuple(input_shape)}")
    paths = resolve_blocks(model, blocks)
    fam = as_family(family)

    def run(m, x_t, t_native, y, cond):
        return prediction(call(m, x_t, t_native, y, cond))  # (N, C_out, H, W)

    spec = SiteSpec(depth=len(paths), taps=block_taps(paths, pick=pick, pick_input=pick_input),
                     has_sublayers=False, routes={}, residual=True)
    return Subject(
        name=name or type(model).__name__,
        model=model,
        family=fam,
        spec=spec,
        routing="residual",
        input_shape=shape,
        num_classes=int(num_classes),
        call=run,
        checkpoint=checkpoint,
        info={"class_name": type(model).__name__, "family": fam.name, "blocks": paths,
              "depth": len(paths), **(info or {})},
        make_cond=make_cond,
        editing=tap_editing(model, spec.taps),  # ablation and caching by hooks on the block states
        blocks=tuple(paths),
    )
