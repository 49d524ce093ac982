"""Named sites: identity modules a model places on the tensors worth measuring.

A model calls ``self.sites["z_3"](x)`` on its hidden state; nothing happens unless a recorder has hooked
that module (inside a context manager, see ``dardiag.hooks.recorder``). This is TransformerLens'
hook-point idea: the model names what can be measured, the recorder never needs to know how the model
computes it (residual or DAR routing look the same from outside).

Site names, for a model of depth D (sublayer l = 2k-1 is block k's attention, l = 2k its MLP):
    z_0 .. z_D       the state entering block k+1 (z_D enters the final layer; z_0 = token embedding)
    h_1 .. h_2D      the input of sublayer l (its branch only: a gradient here excludes the identity path)
    v_1 .. v_2D      the gated output of sublayer l
    alpha_l          DAR only: routing weights [S, N, T] of the aggregator feeding sublayer l
                     (l = 2D + 1 is the final aggregator feeding the output head)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn


class Site(nn.Module):
    """Identity; exists so that forward hooks can see (and tensor hooks can differentiate) a state.

    It returns a view, not ``x`` itself: the view is a new autograd node, so a gradient hook on it
    sees only the gradient through this site's consumers. (Returning ``x`` would make the ``h_l``
    site of a residual model report the whole stream's gradient, identity path included.)
    """

    def forward(self, x):
        return x.view_as(x)


@dataclass(frozen=True)
class SiteLayout:
    """What a model exposes to the recorder: module paths of its sites and its routing sources."""

    depth: int
    states: tuple[str, ...]  # module paths of z_0 .. z_D
    inputs: tuple[str, ...] = ()  # h_1 .. h_2D ('' tuple when the model has no sublayer sites)
    outputs: tuple[str, ...] = ()  # v_1 .. v_2D
    # aggregator index l (1..2D+1) -> (module path of alpha_l, source indices i of v_i, v_0 = embedding)
    routes: dict[int, tuple[str, tuple[int, ...]]] = field(default_factory=dict)


def site_names(depth: int) -> list[str]:
    """The z/h/v site names of a depth-D model, in forward order of their first use."""
    names = [f"z_{k}" for k in range(depth + 1)]
    names += [f"h_{l}" for l in range(1, 2 * depth + 1)]
    names += [f"v_{l}" for l in range(1, 2 * depth + 1)]
    return names
