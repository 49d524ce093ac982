"""More video transformers: latents (N, C, F, H, W); variants with extra conditioning streams
(editing, animation, control, world models) are driven with that conditioning neutral or synthetic,
as each entry says. The call of each follows its diffusers pipeline.
"""

from __future__ import annotations

ENTRIES = ()
