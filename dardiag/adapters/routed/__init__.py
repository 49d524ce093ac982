"""DAR routing grafted onto diffusers transformers: ``dardiag to-dar DIR`` and every reader of its output.

``spec``: what a routed model is (level, query, depth, width), stored as JSON beside the weights;
``router``: the aggregators and their mathematics (block level with a gain, sublayer level gain-free);
``graft``: puts a router into a loaded model in place (no weight copied, no key renamed);
``sublayers``: the classes that can be routed per sublayer, and why the others cannot;
``start``: what a conversion measures on the source (its first call, a fixed batch);
``folder``: reading and writing the routing files of a folder (the conversion is ``dardiag.convert.folder``).
"""

from dardiag.adapters.routed.graft import (
    enable_checkpointing, graft, image_tokens, is_routed, routed_call, routed_site_spec, router_of, token_counter,
)
from dardiag.adapters.routed.router import DepthRouter
from dardiag.adapters.routed.spec import LEVELS, QUERIES, RoutingSpec

__all__ = ["RoutingSpec", "DepthRouter", "graft", "is_routed", "router_of", "image_tokens", "routed_call",
           "routed_site_spec", "enable_checkpointing", "token_counter", "LEVELS", "QUERIES"]
