"""dardiag's own DiT as a Subject: official DiT/SiT/REPA checkpoints and the models dardiag trains.

The DiT names its sites itself (``model.site_layout()``), so residual and DAR routing look the
same from outside: z_k, h_l, v_l and, for DAR, the routing weights alpha_l.
"""

from __future__ import annotations

from dardiag.families import DIT_FAMILIES, get_family
from dardiag.hooks.edits import Editing
from dardiag.hooks.recorder import Tap
from dardiag.sampler import sample
from dardiag.subject import SiteSpec, Subject


def _dit_call(model, x_t, t_native, y, cond):
    return model(x_t, t_native, y)


def _sampler(model, family: str):
    """The Subject's ``sample(y, steps, cfg, seed, forward=None)``: DDIM for dit, Euler for sit and repa."""
    if family not in DIT_FAMILIES:
        return None

    def draw(y, steps: int, cfg: float, seed: int, forward=None):
        y = y.to(next(model.parameters()).device)
        return sample(model, family, y, steps=steps, cfg_scale=cfg, seed=seed, forward=forward)  # (N, C, H, W)

    draw.label = "DDIM" if get_family(family).prediction == "epsilon" else "Euler"
    return draw


def _sublayer_outputs(recorded, k: int):
    return recorded[f"v_{2 * k - 1}"], recorded[f"v_{2 * k}"]  # two (N, T, D)


def dit_editing(model) -> Editing:
    """A block's contribution is its two gated sublayer outputs (residual: their sum is z_k - z_{k-1});
    the DiT applies edits in its own forward, so a block edited for the whole batch is not computed."""
    D = model.config.depth
    return Editing(edit=model.edited, parts=_sublayer_outputs, part_taps=tuple(f"v_{l}" for l in range(1, 2 * D + 1)),
                   additive=model.config.routing == "residual")


def dit_subject(model, info, *, name: str | None = None) -> Subject:
    """A Subject for a ``dardiag.models.DiT`` and its ``ModelInfo`` (from ``load_model`` or ``in_memory``)."""
    layout = model.site_layout()
    taps = [Tap(n.split(".")[-1], n) for n in layout.states + layout.inputs + layout.outputs]
    taps += [Tap(f"alpha_{l}", path) for l, (path, _) in layout.routes.items()]
    cfg = model.config
    spec = SiteSpec(
        depth=layout.depth,
        taps=tuple(taps),
        has_sublayers=True,
        routes={l: srcs for l, (_, srcs) in layout.routes.items()},
        residual=cfg.routing == "residual",
    )
    return Subject(
        name=name or info.name,
        model=model,
        family=get_family(info.family),
        spec=spec,
        routing=cfg.routing_name,
        input_shape=(cfg.in_channels, cfg.input_size, cfg.input_size),
        num_classes=cfg.num_classes,
        call=_dit_call,
        checkpoint=info.path,
        step=info.step,
        info=info.to_dict(),
        sample=_sampler(model, info.family),
        editing=dit_editing(model),
        blocks=tuple(f"blocks.{k}" for k in range(cfg.depth)),
    )
