"""act_rms, grad_rms and cos_prev of the image stream, profiled through the class table, equal a computation with
plain hooks written here from the definitions (diagnostics.md §3), for a single-stream (Sana), a
double-stream (Flux: double then single blocks), a video (Wan), a [text; image] sequence (OmniGen), a
[history; chunk] video sequence (Helios), a sequence-first [image; text] sequence (Ernie-Image), an
alternating spatial/temporal video class (Latte), and SANA-WM and its refiner (the first latent frame a
clean anchor, out of the loss; SANA-WM's blocks carry the anchor's tokens first), and Wan-Animate-2 (its
driving video's pass fills a K/V cache before the profiled call): 1e-6 relative.

The hooks keep each block's input or output tensor as the model uses it and read the image tokens
from it (and from its gradient) with the reshapes below, not with dardiag's stream code; the image
token counts of the tail readers are written here too. cos_prev, unlike the RMS statistics, holds only
if consecutive states list the same tokens in the same order (Latte: frame-major after spatial and
temporal blocks alike).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

from dardiag.api import profile  # noqa: E402
from dardiag.adapters.diffusers import ImagePart, diffusers_subject  # noqa: E402
from dardiag.engine.config import Analyses  # noqa: E402
from diffusers_tiny import TEXT_TOKENS, TINY, build, save  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


# the image tokens (N, T, D) of a block's hidden state z, for T image tokens, F frames, latent shape (C, [F,] H, W)
def whole(z, T, F, shape):
    return z  # (N, T, D)


def seq_head(z, T, F, shape):
    return z[:T].transpose(0, 1)  # (S, N, D) holding [image; text] -> (N, T, D)


def tail(z, T, F, shape):
    return z[:, -T:]  # (N, L + T, D) holding [text; image] -> (N, T, D)


def last(count):
    """A reader of the last count(C, F, H, W) tokens of (N, S, D), the count written here."""
    def read(z, T, F, shape):
        return z[:, -count(*shape):]
    return read


def spatial(z, T, F, shape):
    return z.reshape(-1, F * z.shape[1], z.shape[2])  # (N F, H W, D) -> (N, F H W, D), frame-major


def temporal(z, T, F, shape):
    N = z.shape[0] * F // T
    z = z.reshape(N, T // F, F, z.shape[2])  # (N, H W, F, D)
    return z.permute(0, 2, 1, 3).reshape(N, T, z.shape[3])  # (N, F H W, D), frame-major


# class -> (block lists, each with how its image tokens are read), whether the lists alternate in call
# order (Latte zips them), index of the image stream in a block's tuple output or None
PLAIN = {
    "SanaTransformer2DModel": ((("transformer_blocks", whole),), False, None),
    "FluxTransformer2DModel": ((("transformer_blocks", whole), ("single_transformer_blocks", whole)), False, 1),
    "WanTransformer3DModel": ((("blocks", whole),), False, None),
    # the history tokens precede the chunk's F frames (2x2 patches)
    "HeliosTransformer3DModel": ((("blocks", last(lambda C, F, H, W: F * (H // 2) * (W // 2))),), False, None),
    # [anchor frame; noisy frames] tokens, patch 1
    "SanaWMTransformer3DModel": ((("blocks", last(lambda C, F, H, W: (F - 1) * H * W)),), False, None),
    # the sink lives in the K/V cache: the blocks see the chunk's tokens only
    "SanaWMLTX2RefinerTransformer3DModel": ((("transformer_blocks", whole),), False, None),
    # the driving video lives in the K/V cache (its extract pass outside the hooks): the blocks see x's tokens only
    "WanAnimate2Transformer3DModel": ((("blocks", whole),), False, None),
    "OmniGenTransformer2DModel": ((("layers", tail),), False, None),  # z_0: the first block's input, not its output
    "ErnieImageTransformer2DModel": ((("layers", seq_head),), False, None),
    "LatteTransformer3DModel": ((("transformer_blocks", spatial), ("temporal_transformer_blocks", temporal)),
                                True, None),
}
N = 4


def rms_stat(z: torch.Tensor) -> float:
    """Mean over (image, token) of sqrt(mean over channels of z^2); z: (N, T, D)."""
    return z.double().pow(2).mean(-1).sqrt().mean().item()


def cos_stat(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over (image, token) of the cosine between the same token of a and b; (N, T, D) each."""
    a, b = a.double(), b.double()
    return ((a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))).mean().item()


def noised(x0, noise, family: str):
    """(x_t, t, target) at noise level 0.5 (diagnostics.md §1): flow1000 t = sigma x 1000, velocity
    noise - x0; flow-rev t = 1 - sigma, x0 - noise; DDPM ("dit") t = round(0.5 x 999) = 500, linear betas
    1e-4..0.02, epsilon."""
    if family == "dit":
        abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), dim=0)[500]
        x_t = abar.sqrt().float() * x0 + (1 - abar).sqrt().float() * noise
        return x_t, torch.full((N,), 500), noise
    if family == "flow1000-anchor":  # the first latent frame clean (the anchor), out of the loss
        x_t = 0.5 * x0 + 0.5 * noise
        x_t[:, :, 0] = x0[:, :, 0]
        return x_t, torch.full((N,), 500.0), noise - x0
    if family == "flow-rev":
        return 0.5 * x0 + 0.5 * noise, torch.full((N,), 0.5), x0 - noise
    assert family == "flow1000", family
    return 0.5 * x0 + 0.5 * noise, torch.full((N,), 500.0), noise - x0


def plain_hooks(s, x0, noise, cond, lists, alternate, index):
    """act_rms (k = 0..D), grad_rms (0..D) and cos_prev (1..D) of z_k and dL/dz_k from forward hooks
    written here, L = mean (prediction - target)^2 over the
    first C output channels (the rest: a learned sigma) and, for an anchor family, the frames after the first."""
    model, states = s.model, []  # states: (hidden state as the model uses it, its image-token reader)
    per_list = [[(b.block if isinstance(b, ImagePart) else b, read) for b in model.get_submodule(name)]
                for name, read in lists]  # the class's own blocks, not dardiag's wrappers
    blocks = [b for turn in zip(*per_list) for b in turn] if alternate else [b for bs in per_list for b in bs]
    F = x0.shape[2] if x0.dim() == 5 else 1
    T = s.info["image_tokens"]

    def keep(z, read):
        z.retain_grad()
        states.append((z, read))

    first, read0 = blocks[0]
    handles = [first.register_forward_pre_hook(
        lambda m, args, kwargs: keep(kwargs.get("hidden_states", args[0] if args else None), read0),
        with_kwargs=True)]
    for b, read in blocks:
        handles.append(b.register_forward_hook(
            lambda m, a, out, _read=read: keep(out if index is None else out[index], _read)))
    x_t, t, target = noised(x0, noise, s.family.name)
    x_t.requires_grad_(True)
    try:
        out = s.call(model, x_t, t, torch.zeros(N, dtype=torch.long), cond)
        first = 1 if s.family.name == "flow1000-anchor" else 0  # the anchor's prediction is not scored
        pred, target = out[:, : x0.shape[1]].float(), target
        if first:
            pred, target = pred[:, :, first:], target[:, :, first:]
        loss = (pred - target).pow(2).mean()
        loss.backward()
    finally:
        for h in handles:
            h.remove()
    shape = tuple(s.input_shape)
    z = [read(z, T, F, shape) for z, read in states]  # (N, T, D) each
    grads = [read(z.grad, T, F, shape) for z, read in states]
    return [rms_stat(a) for a in z], [rms_stat(g) for g in grads], [cos_stat(a, b) for a, b in zip(z, z[1:])]


@pytest.mark.parametrize("cls", list(PLAIN))
def test_act_grad_rms_and_cos_prev_equal_plain_hooks(tmp_path, cls):
    s = diffusers_subject(save(build(cls), tmp_path / cls), text_tokens=TEXT_TOKENS, **TINY[cls].options)
    g = torch.Generator().manual_seed(3)
    x0, noise = torch.randn(N, *s.input_shape, generator=g), torch.randn(N, *s.input_shape, generator=g)
    cond = {k: torch.randn(N, *shape, generator=g) for k, shape in s.make_cond.shapes.items()}
    df = profile(s, inputs={"x0": x0, "noise": noise, "y": torch.zeros(N, dtype=torch.long), **cond},
                 noise_levels=[0.5], batch_size=N, analyses=Analyses(cka=False, probe=False, outliers=False))
    act, grad, cos = plain_hooks(s, x0, noise, cond, *PLAIN[cls])
    assert len(act) == s.spec.depth + 1
    for metric, want in (("act_rms", act), ("grad_rms", grad), ("cos_prev", cos)):
        got = df[df.metric == metric].sort_values("block").value.to_numpy()
        torch.testing.assert_close(torch.tensor(got), torch.tensor(want, dtype=torch.float64), rtol=1e-6, atol=0)
