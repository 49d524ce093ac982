"""How far a converted model starts from its source: one fixed batch through both.

The gap is ``max |f_dar - f_src| / max |f_src|`` over every output element of the batch (relative to
the output's scale: an element-wise ratio would divide by outputs near 0), plus both models' simple
loss on the same (x0, noise, t). Pure: no files, no global RNG.

Legend: N batch, C latent channels, H/W latent side.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from dardiag.families import Family
from dardiag.models.config import DiTConfig


@dataclass(frozen=True)
class StartGap:
    output: float  # max |f_dar - f_src| / max |f_src|
    loss_source: float
    loss_dar: float
    n: int
    dtype: str

    @property
    def loss(self) -> float:
        """|loss_dar - loss_src| / loss_src."""
        return abs(self.loss_dar - self.loss_source) / self.loss_source if self.loss_source else 0.0

    def line(self) -> str:
        return (f"start gap: max|DAR - residual| / max|residual| = {self.output:.2e} on {self.n} inputs ({self.dtype}); "
                f"loss {self.loss_dar:.6g} vs {self.loss_source:.6g} (relative {self.loss:.1e})")

    def to_dict(self) -> dict:
        return {**asdict(self), "loss_relative": self.loss}


def fixed_batch(cfg: DiTConfig, family: Family, *, n: int = 4, seed: int = 0, x0: torch.Tensor | None = None,
                y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """``n`` inputs at noise levels spread over [0, 1] (both ends included), seeded: x0 (standard
    normal latents unless given), labels (random unless given), noise, native t."""
    g = torch.Generator().manual_seed(seed)
    shape = (n, cfg.in_channels, cfg.input_size, cfg.input_size)
    x0 = torch.randn(shape, generator=g) if x0 is None else x0[:n].float()  # (N, C, H, W)
    y = torch.randint(0, cfg.num_classes, (n,), generator=g) if y is None else y[:n].long()  # (N,)
    noise = torch.randn(shape, generator=g)  # (N, C, H, W)
    levels = torch.linspace(0.0, 1.0, n, dtype=torch.float64) if n > 1 else torch.full((1,), 0.5, dtype=torch.float64)
    t = family.to_native(levels)  # (N,)
    t = t.long() if family.integer_time else t.float()
    return {"x0": x0, "y": y, "noise": noise, "t": t}


@torch.no_grad()
def start_gap(source, dar, family: Family, batch: dict) -> StartGap:
    """Both models in eval mode (no label dropout) on ``batch`` (``fixed_batch``), on their device."""
    p = next(source.parameters())
    x0, noise = batch["x0"].to(p.device, p.dtype), batch["noise"].to(p.device, p.dtype)
    t, y = batch["t"].to(p.device), batch["y"].to(p.device)
    x_t = family.corrupt(x0, noise, t)  # (N, C, H, W)
    modes = source.training, dar.training
    source.eval(), dar.eval()
    try:
        a = source(x_t, t, y)  # (N, C_out, H, W)
        b = dar(x_t, t, y)
    finally:
        source.train(modes[0]), dar.train(modes[1])
    scale = a.abs().max().item()
    diff = (b.float() - a.float()).abs().max().item()
    return StartGap(output=diff / scale if scale > 0 else diff, loss_source=family.loss(a, x0, noise, t).item(),
                    loss_dar=family.loss(b, x0, noise, t).item(), n=x0.shape[0], dtype=str(p.dtype).replace("torch.", ""))
