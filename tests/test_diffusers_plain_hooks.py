"""act_rms and grad_rms of the image stream, profiled through the class table, equal a computation with
plain hooks written here from the definitions (diagnostics.md §3), for a single-stream (Sana), a
double-stream (Flux: double then single blocks) and a video (Wan) class, and for SANA-WM and its refiner
(first latent frame a clean anchor, out of the loss; SANA-WM's blocks carry the anchor's tokens first,
Helios' its history's): 1e-6 relative."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest
import torch

pytest.importorskip("diffusers")

from dardiag.api import profile  # noqa: E402
from dardiag.adapters.diffusers import ImagePart, diffusers_subject  # noqa: E402
from dardiag.engine.config import Analyses  # noqa: E402
from diffusers_tiny import TEXT_TOKENS, TINY, build, save  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass(frozen=True)
class Plain:
    lists: tuple[str, ...]  # block lists in call order
    index: int | None = None  # the image stream in a block's tuple output (None: a tensor)
    tail: Callable | None = None  # (C, F, H, W) -> T: the image tokens are the last T of each block's sequence
    anchor: bool = False  # the first latent frame is clean and out of the loss


PLAIN = {
    "SanaTransformer2DModel": Plain(("transformer_blocks",)),
    "FluxTransformer2DModel": Plain(("transformer_blocks", "single_transformer_blocks"), index=1),
    "WanTransformer3DModel": Plain(("blocks",)),
    # the history tokens precede the chunk's F frames (2x2 patches)
    "HeliosTransformer3DModel": Plain(("blocks",), tail=lambda C, F, H, W: F * (H // 2) * (W // 2)),
    # [anchor frame; noisy frames] tokens, patch 1
    "SanaWMTransformer3DModel": Plain(("blocks",), tail=lambda C, F, H, W: (F - 1) * H * W, anchor=True),
    # the sink lives in the K/V cache: the blocks see the chunk's tokens only
    "SanaWMLTX2RefinerTransformer3DModel": Plain(("transformer_blocks",), anchor=True),
}
N = 4


def rms_stat(z: torch.Tensor) -> float:
    """Mean over (image, token) of sqrt(mean over channels of z^2); z: (N, T, D)."""
    return z.double().pow(2).mean(-1).sqrt().mean().item()


def plain_hooks(s, x0, noise, cond, p: Plain):
    """z_0..z_D and dL/dz_k from forward hooks written here (on the diffusers blocks themselves, inside
    dardiag's wrappers), L = mean over the predicted frames of (prediction - (noise - x0))^2."""
    model, states = s.model, []
    blocks = [b.block if isinstance(b, ImagePart) else b for name in p.lists for b in model.get_submodule(name)]

    def keep(z):
        z.retain_grad()  # the whole sequence: a slice of it is not on the graph
        states.append(z)

    handles = [blocks[0].register_forward_pre_hook(
        lambda m, args, kwargs: keep(kwargs.get("hidden_states", args[0] if args else None)), with_kwargs=True)]
    for b in blocks:
        handles.append(b.register_forward_hook(lambda m, a, out: keep(out if p.index is None else out[p.index])))
    t = torch.full((N,), 500.0)  # noise level 0.5, flow1000: t = sigma * 1000
    x_t = 0.5 * x0 + 0.5 * noise
    first = 1 if p.anchor else 0
    if p.anchor:
        x_t[:, :, 0] = x0[:, :, 0]  # the anchor frame, clean
    try:
        out = s.call(model, x_t.requires_grad_(True), t, torch.zeros(N, dtype=torch.long), cond)
        pred = out[:, : x0.shape[1], first:] if x0.dim() == 5 else out[:, : x0.shape[1]]
        target = noise - x0
        loss = (pred.float() - (target[:, :, first:] if x0.dim() == 5 else target)).pow(2).mean()
        loss.backward()
    finally:
        for h in handles:
            h.remove()
    T = p.tail(*s.input_shape) if p.tail else None
    image = (lambda z: z[:, -T:]) if T else (lambda z: z)  # (N, T, D)
    return [rms_stat(image(z)) for z in states], [rms_stat(image(z.grad)) for z in states]


@pytest.mark.parametrize("cls", list(PLAIN))
def test_act_and_grad_rms_equal_plain_hooks(tmp_path, cls):
    s = diffusers_subject(save(build(cls), tmp_path / cls), text_tokens=TEXT_TOKENS, **TINY[cls].options)
    g = torch.Generator().manual_seed(3)
    x0, noise = torch.randn(N, *s.input_shape, generator=g), torch.randn(N, *s.input_shape, generator=g)
    cond = {k: torch.randn(N, *shape, generator=g) for k, shape in s.make_cond.shapes.items()}
    df = profile(s, inputs={"x0": x0, "noise": noise, "y": torch.zeros(N, dtype=torch.long), **cond},
                 noise_levels=[0.5], batch_size=N, analyses=Analyses(cka=False, probe=False, outliers=False))
    act, grad = plain_hooks(s, x0, noise, cond, PLAIN[cls])
    assert len(act) == s.spec.depth + 1
    for metric, want in (("act_rms", act), ("grad_rms", grad)):
        got = df[df.metric == metric].sort_values("block").value.to_numpy()
        torch.testing.assert_close(torch.tensor(got), torch.tensor(want, dtype=torch.float64), rtol=1e-6, atol=0)
