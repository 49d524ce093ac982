"""Which diffusers classes can be routed per sublayer, and where their image stream is read.

The paper's DAR routes each sublayer's input, gain-free. That starts exactly where a residual model is
only if every reader of the routed stream ignores its scale: a LayerNorm (or RMSNorm) with its eps
divided by n^2 (``router.py``). So a class qualifies when each of its blocks reads the image stream
through exactly two norms, one before its attention and one before its MLP, and otherwise only adds
to it (the block's own residual adds, which the router turns into the sources v_{2k-1}, v_{2k}), and
the model's output layers read the last block's image output through one norm. An entry names those
three norms (paths relative to a block, and to the model for the final one); the start-gap test
(tests/test_routed.py) checks the claim for every entry.

Classes that cannot be routed per sublayer say why, in words that name the reader that breaks it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sublayers:
    attention: str  # the norm before block k's attention (reads h_{2k-1}), relative to the block
    mlp: str  # the norm before its MLP (reads h_{2k}), relative to the block
    final: str  # the model's norm that reads the final aggregate, relative to the model


SUBLAYERS: dict[str, Sublayers] = {
    # BasicTransformerBlock, ada_norm_zero, no cross-attention: AdaLayerNormZero's LayerNorm, norm3
    "DiTTransformer2DModel": Sublayers(attention="norm1.norm", mlp="norm3", final="norm_out"),
    # the joint MM-DiT of the paper's large experiment: separate image and text streams; the text's
    # norms (txt_norm1, txt_norm2) are not routed
    "QwenImageTransformer2DModel": Sublayers(attention="img_norm1", mlp="img_norm2", final="norm_out.norm"),
}

WHY_NOT: dict[str, str] = {
    "PixArtTransformer2DModel": "its cross-attention (attn2) reads the image stream with no norm before it, so a "
                                "gain-free mixture's 1/n scale would reach it and the start would not be exact",
    "SanaTransformer2DModel": "its cross-attention (attn2) reads the image stream with no norm before it, so a "
                              "gain-free mixture's 1/n scale would reach it and the start would not be exact",
    "FluxTransformer2DModel": "its single-stream blocks run attention and MLP in parallel from one norm: one "
                              "sublayer per block, not an attention and an MLP",
    "SD3Transformer2DModel": "SD3.5's blocks may add a second attention (use_dual_attention) from the same norm: "
                             "three sublayers, not two",
}


def sublayer_refusal(class_name: str) -> str | None:
    """None when ``class_name`` can be routed per sublayer, else the one-line reason."""
    if class_name in SUBLAYERS:
        return None
    why = WHY_NOT.get(class_name) or ("the sublayer table (dardiag/adapters/routed/sublayers.py) names no "
                                      "attention and MLP norms for it")
    can = ", ".join(sorted(SUBLAYERS))
    return f"--level sublayer: {class_name} cannot be routed per sublayer: {why}; use --level block (any class), " \
           f"or a class of the sublayer table ({can})"
