"""Video transformers: latents (N, C, F, H, W), tokens = frames x patches.

The call of each follows its diffusers pipeline; flow classes take sigma x 1000 (``flow1000``).
"""

from __future__ import annotations

from dardiag.adapters.classes.spec import ClassEntry, Stack, patch3d, text


def _latent(cfg, *, frames: int, side: tuple[int, int], channels: str = "in_channels"):
    """(C, F, H, W) of the pipeline's default video, or of a config's own ``sample_size``/``num_frames``."""
    own = cfg.get("sample_size")
    H, W = (own, own) if isinstance(own, int) else side
    return (cfg[channels], cfg.get("num_frames") or frames, H, W)


def _wan(m, x, t, y, cond):
    return m(x, timestep=t, encoder_hidden_states=cond["encoder_hidden_states"]).sample  # (N, C, F, H, W)


ENTRIES = (
    ClassEntry(
        "WanTransformer3DModel", (Stack("blocks"),), "flow1000", _wan,
        cond=text("encoder_hidden_states", ("text_dim",)), tokens=patch3d, video=True, text_tokens=512,
        latent=lambda cfg: _latent(cfg, frames=21, side=(60, 104))),  # 81 frames at 480x832
)
