"""Subjects for models that are not dardiag's own DiT.

* ``dit_subject`` (``dardiag.adapters.dit``): dardiag's own DiT, for official and dardiag checkpoints.
* ``generic_subject``: any ``nn.Module`` given its block list(s), a call function and a family;
  ``Conditioning`` makes its ``make_cond`` when it needs text embeddings or the like.
* ``dardiag.adapters.diffusers.diffusers_subject``: diffusers DiT / PixArt / SD3 / Flux directories
  (imports diffusers; ``dardiag.engine.subjects.load_subject`` dispatches directories holding config.json to it).
* ``dardiag.adapters.convert.dit_to_diffusers``: our DiT as a diffusers ``DiTTransformer2DModel``
  (and ``compare_dit_port``: how far the two implementations' numbers are apart).
"""

from dardiag.adapters.conditioning import Conditioning
from dardiag.adapters.generic import generic_subject

__all__ = ["Conditioning", "generic_subject"]
