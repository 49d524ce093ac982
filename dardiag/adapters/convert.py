"""Our DiT as a diffusers ``DiTTransformer2DModel``: the same weights in the diffusers port.

The key map is a table (below). diffusers keeps a copy of the timestep and class embedders inside
every block's ``AdaLayerNormZero`` (``transformer_blocks.{i}.norm1.emb``) and splits the fused qkv;
the final layer's conditioning comes from block 0's copy. The position table is not a weight in
diffusers (a non-persistent buffer its constructor computes).

Same weights, different numbers: the port is not the original DiT (checkpoints.md). Measured
differences, all in ``port_differences`` (and undone, for the tests, by ``match_original``):

1. timestep sinusoid: diffusers' ``Timesteps(downscale_freq_shift=1)`` uses frequencies
   exp(-ln(10000) i / (half - 1)), the original exp(-ln(10000) i / half) (half = 128);
2. the MLP's LayerNorm (``norm3``) has eps = ``norm_eps`` = 1e-5; the original's ``norm2`` 1e-6
   (``norm1`` inside AdaLayerNormZero and ``norm_out`` keep 1e-6);
3. the 2-D sin-cos position table is computed in float32 (torch) instead of float64 (numpy), a
   ~1e-7 difference.

How far apart the two implementations' numbers are (a sweep over both) is ``dardiag.port_check``.

Legend: D hidden size.
"""

from __future__ import annotations

import torch

from dardiag.errors import DardiagError

# ours -> diffusers, per block i (D x D Linear weights keep their layout)
BLOCK_KEYS = {
    "adaLN_modulation.1.weight": "norm1.linear.weight",
    "adaLN_modulation.1.bias": "norm1.linear.bias",
    "attn.proj.weight": "attn1.to_out.0.weight",
    "attn.proj.bias": "attn1.to_out.0.bias",
    "mlp.fc1.weight": "ff.net.0.proj.weight",
    "mlp.fc1.bias": "ff.net.0.proj.bias",
    "mlp.fc2.weight": "ff.net.2.weight",
    "mlp.fc2.bias": "ff.net.2.bias",
}
QKV = ("attn1.to_q", "attn1.to_k", "attn1.to_v")  # attn.qkv rows [q; k; v], each (D, D)
# ours -> diffusers, copied into every block's norm1.emb
EMBEDDER_KEYS = {
    "t_embedder.mlp.0.weight": "norm1.emb.timestep_embedder.linear_1.weight",
    "t_embedder.mlp.0.bias": "norm1.emb.timestep_embedder.linear_1.bias",
    "t_embedder.mlp.2.weight": "norm1.emb.timestep_embedder.linear_2.weight",
    "t_embedder.mlp.2.bias": "norm1.emb.timestep_embedder.linear_2.bias",
    "y_embedder.embedding_table.weight": "norm1.emb.class_embedder.embedding_table.weight",
}
TOP_KEYS = {
    "x_embedder.proj.weight": "pos_embed.proj.weight",
    "x_embedder.proj.bias": "pos_embed.proj.bias",
    "final_layer.adaLN_modulation.1.weight": "proj_out_1.weight",  # rows [shift; scale] in both
    "final_layer.adaLN_modulation.1.bias": "proj_out_1.bias",
    "final_layer.linear.weight": "proj_out_2.weight",
    "final_layer.linear.bias": "proj_out_2.bias",
}
DROPPED = ("pos_embed",)  # recomputed by the diffusers constructor


def diffusers_state_dict(sd: dict, depth: int) -> dict:
    """Map our DiT's state dict to DiTTransformer2DModel keys (every key used exactly once)."""
    out = {}
    used = set(DROPPED)
    for ours, theirs in TOP_KEYS.items():
        out[theirs] = sd[ours]
        used.add(ours)
    for i in range(depth):
        for ours, theirs in BLOCK_KEYS.items():
            out[f"transformer_blocks.{i}.{theirs}"] = sd[f"blocks.{i}.{ours}"]
            used.add(f"blocks.{i}.{ours}")
        for part in ("weight", "bias"):
            for name, chunk in zip(QKV, sd[f"blocks.{i}.attn.qkv.{part}"].chunk(3, dim=0)):
                out[f"transformer_blocks.{i}.{name}.{part}"] = chunk.clone()
            used.add(f"blocks.{i}.attn.qkv.{part}")
        for ours, theirs in EMBEDDER_KEYS.items():
            out[f"transformer_blocks.{i}.{theirs}"] = sd[ours].clone()
            used.add(ours)
    left = sorted(set(sd) - used)
    if left:
        raise DardiagError(f"no diffusers counterpart for {len(left)} weights, e.g. {', '.join(left[:4])}")
    return out


def dit_to_diffusers(model):
    """A ``diffusers.DiTTransformer2DModel`` holding our residual DiT's weights (eval mode)."""
    from diffusers import DiTTransformer2DModel

    cfg = model.config
    if cfg.routing != "residual":
        raise DardiagError(f"only the residual DiT has a diffusers port; this model routes {cfg.routing_name}")
    if cfg.qk_norm:
        raise DardiagError("the diffusers DiT has no q/k LayerNorm; a qk_norm model cannot be converted")
    if cfg.mlp_ratio != 4.0:
        raise DardiagError(f"the diffusers DiT's MLP is 4x wide; this model's mlp_ratio is {cfg.mlp_ratio:g}")
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    table = sd["y_embedder.embedding_table.weight"]  # (classes [+ 1 null], D)
    if table.shape[0] == cfg.num_classes:  # trained without label dropout: diffusers always has the null row
        sd["y_embedder.embedding_table.weight"] = torch.cat([table, torch.zeros_like(table[:1])])
    port = DiTTransformer2DModel(
        num_attention_heads=cfg.num_heads,
        attention_head_dim=cfg.hidden_size // cfg.num_heads,
        in_channels=cfg.in_channels,
        out_channels=cfg.out_channels,
        num_layers=cfg.depth,
        sample_size=cfg.input_size,
        patch_size=cfg.patch_size,
        num_embeds_ada_norm=cfg.num_classes,
    )
    port.load_state_dict(diffusers_state_dict(sd, cfg.depth), strict=True)
    return port.to(next(model.parameters()).device).eval()


def port_differences(port) -> list[str]:
    """What makes this diffusers DiT compute something other than the original DiT, in words."""
    diffs = []
    proj = port.transformer_blocks[0].norm1.emb.time_proj
    if proj.downscale_freq_shift != 0:
        half = proj.num_channels // 2
        diffs.append(f"timestep frequencies exp(-ln(1e4) i / {half - proj.downscale_freq_shift:g}) "
                     f"instead of / {half} (downscale_freq_shift={proj.downscale_freq_shift:g})")
    eps = {b.norm3.eps for b in port.transformer_blocks}
    if eps != {1e-6}:
        diffs.append(f"MLP LayerNorm (norm3) eps {', '.join(f'{e:g}' for e in sorted(eps))} instead of 1e-6")
    return diffs


def match_original(port, *, timestep: bool = True, eps: bool = True):
    """Undo the port's numerical differences in place (then it matches our DiT to rounding)."""
    for block in port.transformer_blocks:
        if timestep:
            block.norm1.emb.time_proj.downscale_freq_shift = 0
        if eps:
            block.norm3.eps = 1e-6
    return port
