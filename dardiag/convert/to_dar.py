"""A residual DiT as a DAR DiT that computes the same function at the start.

Why it is exact (dense DAR, chunk S = 1). In a pre-norm DiT the residual stream x_l = v_0 + ... +
v_{l-1} is read only by LayerNorms: each sublayer's input norm and the final layer's norm. DAR with
every routing logit 0 mixes its n = l sources uniformly, h_l = x_l / n. LayerNorm ignores a positive
scale up to its eps, and exactly once the eps is scaled too:

    LN(x / n; eps / n^2) = (x - mean x) / n / sqrt(var(x) / n^2 + eps / n^2) = LN(x; eps),

so the converted model gives each reader eps / n^2 (``DiTConfig.reader_eps_per_source``). The logits
are 0 when the queries are: static w_l = 0; dynamic W_q = 0; static_t w_l + e(t) with a zero
e(t) -- but a converted model's t_embedder also conditions every block, so it cannot be zeroed as in
the paper; e(t) goes through a zero-initialised linear of its own instead (``own_t_query``). What is
left is float rounding: 1/n rounds once for all sources (a common factor, which LayerNorm removes)
and each product alpha_i v_i rounds in its last bit; tests/test_convert.py pins the gap below 1e-5.

Chunked DAR (S > 1) starts elsewhere. Sublayer l in chunk n mixes the summaries c_m = v_{mS} of the
finished chunks and the raw outputs of chunk n before l; uniform weights then read, after the scaled
LayerNorm, the *sum of those sources only*: a residual network in which a finished chunk passes on its
last sublayer's output and forgets the others'. That is a different function; ``start_gap`` measures
how different (output and loss), and ``dardiag to-dar`` defaults to the exact dense start.
"""

from __future__ import annotations

import torch

from dardiag.errors import DardiagError
from dardiag.models.config import QUERIES, DiTConfig
from dardiag.models.dit import DiT


def dar_config(cfg: DiTConfig, *, query: str = "static_t", chunk_size: int = 1) -> DiTConfig:
    """The DAR config of a converted residual model (every other field kept)."""
    if cfg.routing != "residual":
        raise DardiagError(f"the model is already a DAR model ({cfg.routing_name}); to-dar converts residual ones")
    if query not in QUERIES:
        raise DardiagError(f"--query must be one of {', '.join(QUERIES)}, got {query!r}")
    try:
        return cfg.replace(routing="dar", query=query, chunk_size=chunk_size, own_t_query=query == "static_t",
                           reader_eps_per_source=True)
    except ValueError as e:  # the chunk size does not divide 2 x depth
        raise DardiagError(str(e)) from None


def to_dar(model: DiT, *, query: str = "static_t", chunk_size: int = 1) -> DiT:
    """A DAR DiT sharing ``model``'s tensors (no copy), with fresh routing at the uniform start.

    The routing parameters (queries 0, key norm weights 1) are new, on the model's device and dtype;
    everything else is ``model``'s own tensors, so changing one model's weights changes the other's:
    ``copy.deepcopy`` the result to train it beside the source."""
    cfg = dar_config(model.config, query=query, chunk_size=chunk_size)
    ref = model.pos_embed
    with torch.device("meta"):  # no random init of weights that are about to be replaced
        dar = DiT(cfg)
    dar.routing.to_empty(device=ref.device)
    dar.routing.to(ref.dtype)
    dar.routing.reset_parameters()
    state = {**model.state_dict(), **{f"routing.{k}": v for k, v in dar.routing.state_dict().items()}}
    dar.load_state_dict(state, strict=True, assign=True)
    return dar.train(model.training)
